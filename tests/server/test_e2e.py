"""End to end: the real ``modelport serve`` process on 127.0.0.1, real clients."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes],
                                                                           str]:
    """``modelport serve ARGS`` on a free port; returns once ``/ready`` answers 200."""
    port = free_port()
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.Popen([sys.executable, "-m", "modelport", "serve", *args, "--port",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": root, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "server died")
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise RuntimeError("server did not become ready in 60 s")


def stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, wait (bounded), close the pipes; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()
    return code


@pytest.fixture(scope="module")
def server(heart_package: Path) -> Iterator[str]:
    proc, url = start_server(str(heart_package))
    yield url
    stop(proc)


def test_tritonclient_binary_defaults_match_in_process(server: str, heart_package: Path,
                                                       heart_features: pd.DataFrame) -> None:
    import joblib
    import tritonclient.http as triton

    rows = heart_features.head(16)
    client = triton.InferenceServerClient(url=server.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("heart")
    meta = client.get_model_metadata("heart")
    inputs = []
    for spec in meta["inputs"]:
        col = rows[spec["name"]].to_numpy()
        arr = col.astype(object) if spec["datatype"] == "BYTES" else col.astype(
            np.int64 if spec["datatype"] == "INT64" else np.float64)
        inp = triton.InferInput(spec["name"], [len(rows)], spec["datatype"])
        inp.set_data_from_numpy(arr)  # binary_data=True by default
        inputs.append(inp)
    outputs = [triton.InferRequestedOutput("predict"), triton.InferRequestedOutput("predict_proba")]
    result = client.infer("heart", inputs, outputs=outputs)
    model = joblib.load(heart_package / "model.joblib")
    np.testing.assert_array_equal(result.as_numpy("predict"), model.predict(rows))
    np.testing.assert_allclose(result.as_numpy("predict_proba"), model.predict_proba(rows),
                               atol=1e-12)


def test_json_clients_v1_and_native(server: str, heart_features: pd.DataFrame) -> None:
    rows = heart_features.head(3)
    records = rows.to_dict(orient="records")
    records = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
               for r in records]
    native = httpx.post(f"{server}/predict", json={"instances": records}).json()
    v1 = httpx.post(f"{server}/v1/models/heart:predict", json={"instances": records}).json()
    assert v1["predictions"] == native["predictions"]
    assert len(native["probabilities"]) == 3


def test_docs_and_openapi_load(server: str) -> None:
    assert "swagger-ui" in httpx.get(f"{server}/docs").text
    assert httpx.get(f"{server}/openapi.json").json()["info"]["title"] == "modelport"


def test_sigterm_during_a_burst_answers_every_accepted_request(tmp_path: Path) -> None:
    """Requests in flight when SIGTERM arrives all get a 200; then the process exits 0."""
    import joblib

    from tests.server.slowmodel import SlowSum

    model = tmp_path / "slow.joblib"
    joblib.dump(SlowSum(0.5), model)
    proc, url = start_server(str(model), "--max-batch-size", "4")

    def call(i: int) -> int:
        with httpx.Client(timeout=60) as c:
            return c.post(f"{url}/predict", json={"instances": [[i, 1]]}).status_code

    with cf.ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(call, i) for i in range(12)]
        deadline = time.monotonic() + 20
        while httpx.get(f"{url}/ready").json()["in_flight"] < 12:  # all 12 accepted
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        statuses = [f.result() for f in futures]
        late = pool.submit(call, 99)
        with pytest.raises(httpx.TransportError):
            late.result()  # nothing new is accepted after shutdown
    assert statuses == [200] * 12
    assert proc.wait(timeout=30) == 0
    assert proc.stderr is not None
    assert "Finished server process" in proc.stderr.read().decode()
    proc.stderr.close()


def test_several_models_in_one_server(heart_package: Path, heart_model_path: Path,
                                      tmp_path: Path) -> None:
    config = tmp_path / "models.yaml"
    config.write_text(f"models:\n  - name: second\n    path: {heart_model_path}\n")
    proc, url = start_server(str(heart_package), str(config))
    try:
        assert httpx.get(f"{url}/v1/models").json() == {"models": ["heart", "second"]}
        rec = httpx.get(f"{url}/models/second").json()["example"]
        assert httpx.post(f"{url}/models/second/predict", json=rec).status_code == 200
    finally:
        assert stop(proc) == 0


def test_workers_share_one_metrics_view(heart_package: Path,
                                        heart_features: pd.DataFrame) -> None:
    """With --workers 2 the requests spread over two processes, and /metrics counts them all."""
    proc, url = start_server(str(heart_package), "--workers", "2")
    record = {k: (v.item() if hasattr(v, "item") else v)
              for k, v in heart_features.iloc[0].items()}
    try:
        for _ in range(40):
            with httpx.Client() as c:  # a new connection each time: both workers get some
                assert c.post(f"{url}/predict", json={"features": record}).status_code == 200
        text = httpx.get(f"{url}/metrics").text
    finally:
        assert stop(proc) == 0
    counted = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("modelport_requests_total{") and 'route="/predict"' in line)
    assert counted == 40
