"""Container tier: the generated Dockerfile builds with podman and the image serves for real.

Run alone with ``pytest tests/deploy/test_container.py -m container -s`` (``-s`` prints the
timings). Skipped, saying why, when podman is absent; ``scripts/install-verify-tools``
installs it and ``scripts/build-base-image`` builds the stand-in base image when
``python:3.11-slim`` cannot be pulled. Uses ``--network host`` only: the default bridge leaves
interfaces and firewall rules behind (docs/architecture.md, "Verifying generated files").
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelport.package import load_model

from .conftest import INSTALL_HINT, find_tool

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[2]
TIMINGS: dict[str, float] = {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def podman_env() -> dict[str, str]:
    """Environment for podman (runc, cgroupfs, storage under MP_CTR) with the base image."""
    if find_tool("podman") is None:
        pytest.skip(f"podman is not installed: {INSTALL_HINT}")
    ctr = os.environ.get("MP_CTR") or os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                   "modelport-containers")
    env = dict(os.environ, MP_CTR=ctr)
    env.setdefault("CONTAINERS_CONF", os.path.join(ctr, "containers.conf"))
    env.setdefault("CONTAINERS_STORAGE_CONF", os.path.join(ctr, "storage.conf"))
    started = time.perf_counter()
    proc = subprocess.run([str(ROOT / "scripts/build-base-image")], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    TIMINGS["base image (cached or built)"] = time.perf_counter() - started
    return env


def _podman(env: dict[str, str], *args: str, timeout: float = 60,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["podman", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if check:
        assert proc.returncode == 0, f"podman {args[0]}: {proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def image(podman_env: dict[str, str], bundle: Path) -> Iterator[str]:
    """The bundle's Dockerfile built as the Docker format (keeps HEALTHCHECK)."""
    tag = "localhost/modelport-test/heart:1.0.0"
    started = time.perf_counter()
    _podman(podman_env, "build", "--format", "docker", "--isolation", "chroot", "--pull=never",
            "--network", "host", "-t", tag, str(bundle), timeout=900)
    TIMINGS["podman build"] = time.perf_counter() - started
    yield tag


@pytest.fixture(scope="module")
def container(podman_env: dict[str, str], image: str) -> Iterator[tuple[str, str]]:
    """The image running with its own CMD on a free port: (name, base URL) once /ready."""
    name, port = f"mp-test-{uuid.uuid4().hex[:8]}", _free_port()
    started = time.perf_counter()
    _podman(podman_env, "run", "-d", "--name", name, "--network", "host",
            "-e", f"MODELPORT_PORT={port}", "-e", "MODELPORT_HOST=127.0.0.1", image)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, podman_env, name)
        TIMINGS["run -> /ready"] = time.perf_counter() - started
        yield name, url
    finally:
        _podman(podman_env, "rm", "-f", "-t", "0", name, check=False)
        print("\ncontainer tier timings (s): " +
              ", ".join(f"{k} {v:.1f}" for k, v in TIMINGS.items()))


def _wait_ready(url: str, env: dict[str, str], name: str) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    logs = _podman(env, "logs", name, check=False)
    pytest.fail(f"/ready never answered 200 in 90 s:\n{logs.stdout}\n{logs.stderr}")


def test_server_in_the_container_runs_as_uid_10001(podman_env: dict[str, str],
                                                   container: tuple[str, str]) -> None:
    name, _ = container
    out = _podman(podman_env, "exec", name, "python", "-c",
                  "import os; print(os.getuid(), os.getgid())").stdout
    assert out.split() == ["10001", "10001"]
    top = _podman(podman_env, "top", name, "user", "args").stdout
    assert "modelport serve" in top


def test_ready_answers(container: tuple[str, str]) -> None:
    _, url = container
    response = httpx.get(f"{url}/ready", timeout=5)
    assert response.status_code == 200


def test_prediction_equals_the_in_process_one(container: tuple[str, str], bundle: Path,
                                              heart_package: Path) -> None:
    _, url = container
    body = json.loads((bundle / "smoke-request.json").read_text())
    got = httpx.post(f"{url}/predict", json=body, timeout=10).json()
    loaded = load_model(heart_package)
    expected = loaded.runtime.predict(loaded.signature.from_records([body["features"]]))
    assert got["predictions"] == np.asarray(expected.predictions).tolist()
    assert expected.probabilities is not None
    np.testing.assert_allclose(got["probabilities"], expected.probabilities, rtol=1e-9)


def test_healthcheck_reports_healthy(podman_env: dict[str, str],
                                     container: tuple[str, str]) -> None:
    name, _ = container
    proc = _podman(podman_env, "healthcheck", "run", name, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    state = _podman(podman_env, "inspect", "--format", "{{.State.Health.Status}}", name).stdout
    assert state.strip() == "healthy"


def test_stop_returns_within_five_seconds(podman_env: dict[str, str],
                                          container: tuple[str, str]) -> None:
    """SIGTERM reaches the server as PID 1 and it drains and exits by itself (last test: it
    stops the container)."""
    name, _ = container
    started = time.perf_counter()
    _podman(podman_env, "stop", "-t", "5", name, timeout=30)
    TIMINGS["podman stop -t 5"] = elapsed = time.perf_counter() - started
    assert elapsed < 5
    code = _podman(podman_env, "inspect", "--format", "{{.State.ExitCode}}", name).stdout
    assert code.strip() == "0"
