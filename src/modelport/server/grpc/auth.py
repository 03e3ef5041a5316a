"""API keys on gRPC, from the call's metadata, with the rules of the REST edge.

A key travels as ``authorization: Bearer KEY`` or ``x-api-key: KEY`` metadata. The health
RPCs (``grpc.health.v1`` and ServerLive/ServerReady, as the REST probes) are always open; the
model repository RPCs (index, load, unload) answer only to an admin key and are off
(PERMISSION_DENIED) when none is configured; every other RPC, reflection included, needs a
prediction or an admin key when prediction keys are configured. Keys are compared in constant
time against every configured key and never logged.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio

__all__ = ["ADMIN_METHODS", "OPEN_METHODS", "KeyInterceptor", "Keys", "metadata_key"]

_SERVICE = "/inference.GRPCInferenceService/"
OPEN_METHODS = frozenset({
    "/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch",
    _SERVICE + "ServerLive", _SERVICE + "ServerReady",
})
ADMIN_METHODS = frozenset({
    _SERVICE + "RepositoryIndex", _SERVICE + "RepositoryModelLoad",
    _SERVICE + "RepositoryModelUnload",
})
"""RPCs that change (or list) what is served: they need an admin key."""
_ADMIN_OFF = ("admin RPCs are off: start the server with an admin key "
              "(MODELPORT_ADMIN_KEYS=KEY or --admin-keys-file FILE) and send it as "
              "'authorization: Bearer KEY' metadata")
_NO_KEY = "a valid API key is required ('authorization: Bearer KEY' or 'x-api-key' metadata)"
_NO_ADMIN_KEY = "a valid admin key is required ('authorization: Bearer KEY' metadata)"
_PREDICTION_KEY = "this RPC needs an admin key; a prediction key was given"

if TYPE_CHECKING:  # grpc's classes take type arguments only in its stubs
    Continuation = Callable[[grpc.HandlerCallDetails],
                            Awaitable[grpc.RpcMethodHandler[Any, Any] | None]]


def metadata_key(metadata: Iterable[Any] | None) -> bytes:
    """The key a call carries: ``authorization: Bearer KEY``, else ``x-api-key``."""
    given = b""
    for name, value in metadata or ():
        if isinstance(value, bytes):
            continue
        text = str(value)
        if name == "authorization" and text[:7].lower() == "bearer ":
            return text[7:].strip().encode()
        if name == "x-api-key":
            given = text.encode()
    return given


def _matches(given: bytes, keys: list[bytes]) -> bool:
    ok = False
    for key in keys:  # compare with every key: time does not reveal which matched
        ok |= hmac.compare_digest(given, key)
    return ok


class Keys:
    """Which calls the configured keys let through."""

    def __init__(self, *, api_keys: Iterable[str], admin_keys: Iterable[str]) -> None:
        self.keys = [k.encode() for k in api_keys]
        self.admin_keys = [k.encode() for k in admin_keys]
        self.any_keys = self.keys + self.admin_keys

    def refusal(self, method: str, metadata: Iterable[Any] | None
                ) -> tuple[grpc.StatusCode, str] | None:
        """Why a call of ``method`` with this metadata is refused; None when it may run."""
        if method in OPEN_METHODS:
            return None
        if method in ADMIN_METHODS:
            if not self.admin_keys:
                return grpc.StatusCode.PERMISSION_DENIED, _ADMIN_OFF
            given = metadata_key(metadata)
            if _matches(given, self.admin_keys):
                return None
            if self.keys and _matches(given, self.keys):
                return grpc.StatusCode.PERMISSION_DENIED, _PREDICTION_KEY
            return grpc.StatusCode.UNAUTHENTICATED, _NO_ADMIN_KEY
        if self.keys and not _matches(metadata_key(metadata), self.any_keys):
            return grpc.StatusCode.UNAUTHENTICATED, _NO_KEY
        return None


class KeyInterceptor(aio.ServerInterceptor):
    """Refuses calls without the key their RPC needs (UNAUTHENTICATED, PERMISSION_DENIED).

    Installed only when prediction keys are configured: an interceptor costs every call tens
    of microseconds, and without prediction keys only the admin RPCs need a key, which they
    check themselves (:meth:`Keys.refusal`)."""

    def __init__(self, keys: Keys) -> None:
        self._keys = keys

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """The RPC's own handler, or one that refuses the call."""
        refusal = self._keys.refusal(handler_call_details.method,
                                     handler_call_details.invocation_metadata)
        handler = await continuation(handler_call_details)
        if refusal is None or handler is None:
            return handler
        return _refusing(handler, *refusal)


def _refusing(handler: grpc.RpcMethodHandler[Any, Any], code: grpc.StatusCode,
              message: str) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape as ``handler`` that ends every call with ``code``."""
    async def refuse(_request: Any, context: aio.ServicerContext[Any, Any]) -> None:
        await context.abort(code, message)

    make: Any
    if handler.request_streaming and handler.response_streaming:
        make = grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        make = grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        make = grpc.unary_stream_rpc_method_handler
    else:
        make = grpc.unary_unary_rpc_method_handler
    return make(refuse, request_deserializer=handler.request_deserializer,  # type: ignore[no-any-return]
                response_serializer=handler.response_serializer)
