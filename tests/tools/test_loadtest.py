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

from modelport.errors import ConfigError
from modelport.tools.loadtest import LoadPlan, discover, run
from modelport.tools.loadtest_report import Slo

APP = '''
import asyncio
from fastapi import FastAPI, HTTPException

SIGNATURE = {"features": [
    {"name": "age", "dtype": "int", "example": 54},
    {"name": "thal", "dtype": "string", "categories": ["normal", "fixed"]}]}
DELAY = {"fast": 0.0, "slow": 0.4, "serial": 0.05, "paced": 0.02}
app = FastAPI()
lock = asyncio.Lock()

@app.get("/models")
async def models():
    return {"models": [{"name": name} for name in DELAY]}

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
    """Run a server on a free port of 127.0.0.1; yield its URL; stop it by its PID.

    (Not ``uvicorn --fd``: uvicorn takes that socket for a Unix one and leaves Nagle's
    algorithm on, which caps each connection at ~25 req/s against wrk's delayed ACKs.)"""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([*argv, "--port", str(port)], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
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


def _plan(url: str, model: str, *, duration_s: float = 1.5, warmup_s: float = 0.5,
          processes: int = 2, rps: float | None = None,
          concurrency: int | None = None) -> LoadPlan:
    return LoadPlan(url, model, rps, concurrency, duration_s, warmup_s, processes)


def test_bodies_are_sampled_from_the_signature_the_server_gives(server: str) -> None:
    target = discover(LoadPlan(server, "fast", rps=1))
    bodies = [json.loads(b)["features"] for b in target.bodies]
    assert target.endpoint == f"{server}/models/fast/predict"
    assert {b["thal"] for b in bodies} == {"normal", "fixed"}
    assert 25 < min(b["age"] for b in bodies) < 54 < max(b["age"] for b in bodies) < 85


def test_without_model_a_server_of_several_models_is_answered_with_their_names(
        server: str) -> None:
    with pytest.raises(ConfigError, match=r"serves 4 models \(fast, paced, serial, slow\)"):
        discover(LoadPlan(server, rps=1))


def test_v2_metadata_is_used_when_there_is_no_native_route(server: str) -> None:
    target = discover(LoadPlan(server, "tensors", rps=1))
    body = json.loads(target.bodies[0])
    assert target.endpoint == f"{server}/v2/models/tensors/infer"
    assert body["inputs"][0]["name"] == "x" and body["inputs"][0]["shape"] == [1]


def test_a_fast_model_passes_its_slos_in_open_loop(server: str) -> None:
    slos = [Slo("p99", 250), Slo("rps", 30), Slo("error_rate", 0.01)]
    report = run(_plan(server, "fast", rps=40)).judged(slos)
    assert report.passed, report
    assert 50 <= report.requests <= 70  # 40 req/s for 1.5 s, warm-up not counted
    assert report.statuses == {"200": report.requests}


def test_a_slowed_model_fails_the_p99_slo(server: str) -> None:
    slos = [Slo("p99", 250), Slo("error_rate", 0.01)]
    report = run(_plan(server, "slow", rps=20)).judged(slos)
    assert [r.passed for r in report.slos] == [False, True]
    assert report.latency_ms["p50"] >= 400


def test_open_loop_counts_queueing_from_the_intended_send_time(server: str) -> None:
    """A server that serves one request at a time (50 ms each, 20/s) offered 40/s: a closed
    loop of one sees 50 ms; the open loop sees the queue grow (coordinated omission)."""
    closed = run(_plan(server, "serial", concurrency=1, duration_s=0.6, warmup_s=0.2,
                       processes=1))
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
def test_closed_loop_numbers_agree_with_wrk(server: str, tmp_path: Path) -> None:
    """Against a model that takes 20 ms, 4 in flight: both clients should see ~200 req/s and
    ~20 ms (the server bounds the numbers, not the client; a fast endpoint would measure how
    much quicker wrk's C client is than httpx on a shared 2-core machine)."""
    script = tmp_path / "post.lua"
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      'wrk.body = \'{"features": {"age": 54, "thal": "normal"}}\'\n')
    ours = run(_plan(server, "paced", concurrency=4))
    done = subprocess.run(["wrk", "-t1", "-c4", "-d1s", "--latency", "-s", str(script),
                           f"{server}/models/paced/predict"],
                          capture_output=True, text=True, timeout=30, check=True)
    wrk_rps = float(_grab(r"Requests/sec:\s+([0-9.]+)", done.stdout))
    wrk_p50 = _ms(_grab(r"50%\s+([0-9.]+[mu]?s)", done.stdout))
    print(f"closed loop, 4 in flight, 20 ms model: modelport {ours.throughput_rps:.0f} req/s "
          f"p50 {ours.latency_ms['p50']:.1f} ms; wrk {wrk_rps:.0f} req/s p50 {wrk_p50:.1f} ms")
    assert ours.error_rate == 0
    assert wrk_rps / 3 < ours.throughput_rps < wrk_rps * 3  # a factor: the clients differ
    assert wrk_p50 / 3 < ours.latency_ms["p50"] < wrk_p50 * 3


def _grab(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match is not None, text
    return match.group(1)


def _ms(text: str) -> float:
    value = float(text.rstrip("mus"))
    return value * {"ms": 1.0, "us": 1e-3}.get(text[-2:], 1000.0)


@pytest.mark.e2e
def test_the_example_model_under_modelport_serve_passes_a_modest_slo(
        heart_package: Path, tmp_path: Path) -> None:
    for url in _serve([sys.executable, "-m", "modelport", "serve", str(heart_package),
                       "--log-level", "warning"], tmp_path):
        # no --model: the one served model is found
        assert discover(LoadPlan(url, rps=1)).endpoint == f"{url}/models/heart/predict"
        report = run(_plan(url, "heart", rps=20)).judged([Slo("p99", 1000),
                                                          Slo("error_rate", 0.0)])
        assert report.passed, report
        assert report.statuses == {"200": report.requests}
