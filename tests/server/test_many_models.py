"""Many models per process (``--max-models`` / ``--max-memory``) against a real ``modelport
serve`` on 127.0.0.1: lazy loads, least-recently-used unloads, never of a model with a request
in flight, one load for concurrent first requests, bounded memory."""

from __future__ import annotations

import concurrent.futures as cf
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelport.config import parse_size
from modelport.package import load_model, pack
from modelport.server.pool import Budget
from tests.server.lazymodels import SLOW_MARK, SlowToLoad, SlowWhenAsked
from tests.server.test_e2e import free_port

N_MODELS = 50
BUDGET = 10
ROWS = 20_000  # training rows per model: a KNN keeps them (~1.7 MB per model)


def _knn(seed: int) -> Any:
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(ROWS, 4))
    y = (x[:, seed % 4] + rng.normal(scale=0.5, size=ROWS) > 0).astype(int)
    return KNeighborsClassifier(5).fit(x, y)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory of 50 packages, m00 … m49 (KNN classifiers on 4 features)."""
    import joblib

    root = tmp_path_factory.mktemp("fleet")
    raw = tmp_path_factory.mktemp("raw")
    for i in range(N_MODELS):
        joblib.dump(_knn(i), raw / f"m{i:02d}.joblib")
        pack(raw / f"m{i:02d}.joblib", root / "models" / f"m{i:02d}", name=f"m{i:02d}")
    return root / "models"


class Server:
    """``modelport serve ARGS`` on a free port, its log in a file (a pipe nobody reads would
    fill up under hundreds of requests and stall the server)."""

    def __init__(self, log: Path, *args: str) -> None:
        port = free_port()
        root = str(Path(__file__).resolve().parents[2])
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelport", "serve", *args, "--port", str(port),
             "--grpc-port", "0"], stdout=subprocess.DEVNULL, stderr=self._out,
            env={**os.environ, "PYTHONPATH": root})
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the server did not become ready in 60 s"
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)

    def rss_mib(self) -> float:
        """The server's resident set size, MiB."""
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        found = re.search(r"VmRSS:\s+(\d+) kB", text)
        assert found is not None
        return int(found.group(1)) / 1024

    def stop(self) -> int:
        """SIGTERM, wait (bounded); the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._out.close()
        return code


def _metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, value = line.rsplit(" ", 1)
        if head.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def _ready(url: str, name: str) -> bool:
    answer = httpx.get(f"{url}/v2/models/{name}/ready")
    assert answer.status_code == 200, answer.text
    return bool(answer.json()["ready"])


def test_fifty_models_in_a_budget_of_ten(fleet: Path, tmp_path: Path) -> None:
    """Random traffic over 50 models with 10 loaded at most: every answer is the in-process
    one, loads and unloads are counted, and the process stays far below eager loading."""
    local = {f"m{i:02d}": load_model(fleet / f"m{i:02d}").runtime for i in range(N_MODELS)}
    server = Server(tmp_path / "lazy.log", str(fleet), "--max-models", str(BUDGET))
    url = server.url
    try:
        assert sorted(httpx.get(f"{url}/v1/models").json()["models"]) == sorted(local)
        assert not any(_ready(url, n) for n in ("m00", "m25", "m49"))  # registered, not loaded
        rss_start = server.rss_mib()
        rng = random.Random(7)
        calls = []
        for _ in range(120):
            name = f"m{rng.randrange(N_MODELS):02d}"
            rows = np.random.default_rng(rng.randrange(1 << 30)).normal(
                size=(rng.randint(1, 3), 4)).round(3)
            calls.append((name, rows))
        for i in range(N_MODELS):  # every model at least once
            calls.append((f"m{i:02d}", np.full((1, 4), 0.25 * (i % 4))))
        rng.shuffle(calls)

        def call(name: str, rows: np.ndarray) -> tuple[str, np.ndarray, dict[str, Any]]:
            with httpx.Client(timeout=60) as client:
                answer = client.post(f"{url}/models/{name}/predict",
                                     json={"instances": rows.tolist()})
            assert answer.status_code == 200, answer.text
            return name, rows, answer.json()

        with cf.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda c: call(*c), calls))
        for name, rows, body in answers:
            sig = local[name].signature
            expected = local[name].predict(sig.from_rows(rows.tolist()))
            assert body["predictions"] == expected.predictions.tolist(), name
            assert np.array_equal(np.asarray(body["probabilities"]), expected.probabilities)
        metrics = httpx.get(f"{url}/metrics").text
        ready = httpx.get(f"{url}/ready").json()["models"]
        rss_lazy = server.rss_mib()
    finally:
        assert server.stop() == 0
    loaded = sum(ready.values())
    loads = _metric(metrics, "modelport_model_loads_total")
    evictions = _metric(metrics, "modelport_model_evictions_total", reason="max_models")
    assert 1 <= loaded <= BUDGET
    assert _metric(metrics, "modelport_models_loaded") == loaded
    assert loads >= N_MODELS
    assert evictions == loads - loaded
    log = (tmp_path / "lazy.log").read_text()
    assert log.count('"event":"model_load"') == loads  # one log line per load and unload
    assert log.count('"event":"model_evict"') == evictions

    eager = Server(tmp_path / "eager.log", str(fleet))  # no budget: all 50 at start
    try:
        models = httpx.get(f"{eager.url}/ready").json()["models"]
        assert len(models) == N_MODELS and all(models.values())
        rss_eager = eager.rss_mib()
    finally:
        assert eager.stop() == 0
    print(f"\nRSS: budget {BUDGET} of {N_MODELS} after {len(calls)} requests "
          f"{rss_lazy:.0f} MiB (at start {rss_start:.0f} MiB; {int(loads)} loads, "
          f"{int(evictions)} unloads); all {N_MODELS} loaded eagerly {rss_eager:.0f} MiB")
    per_model = sum(p.stat().st_size for p in fleet.glob("*/model.joblib")) / N_MODELS / 2**20
    assert rss_lazy < rss_eager - 0.5 * (N_MODELS - BUDGET) * per_model  # half of 40 models


@pytest.fixture(scope="module")
def slow_models(tmp_path_factory: pytest.TempPathFactory, fleet: Path) -> Path:
    """A config file: ``slow`` (holds a request on purpose), ``slowload`` (slow to unpickle)
    and three of the fleet's models."""
    import joblib

    root = tmp_path_factory.mktemp("slow")
    for name, model in (("slow", SlowWhenAsked(2.0)), ("slowload", SlowToLoad(0.6))):
        joblib.dump(model, root / f"{name}.joblib")
        pack(root / f"{name}.joblib", root / name, name=name)
    lines = ["models:", "  - {name: slow, path: slow}", "  - {name: slowload, path: slowload}"]
    lines += [f"  - {{name: {n}, path: {fleet / n}}}" for n in ("m01", "m02", "m03")]
    config = root / "models.yaml"
    config.write_text("\n".join(lines) + "\n")
    return config


def _predict(url: str, name: str, rows: list[list[float]]) -> httpx.Response:
    with httpx.Client(timeout=60) as client:
        return client.post(f"{url}/models/{name}/predict", json={"instances": rows})


def test_a_model_with_a_request_in_flight_is_never_unloaded(slow_models: Path,
                                                           tmp_path: Path) -> None:
    """``slow`` holds a 2 s request while three other models load through a budget of two:
    each load unloads the least recently used *idle* model, never ``slow``."""
    server = Server(tmp_path / "serve.log", str(slow_models), "--max-models", "2")
    url = server.url
    try:
        with cf.ThreadPoolExecutor(1) as pool:
            held = pool.submit(_predict, url, "slow", [[SLOW_MARK, 1.0]])
            deadline = time.monotonic() + 10
            while not _ready(url, "slow"):  # loaded; its request now sleeps in the model
                assert time.monotonic() < deadline
                time.sleep(0.02)
            for name in ("m01", "m02", "m03"):
                assert _predict(url, name, [[0.1, 0.2, 0.3, 0.4]]).status_code == 200
            during = {n: _ready(url, n) for n in ("slow", "m01", "m02", "m03")}
            metrics = httpx.get(f"{url}/metrics").text
            assert not held.done()  # the request was in flight all along
            answer = held.result(timeout=30)
    finally:
        assert server.stop() == 0
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == [SLOW_MARK + 1.0]
    assert during == {"slow": True, "m01": False, "m02": False, "m03": True}
    assert _metric(metrics, "modelport_model_evictions_total", model="slow") == 0
    assert _metric(metrics, "modelport_model_evictions_total", model="m01") == 1
    assert _metric(metrics, "modelport_model_evictions_total", model="m02") == 1


def test_concurrent_first_requests_load_a_model_once(slow_models: Path,
                                                    tmp_path: Path) -> None:
    """Twelve requests reach ``slowload`` (0.6 s to unpickle) before it is loaded: one load,
    twelve right answers; a model that was never asked for is never loaded."""
    server = Server(tmp_path / "serve.log", str(slow_models), "--max-memory", "64MiB")
    url = server.url
    try:
        barrier = threading.Barrier(12)

        def call(i: int) -> httpx.Response:
            barrier.wait()
            return _predict(url, "slowload", [[float(i), 1.0]])

        with cf.ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(call, range(12)))
        metrics = httpx.get(f"{url}/metrics").text
        assert not _ready(url, "slow")
    finally:
        assert server.stop() == 0
    assert [a.status_code for a in answers] == [200] * 12
    assert [a.json()["predictions"] for a in answers] == [[i + 1.0] for i in range(12)]
    assert _metric(metrics, "modelport_model_loads_total", model="slowload") == 1
    assert _metric(metrics, "modelport_model_loads_total") == 1


def test_sizes_and_budgets() -> None:
    assert parse_size("512MiB") == 512 * 2**20
    assert parse_size("2GB") == 2 * 10**9
    assert parse_size("1.5GiB") == int(1.5 * 2**30)
    assert parse_size("4096") == 4096
    with pytest.raises(ValueError, match="512MiB"):
        parse_size("lots")
    budget = Budget(max_models=2, max_bytes=100)
    assert budget.over(2, 100) is None
    assert budget.over(3, 10) == "max_models"
    assert budget.over(2, 101) == "max_memory"
    assert Budget(max_bytes=100).over(1, 500) is None  # one model always fits


def test_repository_load_and_unload_of_models_loaded_on_demand(fleet: Path) -> None:
    """The V2 repository's load and unload (admin key) act on the pool: a load may unload the
    least recently used model, an unload leaves the model registered, and the next request
    loads it again."""
    from fastapi.testclient import TestClient

    from modelport.config import Settings
    from modelport.server.factory import build_app

    settings = Settings(model=[str(fleet / "m01"), str(fleet / "m02")], max_models=1,
                        admin_keys=["adm"], grpc_port=0, drift_check_s=3600)
    admin = {"authorization": "Bearer adm"}
    with TestClient(build_app(settings)) as client:
        def ready(name: str) -> bool:
            return bool(client.get(f"/v2/models/{name}/ready").json()["ready"])

        assert client.get("/ready").status_code == 200 and not ready("m01")
        assert client.post("/v2/repository/models/m01/load", headers=admin).status_code == 200
        assert ready("m01")
        assert client.post("/v2/repository/models/m02/load", headers=admin).status_code == 200
        assert (ready("m01"), ready("m02")) == (False, True)  # the budget is one model
        assert client.post("/v2/repository/models/m02/unload",
                           headers=admin).status_code == 200
        assert not ready("m02")
        answer = client.post("/models/m02/predict", json={"instances": [[0.0, 0.1, 0.2, 0.3]]})
        assert answer.status_code == 200 and ready("m02")
        metrics = client.get("/metrics", headers=admin).text
    assert _metric(metrics, "modelport_model_evictions_total", reason="unload") == 1
    assert _metric(metrics, "modelport_model_evictions_total", reason="max_models") == 1
    assert _metric(metrics, "modelport_model_loads_total", model="m02") == 2
