"""A real Prometheus server scrapes a real uvicorn app on 127.0.0.1 and PromQL counts the
requests sent. Run as a script, this file is that app: ``python test_prometheus_live.py PORT``."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI, Request  # module level: route annotations resolve here

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="prometheus not found: `apt-get install -y prometheus` (Debian) provides it",
    ),
]
ASSETS = Path(str(files("modelport.monitoring") / "assets"))
REQUESTS = 37


def serve(port: int) -> None:
    """The app under test: one predict route and modelport's observability."""
    import uvicorn

    from modelport.monitoring.metrics import Metrics
    from modelport.server.observability import install_observability, tag_request

    app = FastAPI()
    metrics = Metrics()
    metrics.set_model_info("heart", "1", flavor="sklearn", reference_hash="abc")

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, int]:
        tag_request(request, "heart", "1")
        return {"prediction": 1}

    install_observability(app, metrics=metrics)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _until(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except httpx.HTTPError:
            last = None
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"gave up after {timeout_s} s waiting for {what} (last: {last!r})")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture(scope="module")
def app_port() -> Iterator[int]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, __file__, str(port)])
    try:
        _until(lambda: httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 200, 20, "app")
        yield port
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def prometheus(app_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp_path = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "modelport", "static_configs": [{"targets": [f"127.0.0.1:{app_port}"]}]}
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    argv = [
        str(PROMETHEUS),
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _until(lambda: httpx.get(f"{url}/-/ready").status_code == 200, 20, "prometheus ready")
        yield url
    finally:
        _stop(proc)


def query(prometheus: str, promql: str) -> dict[str, Any]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5)
    body: dict[str, Any] = response.json()
    return body


def scalar(prometheus: str, promql: str) -> float | None:
    result = query(prometheus, promql)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_promql_counts_exactly_the_requests_sent(prometheus: str, app_port: int) -> None:
    """The only test here that sends requests, so the count is exact whatever the order."""
    with httpx.Client(base_url=f"http://127.0.0.1:{app_port}") as http:
        for _ in range(REQUESTS):
            assert http.post("/predict").status_code == 200
    total = _until(
        lambda: scalar(prometheus, "sum(modelport_requests_total)") == REQUESTS, 30, "the count"
    )
    assert total
    by_route = 'sum(modelport_requests_total{model="heart",version="1",route="/predict"})'
    assert scalar(prometheus, by_route) == REQUESTS
    assert scalar(prometheus, 'modelport_model_info{flavor="sklearn"}') == 1


def test_every_dashboard_query_runs_on_the_real_server(prometheus: str) -> None:
    _until(lambda: scalar(prometheus, 'up{job="modelport"}') == 1, 30, "a first scrape")
    dashboard = json.loads((ASSETS / "dashboard.json").read_text(encoding="utf-8"))
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "1m").replace("$model", ".*")
            body = query(prometheus, expr)
            assert body["status"] == "success", (panel["title"], body)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
