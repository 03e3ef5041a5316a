"""The console's JSON routes, keys and root path, and the live per-arm statistics, in process
(the browser tests in ``test_console_browser.py`` drive the page itself)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from modelport.config import Settings
from modelport.server.factory import build_app
from modelport.server.livestats import LiveStats
from modelport.types import Columns, Outputs, PredictionEvent

KEY, ADMIN = "read-key", "admin-key"
ROW = {"age": 63, "sex": 1, "cp": 3, "trestbps": 145, "chol": 233, "fbs": 1, "restecg": 0,
       "thalach": 150, "exang": 0, "oldpeak": 2.3, "slope": 0, "ca": 0, "thal": "fixed"}


@pytest.fixture(scope="module")
def keyed(heart_package: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[TestClient]:
    """The example served with prediction and admin keys and the prediction log, with the
    root path ``/mp``."""
    tmp = tmp_path_factory.mktemp("console-api")
    settings = Settings(model=[str(heart_package)], api_keys=[KEY], admin_keys=[ADMIN],
                        log_db=f"sqlite:///{tmp / 'log.db'}", log_spool_dir=tmp / "spool",
                        grpc_port=0)
    with TestClient(build_app(settings), root_path="/mp") as client:
        yield client


def _get(client: TestClient, path: str, key: str | None = KEY) -> Any:
    """GET ``path`` as uvicorn hands it over with ``--root-path /mp``: prefixed."""
    return client.get("/mp" + path, headers={"x-api-key": key} if key else {})


def test_the_page_and_its_assets_open_without_a_key_and_carry_the_root_path(
        keyed: TestClient) -> None:
    page = _get(keyed, "/ui", key=None)
    assert page.status_code == 200
    assert 'src="/mp/ui/static/console/console.js"' in page.text
    assert 'data-root="/mp"' in page.text
    for asset in ("console/console.js", "console/console.css", "swagger-ui/swagger-ui.css",
                  "swagger-ui/LICENSE", "redoc/LICENSE"):
        assert _get(keyed, f"/ui/static/{asset}", key=None).status_code == 200, asset
    assert _get(keyed, "/ui/static/nothing.js", key=None).status_code == 401


def test_the_data_needs_a_prediction_key_and_actions_the_admin_key(keyed: TestClient) -> None:
    assert _get(keyed, "/ui/api/summary", key=None).status_code == 401
    assert _get(keyed, "/ui/api/summary").status_code == 200
    assert _get(keyed, "/ui/api/summary", key=ADMIN).status_code == 200
    # the console's actions are the admin API's routes: a prediction key is refused
    move = keyed.put("/admin/models/heart/traffic", headers={"x-api-key": KEY},
                     json={"arms": [{"version": "1.0.0"}]})
    assert move.status_code == 403


def test_a_root_path_prefix_in_the_path_does_not_open_admin_routes(keyed: TestClient) -> None:
    # uvicorn puts --root-path in front of the path: the keys are checked on the route
    assert keyed.get("/mp/admin/models").status_code == 401
    assert keyed.get("/mp/admin/models", headers={"x-api-key": KEY}).status_code == 403
    assert keyed.get("/mp/admin/models", headers={"x-api-key": ADMIN}).status_code == 200
    assert keyed.get("/mp/ui/api/summary").status_code == 401


def test_docs_and_redoc_load_their_assets_from_the_package(keyed: TestClient) -> None:
    docs = _get(keyed, "/docs").text
    redoc = _get(keyed, "/redoc").text
    assert "/mp/ui/static/swagger-ui/swagger-ui-bundle.js" in docs
    assert "'/mp/openapi.json'" in docs or '"/mp/openapi.json"' in docs
    assert "/mp/ui/static/redoc/redoc.standalone.js" in redoc
    for text in (docs, redoc):
        assert "https://" not in text.replace("https://json-schema.org", "")


def test_summary_describes_each_version(keyed: TestClient, heart_package: Path) -> None:
    from modelport.package import open_package
    from modelport.registry.store import digest_of

    model = _get(keyed, "/ui/api/summary").json()["models"][0]
    version = model["versions"][0]
    assert (model["name"], version["version"], version["flavor"], version["runtime"]) == (
        "heart", "1.0.0", "sklearn", "native")
    assert version["sha256"] == digest_of(open_package(heart_package).manifest.files)
    assert [f["name"] for f in version["signature"]["features"]][:3] == ["age", "sex", "cp"]


def test_rollout_counts_requests_per_arm_at_most_once_a_second(keyed: TestClient) -> None:
    headers = {"x-api-key": KEY}
    for _ in range(3):
        assert keyed.post("/predict", json={"features": ROW}, headers=headers).status_code == 200
    assert keyed.post("/predict", json={"features": {"age": "x"}},
                      headers=headers).status_code == 422
    time.sleep(1.05)  # past the bound
    first = _get(keyed, "/ui/api/models/heart/rollout").json()
    (arm,) = first["arms"]
    assert arm["requests"] >= 3 and arm["errors"] == 0 and arm["p99_ms"] >= arm["p50_ms"] > 0
    keyed.post("/predict", json={"features": ROW}, headers=headers)
    again = _get(keyed, "/ui/api/models/heart/rollout").json()
    assert again == first, "computed twice within MIN_INTERVAL_S"
    time.sleep(1.05)
    later = _get(keyed, "/ui/api/models/heart/rollout").json()
    assert later["arms"][0]["requests"] == arm["requests"] + 1


def test_predictions_are_listed_newest_first_and_filtered(keyed: TestClient) -> None:
    headers = {"x-api-key": KEY}
    ids = [keyed.post("/predict", json={"features": ROW}, headers=headers)
           .headers["x-request-id"] for _ in range(2)]
    deadline = time.monotonic() + 10
    while True:
        time.sleep(1.05)
        rows = _get(keyed, "/ui/api/predictions?model=heart&version=1.0.0&limit=5").json()
        if [r["request_id"] for r in rows["rows"][:2]] == ids[::-1]:
            break
        assert time.monotonic() < deadline, rows
    assert rows["enabled"] and len(rows["rows"]) <= 5
    none = _get(keyed, "/ui/api/predictions?version=9.9.9").json()
    assert none["rows"] == []


@pytest.mark.parametrize(("path", "status"), [
    ("/ui/api/predictions?limit=0", 422), ("/ui/api/predictions?limit=x", 422),
    ("/ui/api/models/nope/rollout", 404), ("/ui/api/models/nope/drift", 404)])
def test_bad_requests_are_named(keyed: TestClient, path: str, status: int) -> None:
    answer = _get(keyed, path)
    assert answer.status_code == status
    assert answer.json()["error"]


def test_drift_without_traffic_is_insufficient_with_the_reference_histogram(
        keyed: TestClient) -> None:
    drift = _get(keyed, "/ui/api/models/heart/drift?feature=thal").json()
    assert drift["enabled"] and drift["report"]["status"] == "insufficient"
    hist = drift["histogram"]
    assert hist["feature"] == "thal" and len(hist["labels"]) == len(hist["reference"]) == len(
        hist["current"])
    assert sum(hist["reference"]) > 0


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_live_stats_per_arm_percentiles_errors_and_window() -> None:
    clock = _Clock()
    stats = LiveStats(clock=clock)
    for i in range(100):
        stats.request("m", "2", "canary", 500 if i < 5 else 200, 0.010)
    stats.request("m", "1", "stable", 200, 0.002)
    stats.request("m", "1", "stable", 200, 0.200)
    stats.request("other", "1", None, 200, 0.002)
    canary, stable = sorted(stats.arms("m", window_s=10), key=lambda a: a.arm)
    assert (canary.requests, canary.errors, canary.error_rate, canary.rps) == (100, 5, 0.05, 10)
    assert 10 <= canary.p50_ms <= 11.5 and 10 <= canary.p99_ms <= 11.5
    assert stable.p50_ms < 2.5 and 200 <= stable.p99_ms <= 230
    clock.now += 11
    assert stats.arms("m", window_s=10) == []
    stats.forget("m", "2")
    assert [a.arm for a in stats.arms("m", window_s=60)] == ["stable"]


def _event(rid: str, arm: str, version: str, predictions: list[int]) -> PredictionEvent:
    batch = Columns({"x": np.zeros(len(predictions))}, len(predictions))
    return PredictionEvent(request_id=rid, timestamp=0.0, model="m", version=version,
                           inputs=batch, outputs=Outputs(np.asarray(predictions)),
                           latency_s=0.001, route="native", arm=arm)


def test_shadow_disagreement_compares_the_copy_with_the_answer_sent() -> None:
    shadowed = {"m"}
    stats = LiveStats(lambda model: model in shadowed, clock=_Clock())
    stats.on_prediction(_event("a", "1", "1", [0, 1, 1, 0]))
    stats.on_prediction(_event("a", "shadow", "2", [0, 0, 1, 1]))
    stats.on_prediction(_event("b", "1", "1", [1]))
    stats.on_prediction(_event("b", "shadow", "2", [1]))
    stats.on_prediction(_event("c", "shadow", "2", [1]))  # its answer was never seen
    (shadow,) = stats.shadows("m")
    assert (shadow.version, shadow.rows, shadow.disagreements, shadow.rate) == ("2", 5, 2, 0.4)
    shadowed.clear()
    stats.on_prediction(_event("d", "1", "1", [0]))  # no shadow in the policy: not kept
    stats.on_prediction(_event("d", "shadow", "2", [1]))
    assert stats.shadows("m")[0].rows == 5
