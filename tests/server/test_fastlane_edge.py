"""The edge answering the fast lane: a streamed answer and a background task work as through
FastAPI, the answer headers and request metrics are there, and an app without the edge still
gets its request metrics from the observer as a middleware of its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
from fastapi import APIRouter, Request
from prometheus_client.parser import text_string_to_metric_families
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

from modelport.monitoring.metrics import Metrics
from modelport.server.edge import EdgeMiddleware
from modelport.server.fastlane import JSONBytes, ModelportApp, RouteTable
from modelport.server.observability import install_observability


def _app(*, edge: bool, done: list[str]) -> tuple[ModelportApp, Metrics]:
    router = APIRouter()
    table = RouteTable(router)

    @table.post("/stream", kind="native", summary="streamed", responses={})
    async def stream(request: Request) -> Response:
        body = await request.body()

        async def chunks() -> AsyncIterator[bytes]:
            yield b"got "
            yield body

        return StreamingResponse(chunks(), media_type="text/plain")

    @table.post("/later", kind="native", summary="background", responses={})
    async def later(request: Request) -> Response:
        response = JSONBytes(b'{"ok": true}', status_code=201)
        response.background = BackgroundTask(done.append, "ran")
        return response

    app = ModelportApp()
    app.fast_routes = table.routes
    app.include_router(router)
    metrics = Metrics()
    install_observability(app, metrics=metrics)
    if edge:
        app.add_middleware(EdgeMiddleware, max_body_bytes=1 << 20)
    return app, metrics


def _count(metrics: Metrics, route: str) -> float:
    text = metrics.render()[0].decode()
    return sum(s.value for f in text_string_to_metric_families(text)
               for s in f.samples if s.name == "modelport_requests_total"
               and s.labels.get("route") == route)


async def _post(app: ModelportApp, path: str, body: bytes) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post(path, content=body, headers={"X-Request-ID": "rid-1"})


def test_streamed_answer_from_the_fast_lane_keeps_the_edge_headers() -> None:
    done: list[str] = []
    app, metrics = _app(edge=True, done=done)
    answer = asyncio.run(_post(app, "/stream", b"rows"))
    assert (answer.status_code, answer.text) == (200, "got rows")
    assert answer.headers["x-request-id"] == "rid-1"
    assert _count(metrics, "/stream") == 1


def test_background_task_of_a_fast_answer_runs_after_it() -> None:
    done: list[str] = []
    app, metrics = _app(edge=True, done=done)
    answer = asyncio.run(_post(app, "/later", b"{}"))
    assert (answer.status_code, answer.json()) == (201, {"ok": True})
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-request-id"] == "rid-1"
    assert done == ["ran"]
    assert _count(metrics, "/later") == 1


def test_without_the_edge_the_observer_is_a_middleware() -> None:
    done: list[str] = []
    app, metrics = _app(edge=False, done=done)
    answer = asyncio.run(_post(app, "/later", b"{}"))  # through FastAPI's routing
    assert answer.status_code == 201 and done == ["ran"]
    assert "x-request-id" not in answer.headers
    assert _count(metrics, "/later") == 1
