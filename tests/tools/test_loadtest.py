"""Load tests against real servers on 127.0.0.1: a small app with fast, slowed and serial
models, the real ``modelport serve``, and a cross-check against ``wrk``."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelport.tools.loadtest import LoadPlan, discover, run
from modelport.tools.loadtest_report import Slo

APP = '''
import asyncio
from fastapi import FastAPI, HTTPException

SIGNATURE = {"features": [
    {"name": "age", "dtype": "int", "example": 54},
    {"name": "thal", "dtype": "string", "categories": ["normal", "fixed"]}]}
DELAY = {"fast": 0.0, "slow": 0.25, "serial": 0.05}
app = FastAPI()
lock = asyncio.Lock()

@app.get("/models/{name}")
async def meta(name: str):
    if name not in DELAY:
        raise HTTPException(404)
    return {"name": name, "version": "1", "signature": SIGNATURE}

@app.post("/models/{name}/predict")
async def predict(name: str):
    if name == "serial":
        async with lock:
            await asyncio.sleep(DELAY[name])
    elif DELAY[name]:
        await asyncio.sleep(DELAY[name])
    return {"predictions": [0]}

@app.get("/v2/models/tensors")
async def v2_meta():
    return {"name": "tensors", "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}]}
'''


def _serve(argv: list[str], cwd: Path) -> Iterator[str]:
    """Run a server on a socket bound here (no port race); yield its URL; stop it by PID."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    proc = subprocess.Popen([*argv, "--fd", str(sock.fileno())], cwd=cwd,
                            pass_fds=[sock.fileno()], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    sock.close()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The small app under uvicorn, in its own process."""
    root = tmp_path_factory.mktemp("loadapp")
    (root / "loadapp.py").write_text(APP)
    yield from _serve([sys.executable, "-m", "uvicorn", "loadapp:app", "--log-level",
                       "warning", "--no-access-log"], root)


def _plan(url: str, model: str, **kw: float) -> LoadPlan:
    return LoadPlan(url, model, duration_s=kw.pop("duration_s", 1.5), warmup_s=0.5,
                    processes=2, **kw)  # type: ignore[arg-type]


def test_bodies_are_sampled_from_the_signature_the_server_gives(server: str) -> None:
    target = discover(LoadPlan(server, "fast", rps=1))
    bodies = [json.loads(b)["features"] for b in target.bodies]
    assert target.endpoint == f"{server}/models/fast/predict"
    assert {b["thal"] for b in bodies} == {"normal", "fixed"}
    assert 30 < min(b["age"] for b in bodies) < 54 < max(b["age"] for b in bodies) < 80


def test_v2_metadata_is_used_when_there_is_no_native_route(server: str) -> None:
    target = discover(LoadPlan(server, "tensors", rps=1))
    body = json.loads(target.bodies[0])
    assert target.endpoint == f"{server}/v2/models/tensors/infer"
    assert body["inputs"][0]["name"] == "x" and body["inputs"][0]["shape"] == [1]


def test_a_fast_model_passes_its_slos_in_open_loop(server: str) -> None:
    slos = [Slo("p99", 150), Slo("rps", 30), Slo("error_rate", 0.01)]
    report = run(_plan(server, "fast", rps=40)).judged(slos)
    assert report.passed, report
    assert 50 <= report.requests <= 70  # 40 req/s for 1.5 s, warm-up not counted
    assert report.statuses == {"200": report.requests}


def test_a_slowed_model_fails_the_p99_slo(server: str) -> None:
    slos = [Slo("p99", 150), Slo("error_rate", 0.01)]
    report = run(_plan(server, "slow", rps=20)).judged(slos)
    assert [r.passed for r in report.slos] == [False, True]
    assert report.latency_ms["p50"] >= 250


def test_open_loop_counts_queueing_from_the_intended_send_time(server: str) -> None:
    """A server that serves one request at a time (50 ms each, 20/s) offered 40/s: a closed
    loop of one sees 50 ms; the open loop sees the queue grow (coordinated omission)."""
    closed = run(_plan(server, "serial", concurrency=1, duration_s=1))
    opened = run(_plan(server, "serial", rps=40))
    assert closed.latency_ms["p99"] < 150
    assert opened.latency_ms["p99"] > 500


def test_cli_prints_json_and_exits_non_zero_when_an_slo_fails(server: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "modelport", "loadtest", server, "--model", "slow", "--rps",
         "10", "--duration", "1s", "--warmup", "0.2s", "--slo-p99", "100ms", "--json"],
        capture_output=True, text=True, timeout=60, check=False)
    report = json.loads(done.stdout)
    assert done.returncode == 1, done.stderr
    assert report["passed"] is False
    assert report["slos"][0]["metric"] == "p99" and report["slos"][0]["passed"] is False


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get "
                    "install wrk); the cross-check is skipped")
def test_closed_loop_throughput_agrees_with_wrk(server: str, tmp_path: Path) -> None:
    script = tmp_path / "post.lua"
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      'wrk.body = \'{"features": {"age": 54, "thal": "normal"}}\'\n')
    ours = run(_plan(server, "fast", concurrency=4))
    done = subprocess.run(["wrk", "-t1", "-c4", "-d1s", "-s", str(script),
                           f"{server}/models/fast/predict"],
                          capture_output=True, text=True, timeout=30, check=True)
    wrk_rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", done.stdout).group(1))  # type: ignore[union-attr]
    print(f"closed loop, 4 in flight: modelport {ours.throughput_rps:.0f} req/s, "
          f"wrk {wrk_rps:.0f} req/s")
    assert ours.error_rate == 0
    assert wrk_rps / 5 < ours.throughput_rps < wrk_rps * 5


@pytest.mark.e2e
def test_the_example_model_under_modelport_serve_passes_a_modest_slo(
        heart_package: Path, tmp_path: Path) -> None:
    for url in _serve([sys.executable, "-m", "modelport", "serve", str(heart_package),
                       "--log-level", "warning"], tmp_path):
        report = run(_plan(url, "heart", rps=20)).judged([Slo("p99", 1000),
                                                          Slo("error_rate", 0.0)])
        assert report.passed, report
        assert report.statuses == {"200": report.requests}
