"""Bundle smoke test without containers: the bundle's pinned requirements and wheel install into
a fresh venv, and the Dockerfile's own CMD starts a server there that answers /ready."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _cmd_and_env(dockerfile: str) -> tuple[list[str], dict[str, str]]:
    """The final stage's exec-form CMD and its ``ENV`` settings."""
    final = dockerfile.rsplit("\nFROM ", maxsplit=1)[-1]
    cmd = json.loads(re.findall(r"^CMD (\[.*\])$", final, re.M)[-1])
    env_block = re.search(r"^ENV (.*?)(?=^\S)", final, re.M | re.S)
    assert env_block is not None
    pairs = re.findall(r"(\w+)=(\S+)", env_block.group(1))
    return cmd, {k: v for k, v in pairs if k != "PATH"}


@pytest.fixture(scope="module")
def venv(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with only what the bundle pins (``requirements.txt`` + ``wheels/``)."""
    root = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=120)
    wheels = [str(p) for p in (bundle / "wheels").glob("*.whl")]
    proc = subprocess.run([str(root / "bin/python"), "-m", "pip", "install", "-q",
                           "--disable-pip-version-check", "-r",
                           str(bundle / "requirements.txt"), *wheels],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def server(venv: Path, bundle: Path) -> Iterator[str]:
    """The Dockerfile's CMD run from the venv, the model path mapped to the bundle's copy."""
    cmd, image_env = _cmd_and_env((bundle / "Dockerfile").read_text())
    model_path = image_env["MODELPORT_MODEL"]
    argv = [str(venv / "bin" / cmd[0])] + [str(bundle / "model") if a == model_path else a
                                           for a in cmd[1:]]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", **image_env, "MODELPORT_HOST": "127.0.0.1",
           "MODELPORT_PORT": str(port), "MODELPORT_MODEL": str(bundle / "model")}
    log = venv.parent / "server.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(argv, env=env, cwd=venv, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, log)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.3)
    pytest.fail(f"the bundle's CMD did not become ready in 60 s: {log.read_text()[-3000:]}")


def test_fresh_venv_has_the_pinned_model_libraries(venv: Path, bundle: Path) -> None:
    pins = [ln for ln in (bundle / "requirements.txt").read_text().splitlines()
            if "==" in ln and not ln.startswith("#")]
    out = subprocess.run([str(venv / "bin/python"), "-m", "pip", "freeze"],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    frozen = {ln.lower() for ln in out.stdout.splitlines()}
    for pin in pins:
        assert re.sub(r"\[.*\]", "", pin).lower().replace("_", "-") in \
            {f.replace("_", "-") for f in frozen}


def test_bundle_cmd_answers_ready_and_predicts(server: str, bundle: Path) -> None:
    assert httpx.get(f"{server}/ready", timeout=5).status_code == 200
    body = json.loads((bundle / "smoke-request.json").read_text())
    response = httpx.post(f"{server}/predict", json=body, timeout=10)
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 1
