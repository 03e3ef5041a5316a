"""Errors become gRPC status codes here, once (REST translates the same errors to HTTP).

The message is the one the REST V2 route puts in ``{"error": ...}``: bad input names the row
and the field; a server-side failure carries the request id and its traceback goes to the log,
never to the client. Each answer also has the HTTP status REST would give, for the request
metrics, so that the error-rate alert counts gRPC failures as it counts REST ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc

from modelport.errors import InvalidInput, ModelportError, Overloaded

__all__ = ["Refusal", "refusal_of"]

_log = logging.getLogger("modelport")

_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


@dataclass(frozen=True)
class Refusal:
    """How one failed call is answered."""

    code: grpc.StatusCode
    message: str
    http_status: int
    """What REST answers the same error with (the request metrics' ``status``)."""


def refusal_of(exc: BaseException, request_id: str) -> Refusal:
    """The status code and message for ``exc``: a queue that is full is RESOURCE_EXHAUSTED
    (retry later), a model still loading or a server draining UNAVAILABLE, a passed deadline
    DEADLINE_EXCEEDED; anything unexpected INTERNAL, logged with its traceback."""
    if not isinstance(exc, ModelportError):
        _log.error("request %s failed unexpectedly", request_id, exc_info=exc)
        return Refusal(grpc.StatusCode.INTERNAL,
                       f"internal error; quote request id {request_id} when reporting it", 500)
    status = 400 if isinstance(exc, InvalidInput) and exc.status == 422 else exc.status
    if isinstance(exc, Overloaded):
        return Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, exc.message, status)
    code = _CODES.get(status, grpc.StatusCode.INTERNAL)
    if code is grpc.StatusCode.INTERNAL:
        _log.error("request %s failed: %s", request_id, exc.message,
                   exc_info=exc.__cause__ or exc)
        return Refusal(code, f"{exc.message}; quote request id {request_id} when reporting it",
                       status)
    return Refusal(code, exc.message, status)
