"""``modelport build --gpu``: a CUDA base image, onnxruntime's GPU build, a server that
refuses to start without a GPU, and a Dockerfile hadolint passes."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelport.cli import app
from modelport.deploy import BuildOptions, render_bundle, resources_for
from modelport.deploy.options import CUDA_IMAGE
from modelport.deploy.requirements import requirements_txt
from modelport.errors import ConfigError
from modelport.package import open_package
from modelport.tools.optimize import optimize
from tests.deploy.conftest import SERVING, TEST_ASSETS, run_ok, write_files

Tool = Callable[[str], str]


@pytest.fixture(scope="module")
def onnx_heart(heart_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package converted to ONNX (parity proven): a model a GPU can serve."""
    out = Path(shutil.copytree(heart_package, tmp_path_factory.mktemp("gpu") / "heart"))
    assert optimize(out).parity.passed
    return out


def _render(pkg: Path, root: Path, **options: object) -> Path:
    bundle = render_bundle(open_package(pkg), BuildOptions(gpu=True, **options),  # type: ignore[arg-type]
                           resources_for(None), assets=TEST_ASSETS, serving=SERVING,
                           modelport_version="0.1.0")
    return write_files(root, bundle.files)


def test_gpu_dockerfile_is_hadolint_clean(tool: Tool, onnx_heart: Path, tmp_path: Path) -> None:
    root = _render(onnx_heart, tmp_path)
    run_ok([tool("hadolint"), "--failure-threshold", "info", str(root / "Dockerfile")])


def test_gpu_model_url_dockerfile_is_hadolint_clean(tool: Tool, onnx_heart: Path,
                                                    tmp_path: Path) -> None:
    root = _render(onnx_heart, tmp_path, model_url=True)
    run_ok([tool("hadolint"), "--failure-threshold", "info", str(root / "Dockerfile")])


def test_hadolint_still_checks_the_apt_lines(tool: Tool, onnx_heart: Path,
                                             tmp_path: Path) -> None:
    """The check is real: without ``--no-install-recommends`` hadolint reports DL3015."""
    text = (_render(onnx_heart, tmp_path / "ok") / "Dockerfile").read_text()
    (tmp_path / "Dockerfile").write_text(text.replace(" --no-install-recommends", ""))
    proc = subprocess.run([tool("hadolint"), "--failure-threshold", "info",
                           str(tmp_path / "Dockerfile")], capture_output=True, text=True,
                          check=False)
    assert proc.returncode != 0 and "DL3015" in proc.stdout


def test_gpu_image_is_cuda_based_and_insists_on_a_gpu(onnx_heart: Path, tmp_path: Path) -> None:
    root = _render(onnx_heart, tmp_path)
    dockerfile = (root / "Dockerfile").read_text()
    assert f"ARG BASE_IMAGE={CUDA_IMAGE}" in dockerfile
    assert "MODELPORT_DEVICE=cuda" in dockerfile and "--gpus all" in dockerfile
    assert "python3 -m venv /opt/venv" in dockerfile
    requirements = (root / "requirements.txt").read_text().splitlines()
    assert any(line.startswith("onnxruntime-gpu==") for line in requirements)
    assert not any(line.startswith("onnxruntime==") for line in requirements)
    assert "--gpus all" in (root / "README.md").read_text()


def test_cpu_image_is_unchanged_by_the_option(onnx_heart: Path) -> None:
    bundle = render_bundle(open_package(onnx_heart), BuildOptions(), resources_for(None),
                           assets=TEST_ASSETS, serving=SERVING)
    assert "MODELPORT_DEVICE" not in bundle.files["Dockerfile"]
    assert "ARG BASE_IMAGE=python:3.11-slim" in bundle.files["Dockerfile"]


def test_gpu_is_refused_for_a_model_that_runs_on_the_cpu_only(heart_package: Path,
                                                              tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--gpu: a sklearn model runs on the CPU only"):
        _render(heart_package, tmp_path)


def test_build_cli_takes_gpu(onnx_heart: Path, tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    result = CliRunner().invoke(app, ["build", str(onnx_heart), "--out", str(out), "--gpu",
                                      "--no-measure"])
    assert result.exit_code == 0, result.output
    assert "MODELPORT_DEVICE=cuda" in (out / "Dockerfile").read_text()


def test_local_version_labels_are_not_pinned() -> None:
    """torch records ``2.13.0+cpu``: a build label no index serves under that name."""
    text = requirements_txt({"torch": "2.13.0+cpu", "numpy": "2.1.0"}, {})
    assert "torch==2.13.0\n" in text and "+cpu" not in text


def test_readme_shows_stdout_logs_and_the_file_option(onnx_heart: Path) -> None:
    bundle = render_bundle(open_package(onnx_heart), BuildOptions(), resources_for(None),
                           assets=TEST_ASSETS, serving=SERVING)
    readme = bundle.files["README.md"]
    assert "**stdout/stderr** by default" in readme
    assert "MODELPORT_LOG_FILE=" in readme and "MODELPORT_LOG_MAX_BYTES=" in readme
    assert "SIGHUP" in readme
