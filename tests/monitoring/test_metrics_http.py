"""install_observability on a tiny FastAPI app: request metrics per route template,
``GET /metrics``, ``POST /feedback`` — in process, and once through a real uvicorn."""

from __future__ import annotations

import json
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI, Request
from prometheus_client.parser import text_string_to_metric_families

from modelport.monitoring.metrics import UNKNOWN, Metrics
from modelport.monitoring.predlog import PredictionLog
from modelport.server.observability import install_observability, tag_request

with warnings.catch_warnings():  # starlette asks for httpx2, which is not a dependency
    warnings.simplefilter("ignore", UserWarning)
    from fastapi.testclient import TestClient


def make_app(metrics: Metrics, predlog: PredictionLog | None = None, **kwargs: object) -> FastAPI:
    app = FastAPI()

    @app.post("/models/{name}/versions/{version}/predict")
    async def predict(name: str, version: str) -> dict[str, str]:
        return {"model": name}

    @app.post("/predict")
    async def default(request: Request) -> dict[str, str]:
        tag_request(request, "heart", "1")
        return {}

    @app.post("/v2/models/{model_name}/infer")
    async def infer(model_name: str, request: Request) -> dict[str, str]:
        request.state.model, request.state.version = "heart", "1"
        return {}

    @app.get("/in-flight")
    async def in_flight() -> dict[str, float]:
        body = metrics.render()[0].decode()
        for family in text_string_to_metric_families(body):
            for s in family.samples:
                if s.name == "modelport_in_flight_requests" and s.labels["route"] == "/in-flight":
                    return {"value": s.value}
        return {"value": -1}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("model exploded")

    install_observability(app, metrics=metrics, predlog=predlog, **kwargs)  # type: ignore[arg-type]
    return app


def count(metrics: Metrics, **labels: str) -> float:
    for family in text_string_to_metric_families(metrics.render()[0].decode()):
        for s in family.samples:
            # every request here is an HTTP one: protocol "rest"
            if s.name == "modelport_requests_total" and s.labels == {**labels,
                                                                      "protocol": "rest"}:
                return s.value
    return 0.0


@pytest.fixture
def metrics() -> Metrics:
    m = Metrics()
    m.set_model_info("heart", "1", flavor="sklearn")
    return m


@pytest.fixture
def predlog(tmp_path: Path) -> Iterator[PredictionLog]:
    log = PredictionLog(
        f"sqlite:///{tmp_path}/log.db", spool_dir=tmp_path / "spool", flush_interval_s=0.05
    )
    yield log
    log.close()


@pytest.fixture
def client(metrics: Metrics, predlog: PredictionLog) -> Iterator[TestClient]:
    with TestClient(make_app(metrics, predlog), raise_server_exceptions=False) as c:
        yield c


def test_requests_are_labelled_by_route_template_not_raw_url(
    client: TestClient, metrics: Metrics
) -> None:
    client.post("/models/heart/versions/1/predict")
    client.post("/models/heart/versions/1/predict")
    route = "/models/{name}/versions/{version}/predict"
    assert count(metrics, model="heart", version="1", route=route, status="200") == 2


def test_made_up_names_in_the_path_collapse_to_unknown(
    client: TestClient, metrics: Metrics
) -> None:
    for name in ("a", "b", "c"):
        client.post(f"/models/{name}/versions/7/predict")
    route = "/models/{name}/versions/{version}/predict"
    assert count(metrics, model=UNKNOWN, version=UNKNOWN, route=route, status="200") == 3


def test_a_handler_names_the_model_version_it_served(client: TestClient, metrics: Metrics) -> None:
    client.post("/predict")
    assert count(metrics, model="heart", version="1", route="/predict", status="200") == 1


def test_request_state_model_and_version_name_the_labels(
    client: TestClient, metrics: Metrics
) -> None:
    client.post("/v2/models/heart/infer")
    route = "/v2/models/{model_name}/infer"
    assert count(metrics, model="heart", version="1", route=route, status="200") == 1


def test_an_unmatched_path_is_one_label_however_many_urls(
    client: TestClient, metrics: Metrics
) -> None:
    for path in ("/x", "/y/z", "/wp-admin"):
        assert client.get(path).status_code == 404
    assert count(metrics, model="", version="", route="unmatched", status="404") == 3


def test_a_wrong_method_keeps_its_route_and_counts_405(
    client: TestClient, metrics: Metrics
) -> None:
    assert client.get("/predict").status_code == 405
    assert count(metrics, model="", version="", route="/predict", status="405") == 1


def test_an_exception_in_a_handler_counts_as_500(client: TestClient, metrics: Metrics) -> None:
    assert client.get("/boom").status_code == 500
    assert count(metrics, model="", version="", route="/boom", status="500") == 1


def test_in_flight_counts_the_running_request(client: TestClient, metrics: Metrics) -> None:
    assert client.get("/in-flight").json() == {"value": 1}
    assert client.get("/in-flight").json() == {"value": 1}


def test_metrics_route_serves_the_exposition_and_is_not_counted(
    client: TestClient, metrics: Metrics
) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    client.get("/metrics")
    assert "/metrics" not in response.text.split("modelport_requests_total{")[-1]
    assert count(metrics, model="", version="", route="/metrics", status="200") == 0


def test_on_request_gets_collapsed_labels_status_and_seconds(metrics: Metrics) -> None:
    seen: list[tuple[str, str, int, float]] = []
    app = make_app(metrics, on_request=lambda *args: seen.append(args))
    with TestClient(app) as c:
        c.post("/models/typo/versions/1/predict")
    assert seen[0][:3] == (UNKNOWN, UNKNOWN, 200) and 0 < seen[0][3] < 5


def test_feedback_is_accepted_with_202_and_stored(
    client: TestClient, predlog: PredictionLog, tmp_path: Path
) -> None:
    response = client.post("/feedback", json={"request_id": "never-seen", "label": 1, "row": 2})
    assert response.status_code == 202
    assert response.json() == {"accepted": True, "request_id": "never-seen"}
    predlog.flush()
    engine = sa.create_engine(f"sqlite:///{tmp_path}/log.db")
    with engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT request_id, row_index, label FROM modelport_feedback")
        )
        assert [(r[0], r[1], json.loads(str(r[2]))) for r in stored] == [("never-seen", 2, 1)]
    engine.dispose()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"label": 1}, "request_id"),
        ({"request_id": "r"}, "label"),
        ({"request_id": "r", "label": [1, 2]}, "label"),
        ({"request_id": "", "label": 1}, "request_id"),
        ({"request_id": "r", "label": 1, "row": -1}, "row"),
    ],
    ids=["no-id", "no-label", "list-label", "empty-id", "negative-row"],
)
def test_a_bad_feedback_body_is_422_naming_the_field(
    client: TestClient, body: dict[str, object], field: str
) -> None:
    response = client.post("/feedback", json=body)
    assert response.status_code == 422
    assert field in {str(part) for error in response.json()["detail"] for part in error["loc"]}


def test_without_a_prediction_log_there_is_no_feedback_route(metrics: Metrics) -> None:
    with TestClient(make_app(metrics)) as c:
        assert c.post("/feedback", json={"request_id": "r", "label": 1}).status_code == 404


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_real_uvicorn_serves_counts_that_match_the_requests_sent(metrics: Metrics) -> None:
    port = _free_port()
    config = uvicorn.Config(make_app(metrics), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(25):
                assert http.post("/predict").status_code == 200
            scraped = http.get("/metrics").text
    finally:
        server.should_exit = True
        thread.join(10)
    assert 'route="/predict",status="200",version="1"} 25.0' in scraped
