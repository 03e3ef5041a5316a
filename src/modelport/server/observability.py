"""Request metrics, ``GET /metrics`` and ``POST /feedback`` for a modelport FastAPI app.

:func:`install_observability` adds a pure ASGI middleware that counts every HTTP request by its
route *template* (``/models/{name}/predict``, never the raw URL, so label cardinality stays
bounded), its status and its model/version, times it and tracks requests in flight. The model
and version are those of the request's
:class:`~modelport.server.dataplane.RequestContext` (the data plane fills it; a handler can
with :func:`tag_request`); in an app of your own without modelport's edge, setting
``request.state.model`` and ``request.state.version`` works too; otherwise the path parameters
``name``/``model_name`` and ``version``/``model_version`` are used.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictBool, StrictFloat, StrictInt, StrictStr
from starlette.requests import Request
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelport.monitoring.metrics import Metrics
from modelport.monitoring.predlog import PredictionLog
from modelport.server.edge import context_of, request_context
from modelport.server.fastlane import ModelportApp
from modelport.server.schemas import answers

if TYPE_CHECKING:
    from modelport.server.state import AnswerHook

__all__ = ["Feedback", "ObservabilityMiddleware", "Observer", "install_observability",
           "tag_request"]

UNMATCHED = "unmatched"
"""Route label of requests no route matched (404s on made-up paths)."""

OnRequest = Callable[[str, str, int, float], None]
"""``(model, version, status, seconds)`` after each request, e.g. ``WebhookAlerter.observe``."""

# without a context naming the model: request.state keys of apps of your own, then path
# parameters
_MODEL_KEYS = ("model", "name", "model_name")
_VERSION_KEYS = ("version", "model_version")


def tag_request(request: Request, model: str, version: str) -> None:
    """Record which model version answered this request (for the request metrics' labels)."""
    ctx = request_context(request)
    ctx.model, ctx.version = model, version


class Feedback(BaseModel):
    """The body of ``POST /feedback``: the true label of a row of an earlier request."""

    request_id: Annotated[str, Field(min_length=1, max_length=128)]
    """The ``request_id`` the prediction response carried (header ``x-request-id``)."""
    label: StrictBool | StrictInt | StrictFloat | StrictStr
    """The true label (a class label or a numeric target)."""
    row: Annotated[int, Field(ge=0)] = 0
    """Which row of the request the label belongs to."""


class Observer:
    """Counts, times and tracks in-flight HTTP requests per route template: what
    :class:`ObservabilityMiddleware` does around an app, callable by modelport's edge directly
    (one middleware layer less on every request)."""

    def __init__(
        self,
        *,
        metrics: Metrics,
        routes: Callable[[], list[BaseRoute]],
        exclude: frozenset[str] = frozenset(),
        on_request: OnRequest | None = None,
        answered: list[AnswerHook] | None = None,
    ) -> None:
        self.metrics, self._routes = metrics, routes
        self._exclude, self._on_request = exclude, on_request
        self._answered = answered if answered is not None else []
        self._templates: dict[tuple[str, str, str], str] = {}

    def started(self, scope: Scope, route: str | None = None) -> str | None:
        """A request begins: its route template (``route`` when the caller matched it
        already), or None when requests of that route are not observed (``/metrics``)."""
        if route is None:
            route = self._template(scope)
        if route in self._exclude:
            return None
        self.metrics.request_started(route)
        return route

    def finished(self, scope: Scope, route: str, status: int, seconds: float) -> None:
        """The request of :meth:`started` ended with ``status`` after ``seconds``."""
        self.metrics.request_finished(route)
        matched = getattr(scope.get("route"), "path", None)  # set by the router
        if matched is not None and matched != route:
            route = self._learn(scope, str(matched))
        model, version = _model_version(scope)
        self.metrics.observe_request(model, version, route, status, seconds)
        if self._on_request is not None:
            self._on_request(*self.metrics.labels_for(model, version), status, seconds)
        if self._answered:
            ctx = context_of(scope)
            if ctx is not None and ctx.model is not None:
                for hook in self._answered:
                    hook(ctx, status, seconds)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """This observer as a middleware around ``app`` (an app without modelport's edge)."""
        wrapped = ObservabilityMiddleware.__new__(ObservabilityMiddleware)
        wrapped.app, wrapped.observer = app, self
        return wrapped

    def _template(self, scope: Scope) -> str:
        key = (scope["method"], scope.get("root_path", ""), scope["path"])
        found = self._templates.get(key)
        if found is None:
            found = self._match(scope)
            if len(self._templates) >= 4096:  # made-up paths must not grow memory
                self._templates.clear()
            self._templates[key] = found
        return found

    def _learn(self, scope: Scope, template: str) -> str:
        """Remember the template the router matched (included routers hide it from
        ``matches``), so the next request of this path is labelled right from the start."""
        self._templates[(scope["method"], scope.get("root_path", ""), scope["path"])] = template
        return template

    def _match(self, scope: Scope) -> str:
        partial = None
        for route in self._routes():
            match, child = route.matches(scope)
            # an included router answers with the matched route in its child scope
            path = str(getattr(child.get("route", route), "path", UNMATCHED))
            if match == Match.FULL:
                return path
            if match == Match.PARTIAL and partial is None:  # path matched, method did not
                partial = path
        return partial or UNMATCHED


class ObservabilityMiddleware:
    """An :class:`Observer` around an app (modelport's own app calls it from the edge)."""

    def __init__(self, app: ASGIApp, /, **options: Any) -> None:
        self.app, self.observer = app, Observer(**options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.observer.started(scope) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        status = 500  # what an exception escaping the app turns into

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.observer.finished(scope, route, status, time.perf_counter() - start)


def _model_version(scope: Scope) -> tuple[str, str]:
    ctx = context_of(scope)
    if ctx is not None and ctx.model is not None:
        return ctx.model, ctx.version or ""
    state: dict[str, Any] = scope.get("state") or {}
    params: dict[str, Any] = scope.get("path_params") or {}
    model = next((str(d[k]) for k in _MODEL_KEYS for d in (state, params) if k in d), "")
    version = next((str(d[k]) for k in _VERSION_KEYS for d in (state, params) if k in d), "")
    return model, version


def install_observability(
    app: FastAPI,
    *,
    metrics: Metrics,
    predlog: PredictionLog | None = None,
    on_request: OnRequest | None = None,
    answered: list[AnswerHook] | None = None,
    metrics_path: str = "/metrics",
    feedback_path: str = "/feedback",
) -> None:
    """Add the request-metrics middleware, ``GET /metrics`` and (with a prediction log)
    ``POST /feedback`` to ``app``. Call before the app starts serving."""

    def get_metrics() -> Response:  # sync: FastAPI runs it in a thread (multiprocess file reads)
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    app.add_api_route(
        metrics_path, get_metrics, methods=["GET"], include_in_schema=False, tags=["monitoring"]
    )
    if predlog is not None:
        _add_feedback(app, predlog, feedback_path)
    options: dict[str, Any] = {"metrics": metrics, "routes": lambda: app.router.routes,
                               "exclude": frozenset({metrics_path}), "on_request": on_request,
                               "answered": answered}
    if isinstance(app, ModelportApp):  # its edge observes each request itself
        app.observer = Observer(**options)
    else:
        app.add_middleware(ObservabilityMiddleware, **options)


def _add_feedback(app: FastAPI, predlog: PredictionLog, path: str) -> None:
    async def post_feedback(feedback: Feedback) -> JSONResponse:
        """Store the true label of an earlier prediction (joined later for realized accuracy).
        Labels for unknown request ids are stored too: the prediction may still be queued."""
        if not predlog.record_feedback(feedback.request_id, feedback.label, row=feedback.row):
            return JSONResponse(
                {"error": "the prediction log queue is full; retry later"},
                status_code=503,
                headers={"Retry-After": "1"},
            )
        return JSONResponse({"accepted": True, "request_id": feedback.request_id}, 202)

    app.add_api_route(
        path, post_feedback, methods=["POST"], status_code=202, tags=["monitoring"],
        summary="Report the true label of a prediction", responses=answers(None, 422, 503),
    )  # fmt: skip
