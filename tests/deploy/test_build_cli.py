"""``modelport build`` writes a complete bundle, atomically; ``fetch_model.py`` checks sha256."""

from __future__ import annotations

import hashlib
import http.server
import json
import stat
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelport.cli import app
from modelport.errors import ConfigError
from modelport.package import open_package

Render = Callable[..., Path]


def test_bundle_holds_the_verified_model_package(bundle: Path, heart_package: Path) -> None:
    copied = open_package(bundle / "model")
    assert copied.manifest.files == open_package(heart_package).manifest.files


def test_bundle_ships_a_modelport_wheel_with_the_templates(bundle: Path) -> None:
    wheels = list((bundle / "wheels").glob("modelport-*.whl"))
    assert len(wheels) == 1
    assert f"./wheels/{wheels[0].name}" in (bundle / "Dockerfile").read_text()
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "modelport/deploy/templates/Dockerfile.j2" in names
    assert "modelport/cli/__init__.py" in names


def test_bundle_copies_the_gate_data(bundle: Path) -> None:
    assert (bundle / "data/heart.csv").is_file()


def test_bundle_is_readable_by_others(bundle: Path) -> None:
    for path in (bundle, bundle / "model"):
        assert path.stat().st_mode & stat.S_IROTH


def _build(package: Path, out: Path, *extra: str) -> object:
    return CliRunner().invoke(app, ["build", str(package), "--out", str(out), "--no-measure",
                                    *extra])


def test_build_refuses_a_non_empty_out_and_names_the_option(heart_package: Path,
                                                            tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = _build(heart_package, out)
    assert isinstance(result.exception, ConfigError)  # type: ignore[attr-defined]
    assert "--out" in str(result.exception)  # type: ignore[attr-defined]
    assert (out / "keep.txt").read_text() == "mine"


def test_force_replaces_the_bundle_whole(heart_package: Path, bundle: Path,
                                         tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    wheel = next((bundle / "wheels").glob("*.whl"))
    result = _build(heart_package, out, "--force", "--wheel", str(wheel))
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert not (out / "stale.txt").exists()
    assert (out / "Dockerfile").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy"]  # no staging left


def test_a_failed_build_leaves_nothing_behind(heart_package: Path, tmp_path: Path) -> None:
    result = _build(heart_package, tmp_path / "deploy", "--wheel", str(tmp_path / "nope.whl"))
    assert isinstance(result.exception, ConfigError)  # type: ignore[attr-defined]
    assert "--wheel" in str(result.exception)  # type: ignore[attr-defined]
    assert list(tmp_path.iterdir()) == []


def test_gate_threshold_needs_a_known_name(heart_package: Path, heart_dir: Path,
                                           tmp_path: Path) -> None:
    result = _build(heart_package, tmp_path / "d", "--validate-data",
                    str(heart_dir / "heart.csv"), "--validate-target", "condition",
                    "--gate", "min-acc=0.8")
    assert "--gate" in str(result.exception)  # type: ignore[attr-defined]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """No access log on the test output."""


@pytest.fixture()
def archive_server(heart_package: Path, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A tar.gz of the example package served on 127.0.0.1: (URL, sha256)."""
    site = tmp_path / "site"
    site.mkdir()
    archive = site / "heart.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(heart_package, arcname=".")
    handler = partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield (f"http://127.0.0.1:{server.server_address[1]}/heart.tar.gz",
           hashlib.sha256(archive.read_bytes()).hexdigest())
    server.shutdown()
    server.server_close()


def _fetch(script: Path, url: str, sha: str, dest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(script), url, sha, str(dest)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_fetch_model_unpacks_an_archive_whose_sha256_matches(
        render_to: Render, tmp_path: Path, archive_server: tuple[str, str]) -> None:
    script = render_to(tmp_path / "b", model_url=True) / "fetch_model.py"
    url, sha = archive_server
    proc = _fetch(script, url, sha, tmp_path / "models" / "heart")
    assert proc.returncode == 0, proc.stderr
    assert open_package(tmp_path / "models" / "heart").manifest.name == "heart"


def test_fetch_model_refuses_an_archive_whose_sha256_differs(
        render_to: Render, tmp_path: Path, archive_server: tuple[str, str]) -> None:
    script = render_to(tmp_path / "b", model_url=True) / "fetch_model.py"
    url, _ = archive_server
    proc = _fetch(script, url, "0" * 64, tmp_path / "models" / "heart")
    assert proc.returncode != 0
    assert "sha256" in proc.stderr
    assert not (tmp_path / "models" / "heart").exists()


def test_sizing_measures_peak_memory_after_loading(heart_package: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """In-process here; ``modelport build`` runs it as ``python -m`` in a fresh process."""
    from modelport.deploy import sizing

    assert sizing.main([str(heart_package)]) == 0
    profile = json.loads(capsys.readouterr().out)
    assert profile["loaded_bytes"] >= profile["baseline_bytes"] > 50 * 2**20
