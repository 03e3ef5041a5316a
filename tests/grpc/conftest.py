"""A real ``modelport serve`` with gRPC on 127.0.0.1, and helpers to call it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from tests.server.conftest import heart_loaded, records  # noqa: F401  (shared fixtures)

ROOT = Path(__file__).resolve().parents[2]
KEY, ADMIN_KEY = "grpc-test-key", "grpc-admin-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    """A running server: its process, REST URL and gRPC address."""

    proc: subprocess.Popen[bytes]
    url: str
    target: str
    log: Path
    """The server's stderr (a file: a pipe nobody reads would fill and stall the server)."""
    workdir: Path | None = None

    def stop(self) -> int:
        """SIGTERM, wait (bounded); the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        return code


def serving(*args: str, env: dict[str, str] | None = None, ready: bool = True) -> Served:
    """``modelport serve ARGS`` on free ports; returns once gRPC health says SERVING."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port, grpc_port = free_port(), free_port()
    log = Path(tempfile.mkdtemp(prefix="modelport-grpc-test-")) / "server.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelport", "serve", *args, "--port", str(port),
             "--grpc-port", str(grpc_port)], stdout=subprocess.DEVNULL, stderr=sink,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    served = Served(proc, f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}", log)
    deadline = time.monotonic() + 60
    with grpc.insecure_channel(served.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(log.read_text(errors="replace")[-4000:])
            try:
                answer = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING or not ready:
                    return served
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    served.stop()
    raise RuntimeError("the gRPC server did not become SERVING in 60 s")


def rest_infer(served: Served, body: Any, model: str = "heart") -> httpx.Response:
    """POST a V2 JSON body to the same server's REST route."""
    return httpx.post(f"{served.url}/v2/models/{model}/infer", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {KEY}"})


@pytest.fixture(scope="module")
def server(heart_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The example package behind prediction and admin keys, with a prediction log and a
    gRPC message limit of 64 KiB."""
    tmp = tmp_path_factory.mktemp("grpc-server")
    served = serving(str(heart_package), env={
        "MODELPORT_API_KEYS": KEY, "MODELPORT_ADMIN_KEYS": ADMIN_KEY,
        "MODELPORT_LOG_DB": f"sqlite:///{tmp / 'predictions.db'}",
        "MODELPORT_LOG_SPOOL_DIR": str(tmp / "spool"),
        "MODELPORT_GRPC_MAX_MESSAGE_BYTES": str(64 * 1024)})
    served.workdir = tmp
    yield served
    assert served.stop() == 0
