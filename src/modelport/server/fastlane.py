"""The fast lane: prediction routes answered beneath the edge, above FastAPI.

A one-row prediction is cheap enough that FastAPI's own per-request layers (its error and
body-limit middlewares, exception-middleware task wrapping, router matching across every route,
dependency solving) cost more than validating the row and running the model. :class:`ModelportApp`
therefore builds its middleware stack as::

    edge (request id, API keys, body limit, access log)
      -> observability (request metrics)
        -> fast lane: POST /predict, /models/{name}[/versions/{v}]/predict,
                      /v2/models/{name}[/versions/{v}]/infer, /v1/models/{name}:predict
          -> FastAPI (every other route, and the OpenAPI documentation of the ones above)

The fast lane calls the same handlers as the documented routes, and an error raised there is
answered by the same exception handlers the app registered: clients cannot tell the lanes apart.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["FastRoute", "Handler", "ModelportApp"]

Handler = Callable[[Request, str | None, str | None], Awaitable[Response]]
"""``(request, name, version) -> response``; ``name``/``version`` from the path or ``None``."""


@dataclass(frozen=True)
class FastRoute:
    """A POST route of the fast lane. ``path`` is the template (``/models/{name}/predict``),
    which is also what request metrics label the request with (``scope["route"].path``)."""

    path: str
    handler: Handler


class ModelportApp(FastAPI):
    """FastAPI with the fast lane between the user middleware and FastAPI's own stack."""

    fast_routes: Sequence[FastRoute] = ()

    def build_middleware_stack(self) -> ASGIApp:
        """Edge and observability outermost, then the fast lane, then FastAPI's stack."""
        outer, self.user_middleware = self.user_middleware, []
        try:
            app: ASGIApp = _FastLane(super().build_middleware_stack(), self, self.fast_routes)
        finally:
            self.user_middleware = outer
        for cls, args, kwargs in reversed(outer):
            app = cls(app, *args, **kwargs)
        return app


class _FastLane:
    def __init__(self, app: ASGIApp, owner: FastAPI, routes: Sequence[FastRoute]) -> None:
        self.app, self.owner = app, owner
        self.exact = {r.path: r for r in routes if "{" not in r.path}
        self.patterns: list[tuple[re.Pattern[str], FastRoute]] = [
            (compile_path(r.path)[0], r) for r in routes if "{" in r.path]

    def _match(self, path: str) -> tuple[FastRoute, dict[str, Any]] | None:
        route = self.exact.get(path)
        if route is not None:
            return route, {}
        for pattern, route in self.patterns:
            found = pattern.match(path)
            if found is not None:
                return route, found.groupdict()
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hit = (self._match(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST"
               else None)
        if hit is None:
            await self.app(scope, receive, send)
            return
        route, params = hit
        scope["route"], scope["path_params"] = route, params
        request = Request(scope, receive)
        try:
            response = await route.handler(request, params.get("name"), params.get("version"))
        except ClientDisconnect:
            return  # nobody to answer
        except Exception as exc:
            answer = self._handler_for(exc)(request, exc)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> Callable[[Request, Exception], Any]:
        """The app's exception handler for ``exc`` (closest class first), as Starlette picks."""
        handlers = self.owner.exception_handlers
        for cls in type(exc).__mro__:
            if cls in handlers:
                return handlers[cls]
        raise exc  # no handler for Exception itself: the server answers 500
