"""The route table of the prediction routes, and the fast lane that answers them.

Each protocol module declares its prediction routes once, in a :class:`RouteTable`::

    table = RouteTable(router)

    @table.post("/models/{name}/predict", kind="native", summary="...", responses=...)
    async def predict_model(request: Request, name: str) -> Response: ...

That one declaration is both the documented FastAPI route (OpenAPI, ``405`` with ``Allow`` for
the other methods) and a row of the fast lane: the same endpoint, called with the same
arguments. A one-row prediction is cheap enough that FastAPI's own per-request layers (its
error and body-limit middlewares, exception-middleware task wrapping, router matching across
every route, dependency solving) cost more than validating the row and running the model, and
so does every ASGI layer in between (a coroutine and a ``send`` wrapper each). So
:class:`ModelportApp` gives its edge the fast lane and the request observer::

    edge: request id and context, API keys, body limit, request metrics, access log
      -> POST to a route of the table: the fast lane reads the body, calls the endpoint
         and sends its answer (with the edge's headers) straight to the server
      -> every other request: FastAPI (its send wrapped once, for the edge's headers)

An error raised in the fast lane is answered by the exception handlers the app registered, as
FastAPI would: clients cannot tell the two ways apart.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from modelport.server.edge import EdgeMiddleware, RequestObserver

__all__ = ["Endpoint", "FastLane", "JSONBytes", "ModelportApp", "PredictRoute", "RouteTable"]

Endpoint = Callable[..., Awaitable[Response]]
"""``endpoint(request, **path_params) -> response``: a FastAPI endpoint taking the request and
the path's parameters as strings."""


@dataclass(frozen=True)
class PredictRoute:
    """A row of the route table: a POST route whose request body depends on the model."""

    path: str
    """The full template (``/models/{name}/predict``): what request metrics label it with
    (``scope["route"].path``)."""
    endpoint: Endpoint
    kind: str
    """The request schema the OpenAPI document shows for each served model: ``native``,
    ``bulk``, ``v1`` or ``v2``."""
    pattern: re.Pattern[str] | None = field(default=None, compare=False)
    """The path's regular expression (None: the path has no parameter)."""


class RouteTable:
    """The prediction routes of one router, each declared once (see the module doc)."""

    def __init__(self, router: APIRouter) -> None:
        self.router = router
        self.routes: list[PredictRoute] = []

    def post(self, path: str, *, kind: str, summary: str,
             responses: dict[int | str, dict[str, Any]]) -> Callable[[Endpoint], Endpoint]:
        """Declare ``POST path`` (relative to the router's prefix): documented by the router,
        answered by the fast lane."""
        def declare(endpoint: Endpoint) -> Endpoint:
            self.router.add_api_route(path, endpoint, methods=["POST"], summary=summary,
                                      responses=responses)
            full = self.router.prefix + path
            pattern = compile_path(full)[0] if "{" in full else None
            self.routes.append(PredictRoute(full, endpoint, kind, pattern))
            return endpoint

        return declare


class ModelportApp(FastAPI):
    """FastAPI with the fast lane in modelport's edge, before FastAPI's own stack.

    FastAPI's own OpenTelemetry instrumentation is off (modelport's tracing makes the request,
    validation, queue and model spans, :mod:`modelport.server.tracing`), and HTTP requests go
    straight to the middleware stack: FastAPI's ``__call__`` would otherwise ask the
    OpenTelemetry API for the global providers on every request, which reads the environment
    each time (a tenth of a one-row prediction's cost).
    """

    fast_routes: Sequence[PredictRoute] = ()
    """The rows of every route table: answered by the fast lane."""
    modelport_state: Any = None
    """The app's :class:`~modelport.server.state.AppState` (also ``app.state.modelport``)."""
    observer: RequestObserver | None = None
    """Request metrics (``install_observability`` sets it): the edge calls it for every
    request, or, in an app without the edge, a middleware of its own does."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("telemetry", {"tracing": False, "metrics": False, "logs": False,
                                        "operation_spans": False, "auto_configure": False})
        super().__init__(**kwargs)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stack = self.middleware_stack
        if stack is None or scope["type"] != "http":  # the first request, lifespan, websocket
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self  # what Starlette's __call__ sets (request.app)
        if self.root_path:
            scope["root_path"] = self.root_path
        await stack(scope, receive, send)

    def build_middleware_stack(self) -> ASGIApp:
        """The user middleware (tracing, the edge) around FastAPI's own stack; the edge gets
        the fast lane and the request observer."""
        outer, self.user_middleware = self.user_middleware, []
        try:
            app: ASGIApp = super().build_middleware_stack()
        finally:
            self.user_middleware = outer
        layers: list[tuple[Any, Any, dict[str, Any]]] = [(m.cls, m.args, dict(m.kwargs))
                                                         for m in outer]
        if self.observer is not None and not any(c is EdgeMiddleware for c, _, _ in layers):
            app = self.observer.middleware(app)
        lane = FastLane(self, self.fast_routes)
        for cls, args, kwargs in reversed(layers):
            if cls is EdgeMiddleware:
                kwargs.update(lane=lane, observer=self.observer)
            app = cls(app, *args, **kwargs)
        return app


class FastLane:
    """The prediction routes of the route tables, matched and answered without FastAPI's
    routing (see the module doc); the edge calls it."""

    def __init__(self, owner: FastAPI, routes: Sequence[PredictRoute]) -> None:
        self.owner = owner
        self.exact = {r.path: r for r in routes if r.pattern is None}
        self.patterns = [(r.pattern, r) for r in routes if r.pattern is not None]

    def match(self, path: str) -> tuple[PredictRoute, dict[str, Any]] | None:
        """The route of a POST to ``path`` (without the root path) and its parameters."""
        route = self.exact.get(path)
        if route is not None:
            return route, {}
        for pattern, route in self.patterns:
            found = pattern.match(path)
            if found is not None:
                return route, found.groupdict()
        return None

    async def respond(self, scope: Scope, receive: Receive, route: PredictRoute,
                      params: dict[str, Any]) -> Response | None:
        """The answer of ``route``'s endpoint, or of the app's exception handler for what it
        raised, as FastAPI would give; None when the client went away."""
        scope["route"], scope["path_params"] = route, params
        request = Request(scope, receive)
        try:
            request._body = await _read_body(receive)  # what request.body() returns then
            return await route.endpoint(request, **params)
        except ClientDisconnect:
            return None  # nobody to answer
        except Exception as exc:
            answer = self._handler_for(exc)(request, exc)
            response: Response = await answer if inspect.isawaitable(answer) else answer
            return response

    def _handler_for(self, exc: Exception) -> Callable[[Request, Exception], Any]:
        """The app's exception handler for ``exc`` (closest class first), as Starlette picks."""
        handlers = self.owner.exception_handlers
        for cls in type(exc).__mro__:
            if cls in handlers:
                return handlers[cls]
        raise exc  # no handler for Exception itself: the server answers 500


class JSONBytes(Response):
    """A JSON body already encoded (orjson): the headers written at once, without
    :class:`Response`'s general rendering (what every prediction answers with)."""

    media_type = "application/json"

    def __init__(self, body: bytes, status_code: int = 200) -> None:
        self.status_code, self.body, self.background = status_code, body, None
        self.raw_headers = [(b"content-length", str(len(body)).encode("latin-1")),
                            (b"content-type", b"application/json")]


async def _read_body(receive: Receive) -> bytes:
    """The whole request body, as Starlette's ``Request.body`` reads it."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnect
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
