"""Errors become HTTP answers here, once: status from the error, body by protocol.

Native and V1 routes answer ``{"error", "field", "row", "request_id"}`` with the error's status
(bad input 422); V2 routes answer ``{"error": "..."}`` with 400 for bad input, as the Open
Inference Protocol says. Anything unexpected is a 500 that carries the request id and is
logged with its traceback — the client never sees a stack trace.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from modelport.errors import InvalidInput, ModelportError, Overloaded

__all__ = ["install_error_handlers"]

_log = logging.getLogger("modelport")


def _body(request: Request, status: int, message: str, extra: dict[str, Any]) -> Response:
    rid = getattr(request.state, "request_id", None)
    payload: dict[str, Any] = {"error": message}
    if not request.url.path.startswith("/v2/"):
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
        if request.url.path.startswith("/v2/") and status == 422:
            status = 400
    message = exc.message
    if status >= 500 and not isinstance(exc, Overloaded):
        rid = getattr(request.state, "request_id", "-")
        _log.error("request %s failed: %s", rid, message, exc_info=exc.__cause__ or exc)
        message = f"{message}; quote request id {rid} when reporting it"
    response = _body(request, status, message, extra)
    if isinstance(exc, Overloaded):
        response.headers["retry-after"] = str(max(1, round(exc.retry_after)))
    return response


async def unexpected_error(request: Request, exc: Exception) -> Response:
    """A bug or a model failure: 500 with the request id; the traceback goes to the log."""
    rid = getattr(request.state, "request_id", "-")
    _log.error("request %s failed unexpectedly", rid, exc_info=exc)
    return _body(request, 500, f"internal error; quote request id {rid} when reporting it", {})


def install_error_handlers(app: Any) -> None:
    """Register the translations on a Starlette/FastAPI app."""
    app.add_exception_handler(ModelportError, modelport_error)
    app.add_exception_handler(Exception, unexpected_error)
