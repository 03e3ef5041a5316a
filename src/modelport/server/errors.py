"""Errors become HTTP answers here, once: status from the error, body by protocol.

Native and V1 routes answer ``{"error", "field", "row", "request_id"}`` with the error's status
(bad input 422); V2 routes answer ``{"error": "..."}`` with 400 for bad input, as the Open
Inference Protocol says; the MLflow scoring routes (``/invocations``) answer
``{"error_code", "message"}`` with 400 for bad input, as an MLflow scoring server. Anything
unexpected is a 500 that carries the request id and is
logged with its traceback — the client never sees a stack trace.

The framework's own answers get the same bodies: an unknown path (404), a body that fails a
route's pydantic model (422/400, naming the field), and a method the path does not take (405,
whose ``Allow`` lists the methods of the path's most specific route template — the methods the
OpenAPI document gives that path).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterator, Sequence
from typing import Any

import fastapi.routing
import orjson
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, compile_path

from modelport.errors import InvalidInput, ModelportError, Overloaded
from modelport.server.edge import context_of, route_path

__all__ = ["allowed_methods", "install_error_handlers", "is_mlflow", "is_v2", "mlflow_code"]

_log = logging.getLogger("modelport")


def is_v2(path: str) -> bool:
    """Whether ``path`` answers errors the V2 way (``{"error"}`` only, 400 for bad input)."""
    return path.startswith("/v2/")


def is_mlflow(path: str) -> bool:
    """Whether ``path`` is an MLflow scoring route, which answers errors the MLflow way
    (``{"error_code", "message"}``, 400 for bad input)."""
    return path == "/invocations" or (path.startswith("/models/")
                                      and path.endswith("/invocations"))


_MLFLOW_CODES = {400: "BAD_REQUEST", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                 404: "RESOURCE_DOES_NOT_EXIST", 405: "BAD_REQUEST", 413: "BAD_REQUEST",
                 415: "BAD_REQUEST", 429: "REQUEST_LIMIT_EXCEEDED", 500: "INTERNAL_ERROR",
                 501: "NOT_IMPLEMENTED", 503: "TEMPORARILY_UNAVAILABLE",
                 504: "DEADLINE_EXCEEDED"}


def mlflow_code(status: int) -> str:
    """MLflow's ``error_code`` for an HTTP status."""
    return _MLFLOW_CODES.get(status, "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR")


def _request_id(request: Request) -> str | None:
    ctx = context_of(request.scope)
    return None if ctx is None else ctx.request_id


def _body(request: Request, status: int, message: str, extra: dict[str, Any]) -> Response:
    rid = _request_id(request)
    if is_mlflow(route_path(request.scope)):
        return Response(orjson.dumps({"error_code": mlflow_code(status), "message": message}),
                        status_code=status, media_type="application/json")
    payload: dict[str, Any] = {"error": message}
    if not is_v2(request.url.path):
        payload |= {k: v for k, v in extra.items() if v is not None}
        payload["request_id"] = rid
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


async def modelport_error(request: Request, exc: Exception) -> Response:
    """Translate a :class:`ModelportError` (status as data on the error)."""
    assert isinstance(exc, ModelportError)
    status = exc.status
    extra: dict[str, Any] = {}
    if isinstance(exc, InvalidInput):
        extra = {"field": exc.field, "row": exc.row}
        if status == 422 and (is_v2(request.url.path) or is_mlflow(route_path(request.scope))):
            status = 400
    message = exc.message
    if status >= 500 and not isinstance(exc, Overloaded):
        rid = _request_id(request) or "-"
        _log.error("request %s failed: %s", rid, message, exc_info=exc.__cause__ or exc)
        message = f"{message}; quote request id {rid} when reporting it"
    response = _body(request, status, message, extra)
    if isinstance(exc, Overloaded):
        response.headers["retry-after"] = str(max(1, round(exc.retry_after)))
    return response


async def unexpected_error(request: Request, exc: Exception) -> Response:
    """A bug or a model failure: 500 with the request id; the traceback goes to the log."""
    rid = _request_id(request) or "-"
    _log.error("request %s failed unexpectedly", rid, exc_info=exc)
    return _body(request, 500, f"internal error; quote request id {rid} when reporting it", {})


async def http_error(request: Request, exc: Exception) -> Response:
    """The router's own refusals: unknown path (404), method not allowed (405, with the
    ``Allow`` of :func:`allowed_methods`)."""
    assert isinstance(exc, HTTPException)
    path = request.url.path
    if exc.status_code == 405:
        methods = ", ".join(allowed_methods(request.app.router.routes, path))
        response = _body(request, 405, f"{path} does not take {request.method}; it takes "
                                       f"{methods}", {})
        response.headers["allow"] = methods
        return response
    if exc.status_code == 400:  # FastAPI could not parse a body its route validates
        return await modelport_error(request, InvalidInput(f"{exc.detail}: send a JSON object"))
    message = f"no route {path} (see /docs)" if exc.status_code == 404 else str(exc.detail)
    response = _body(request, exc.status_code, message, {})
    response.headers.update(exc.headers or {})
    return response


async def validation_error(request: Request, exc: Exception) -> Response:
    """A body that fails a route's pydantic model: 422 (400 on V2) naming the field."""
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = [str(p) for p in first.get("loc", ()) if p not in ("body", "path", "query")]
    field = ".".join(where) or None
    error = InvalidInput(str(first.get("msg", "invalid value")), field=field)
    return await modelport_error(request, error)


def allowed_methods(routes: Sequence[BaseRoute], path: str) -> list[str]:
    """The methods ``path`` takes: those of its most specific matching route template (the
    one with the most literal characters, as a concrete OpenAPI path beats a templated one:
    ``/v1/models/{name}:predict`` over ``/v1/models/{name}``), sorted."""
    best, methods = -1, set[str]()
    for template, taken in _flat_routes(routes):
        if not _compiled(template).match(path):
            continue
        literal = len(re.sub(r"{[^}]*}", "", template))
        if literal > best:
            best, methods = literal, set()
        if literal == best:
            methods |= taken
    return sorted(methods)


def _flat_routes(routes: Sequence[BaseRoute]) -> Iterator[tuple[str, set[str]]]:
    """(path template, methods) of every route, those of included routers too (recent FastAPI
    keeps an included router as one route: its ``iter_route_contexts`` flattens them)."""
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    for route in flatten(routes) if flatten is not None else routes:
        template, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if isinstance(template, str) and methods:
            yield template, set(methods)


@functools.lru_cache(maxsize=512)
def _compiled(template: str) -> re.Pattern[str]:
    return compile_path(template)[0]


def install_error_handlers(app: Any) -> None:
    """Register the translations on a Starlette/FastAPI app."""
    app.add_exception_handler(ModelportError, modelport_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected_error)
