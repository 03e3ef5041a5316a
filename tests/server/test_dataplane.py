"""The data plane under every front door: resolve, infer, emit, typed context, one route table.

The data plane is driven directly (no HTTP: the way the gRPC front door uses it) on the app
``create_app`` builds, and through the REST routes, which must be thin codecs over it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import fastapi.routing
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from starlette.responses import JSONResponse

from modelport.config import Settings
from modelport.errors import ModelNotFound, NotReady, RequestTimeout
from modelport.package import LoadedModel
from modelport.server.app import create_app
from modelport.server.dataplane import DataPlane, RequestContext
from modelport.server.edge import request_context
from modelport.server.fastlane import ModelportApp
from modelport.server.state import AppState
from modelport.signature import Feature, Signature
from modelport.traffic import TrafficPolicy
from modelport.types import Columns, Outputs, PredictionEvent

SIG = Signature((Feature("x"), Feature("y")))


@dataclass(frozen=True)
class FnRuntime:
    """A runtime whose model is a plain function."""

    fn: Any
    signature: Signature
    flavor: str = "function"

    def predict(self, batch: Columns) -> Outputs:
        return self.fn(batch)


def adder(offset: float = 0.0, delay: float = 0.0) -> Any:
    def predict(batch: Columns) -> Outputs:
        if delay:
            time.sleep(delay)
        return Outputs(batch.data["x"] + batch.data["y"] + offset)
    return predict


def model(version: str, offset: float = 0.0, delay: float = 0.0) -> LoadedModel:
    return LoadedModel("adder", version, FnRuntime(adder(offset, delay), SIG))


def app_of(*models: LoadedModel, **settings: Any) -> tuple[FastAPI, AppState, list[Any]]:
    events: list[PredictionEvent] = []
    app = create_app(list(models), Settings(**settings), on_prediction=[events.append])
    state: AppState = app.state.modelport
    return app, state, events


def ctx(**headers: str) -> RequestContext:
    return RequestContext("rid-1", "grpc", headers, route="grpc")


def batch(x: float, y: float) -> Columns:
    return SIG.from_records([{"x": x, "y": y}])


def test_the_app_state_holds_one_typed_data_plane() -> None:
    _, state, _ = app_of(model("1"))
    assert isinstance(state.dataplane, DataPlane)
    assert state.traffic.get("adder") is None and state.followers == {}


async def test_infer_predicts_fills_the_context_and_emits_one_event() -> None:
    _, state, events = app_of(model("1"))
    plane, c = state.dataplane, ctx()
    served = plane.resolve(c, "adder", None)
    out = await plane.infer(c, served, batch(1, 2))
    assert out.predictions.tolist() == [3.0]
    assert (c.model, c.version, c.arm, c.shadow) == ("adder", "1", None, ())
    (event,) = events
    assert (event.request_id, event.route, event.model, event.version) == (
        "rid-1", "grpc", "adder", "1")
    await state.repo.aclose()


async def test_resolve_follows_the_traffic_policy_and_sticky_header() -> None:
    """Metadata names are lower-case (gRPC, HTTP/2): a policy's ``X-User`` reads ``x-user``."""
    _, state, _ = app_of(model("1"), model("2", offset=100))
    state.repo.set_default("adder", "1")
    state.traffic.set("adder", TrafficPolicy.canary("1", "2", 50, sticky_header="X-User"))
    plane = state.dataplane
    picks = set()
    for _ in range(20):
        c = ctx(**{"x-user": "ana"})
        picks.add((plane.resolve(c, "adder", None).version, c.arm))
    assert len(picks) == 1 and picks <= {("1", "stable"), ("2", "canary")}
    assert plane.resolve(ctx(), "adder", "1").version == "1"  # a version asked for wins
    await state.repo.aclose()


async def test_a_shadow_version_gets_a_copy_and_the_client_the_primary_answer() -> None:
    _, state, events = app_of(model("1"), model("2", offset=100))
    state.repo.set_default("adder", "1")
    state.traffic.set("adder", TrafficPolicy.parse(
        {"arms": [{"version": "1"}], "shadow": ["2"]}))
    plane, c = state.dataplane, ctx()
    out = await plane.infer(c, plane.resolve(c, "adder", None), batch(1, 1))
    assert out.predictions.tolist() == [2.0] and c.shadow == ("2",)
    while state.shadow_tasks:
        await asyncio.sleep(0.01)
    assert [(e.version, e.route, e.outputs.predictions.tolist()) for e in events] == [
        ("1", "grpc", [2.0]), ("2", "shadow", [102.0])]
    await state.repo.aclose()


async def test_a_passed_deadline_answers_request_timeout_without_running_the_model() -> None:
    _, state, events = app_of(model("1"))
    plane = state.dataplane
    late = RequestContext("r", "grpc", {}, deadline=time.monotonic() - 1)
    with pytest.raises(RequestTimeout):
        await plane.infer(late, plane.get("adder"), batch(1, 1))
    assert events == [] and state.in_flight == 0
    await state.repo.aclose()


async def test_a_deadline_bounds_the_wait_for_a_slow_model() -> None:
    _, state, _ = app_of(model("1", delay=0.5), request_timeout_s=30)
    plane = state.dataplane
    soon = RequestContext("r", "grpc", {}, deadline=time.monotonic() + 0.05)
    started = time.monotonic()
    with pytest.raises(RequestTimeout):
        await plane.infer(soon, plane.get("adder"), batch(1, 1))
    assert time.monotonic() - started < 0.4
    await state.repo.aclose()


async def test_readiness_and_the_repository_index_load_and_unload() -> None:
    _, state, _ = app_of(model("1"))
    plane = state.dataplane
    assert plane.live() and plane.ready() and plane.model_ready("adder", None)
    assert [(s.name, s.version) for s in plane.models()] == [("adder", "1")]
    with pytest.raises(ModelNotFound):
        plane.model_ready("nope", None)
    with pytest.raises(ModelNotFound):
        plane.model_ready("adder", "9")
    gone = await plane.unload("adder")
    assert [s.version for s in gone] == ["1"] and plane.unloaded() == ["adder"]
    assert not plane.ready()
    with pytest.raises(ModelNotFound):
        plane.resolve(ctx(), "adder", None)
    served = await plane.load("adder")
    assert served.ready and plane.ready() and plane.unloaded() == []
    with pytest.raises(ModelNotFound):
        await plane.load("adder", "9")
    state.shutting_down = True
    assert not plane.ready()
    await state.repo.aclose()


async def test_a_version_still_loading_is_not_ready() -> None:
    _, state, _ = app_of(model("1"))
    state.repo.get("adder").ready = False
    assert state.dataplane.model_ready("adder", "1") is False
    with pytest.raises(NotReady):
        state.dataplane.resolve(ctx(), "adder", None)
    await state.repo.aclose()


def test_rest_routes_fill_the_same_context_the_edge_made() -> None:
    seen: list[RequestContext] = []

    def spy(app: FastAPI, _state: AppState) -> None:
        async def whoami(request: Request) -> JSONResponse:
            seen.append(request_context(request))
            return JSONResponse({})
        app.add_api_route("/whoami", whoami)

    app = create_app([model("1")], Settings(), extensions=[spy])
    with TestClient(app) as c:
        answer = c.post("/models/adder/predict", json={"features": {"x": 1, "y": 2}},
                        headers={"x-request-id": "abc"})
        assert answer.headers["x-model-version"] == "1"
        assert answer.json()["request_id"] == "abc"
        c.get("/whoami", headers={"x-request-id": "def"})
    assert [(s.request_id, s.model) for s in seen] == [("def", None)]


def allowed_routes(app: FastAPI) -> list[Any]:
    """Every route of the app, those of included routers too (recent FastAPI keeps an
    included router as one route)."""
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    return list(flatten(app.routes) if flatten is not None else app.routes)


def test_one_route_table_each_prediction_route_is_one_documented_route() -> None:
    app = create_app([model("1")], Settings())
    assert isinstance(app, ModelportApp)
    table = {r.path: r for r in app.fast_routes}
    posts = [r for r in allowed_routes(app) if "POST" in (r.methods or ())]
    for path, row in table.items():
        documented = [r for r in posts if r.path == path]
        assert len(documented) == 1, path  # documented once
        assert documented[0].endpoint is row.endpoint  # and the very same endpoint
    kinds = {r.kind for r in app.fast_routes}
    assert kinds == {"native", "bulk", "v1", "v2", "mlflow", "explain", "v2explain"}
    assert len(table) == len(app.fast_routes) == 9 + 2 + 5  # predictions, MLflow, explanations


def test_a_prediction_route_answers_alike_by_either_way_in() -> None:
    """The fast lane is a shortcut to the table's endpoint: the same request through FastAPI's
    own router (the lane switched off) gets the same answer."""
    app = create_app([model("1")], Settings())
    body = {"instances": [{"x": 1, "y": 2}, {"x": 3, "y": 4}]}
    with TestClient(app) as c:
        fast = c.post("/v1/models/adder:predict", json=body).json()
    slow_app = create_app([model("1")], Settings())
    assert isinstance(slow_app, ModelportApp)
    slow_app.fast_routes = ()
    with TestClient(slow_app) as c:
        slow = c.post("/v1/models/adder:predict", json=body).json()
    assert fast == slow == {"predictions": [3.0, 7.0]}

