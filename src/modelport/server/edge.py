"""The server's edge, as one pure ASGI middleware: request id, API keys, body limit, access log.

Two kinds of key: prediction keys (``api_keys``; when none is set, prediction routes are open)
and admin keys (``admin_keys``). Every route that changes what is served — the admin API under
``/admin`` and the V2 repository extension under ``/v2/repository`` — answers only to an admin
key, and with no admin key configured those routes are off (403): reaching the port is never
enough to load, unload or reroute a model. An admin key also works wherever a prediction key
does. Keys are compared in constant time against every configured key and never logged.

The edge makes each request's :class:`~modelport.server.dataplane.RequestContext` (its id and
headers); the route fills it (model, version, traffic arm) and the edge reads it back for the
``x-model-*`` answer headers and the access log. Handlers reach it with
:func:`request_context`; nothing else about a request travels in the ASGI scope.

Pure ASGI (not ``BaseHTTPMiddleware``) because it runs on every request: no extra task, no
response buffering.
"""

from __future__ import annotations

import hmac
import itertools
import time
import uuid
from collections.abc import Iterable
from typing import Any, Protocol

import orjson
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelport.errors import PayloadTooLarge
from modelport.server.accesslog import access_log
from modelport.server.dataplane import RequestContext

__all__ = ["ADMIN_PREFIXES", "OPEN_PATHS", "EdgeMiddleware", "Lane", "RequestObserver",
           "context_of", "is_admin_path", "request_context", "route_path"]

OPEN_PATHS = frozenset({"/health", "/ready", "/v2/health/live", "/v2/health/ready", "/ping"})
ADMIN_PREFIXES = ("/admin", "/v2/repository")
"""Routes under these prefixes change what is served: they need an admin key."""
_ADMIN_OFF = ("admin routes are off: start the server with an admin key "
              "(MODELPORT_ADMIN_KEYS=KEY or --admin-keys-file FILE) and send it as "
              "Authorization: Bearer KEY")
_KEY_HEADERS = [(b"www-authenticate", b"Bearer")]
_CONTEXT = "modelport.context"
"""The one scope key modelport sets: the request's :class:`RequestContext`."""


def context_of(scope: Scope) -> RequestContext | None:
    """The request's context, as the edge made it (None: no edge saw the request)."""
    ctx: RequestContext | None = scope.get(_CONTEXT)
    return ctx


def request_context(request: Request) -> RequestContext:
    """The context of ``request``; made here when no edge made one (an app without it)."""
    ctx: RequestContext | None = request.scope.get(_CONTEXT)
    if ctx is None:
        ctx = request.scope[_CONTEXT] = RequestContext(uuid.uuid4().hex, "",
                                                       Headers(scope=request.scope))
    return ctx


class RequestObserver(Protocol):
    """Request metrics, as the edge calls them (:class:`~modelport.server.observability.
    Observer`)."""

    def started(self, scope: Scope, route: str | None = None) -> str | None:
        """A request begins: its route template, or None when it is not observed."""

    def finished(self, scope: Scope, route: str, status: int, seconds: float) -> None:
        """It ended."""

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """The observer as a middleware of its own."""


class Lane(Protocol):
    """The fast lane, as the edge calls it (:class:`~modelport.server.fastlane.FastLane`)."""

    def match(self, path: str) -> tuple[Any, dict[str, Any]] | None:
        """The fast route of a POST to ``path``, with its parameters."""

    async def respond(self, scope: Scope, receive: Receive, route: Any,
                      params: dict[str, Any]) -> Response | None:
        """Its answer (None: the client went away)."""


class EdgeMiddleware:
    """Tag each request with an id, check its API key and body size, observe it (request
    metrics), answer the fast lane's routes, log one JSON line."""

    def __init__(self, app: ASGIApp, *, api_keys: Iterable[str] = (),
                 admin_keys: Iterable[str] = (), max_body_bytes: int,
                 open_paths: Iterable[str] = OPEN_PATHS, lane: Lane | None = None,
                 observer: RequestObserver | None = None) -> None:
        self.app = app
        self.admin_keys = [k.encode() for k in admin_keys]
        self.keys = [k.encode() for k in api_keys]
        self.any_keys = self.keys + self.admin_keys
        self.max_body = max_body_bytes
        self.open_paths = frozenset(open_paths)
        self.lane, self.observer = lane, observer
        # ids: a random prefix per app (per worker process) and a counter, as unique as uuid4
        # and without a system call per request
        self._id_prefix = uuid.uuid4().hex[:16]
        self._id_counter = itertools.count()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        raw = scope["headers"]
        headers = dict(raw)
        given = headers.get(b"x-request-id")
        rid = (given.decode("latin-1")[:128] if given else "") or self._new_id()
        ctx = scope[_CONTEXT] = RequestContext(rid, "", Headers(raw=raw))
        status = 500
        route: str | None = None
        path = route_path(scope)
        try:
            refusal = self._refusal(path, headers)
            if refusal is not None:  # refused requests are not in the request metrics
                status = refusal[0]
                await _send_json(send, status, refusal[1], [*refusal[2], *_answer_headers(ctx)])
                return
            # a declared length was checked above and the server reads no more than it
            limited = receive if b"content-length" in headers else self._limited(receive)
            lane, observer = self.lane, self.observer
            hit = lane.match(path) if lane is not None and scope["method"] == "POST" else None
            if observer is not None:
                route = observer.started(scope, None if hit is None else hit[0].path)
            if hit is None:
                async def send_with_id(message: Message) -> None:
                    nonlocal status
                    if message["type"] == "http.response.start":
                        status = message["status"]
                        message["headers"] = [*message.get("headers", ()),
                                              *_answer_headers(ctx)]
                    await send(message)

                await self.app(scope, limited, send_with_id)
                return
            assert lane is not None
            response = await lane.respond(scope, limited, *hit)
            if response is None:
                return  # the client went away: nobody to answer
            body = getattr(response, "body", None)
            if not isinstance(body, bytes):  # a streamed answer: sent by the response itself
                status = response.status_code
                await response(scope, limited, _adding_headers(send, ctx))
                return
            status = response.status_code
            await send({"type": "http.response.start", "status": status,
                        "headers": [*response.raw_headers, *_answer_headers(ctx)]})
            await send({"type": "http.response.body", "body": body})
            if response.background is not None:
                await response.background()
        finally:
            seconds = time.perf_counter() - started
            if route is not None:
                assert self.observer is not None
                self.observer.finished(scope, route, status, seconds)
            access_log.request(scope["method"], scope["path"], status, seconds,
                               request_id=rid, model=ctx.model, version=ctx.version)

    def _new_id(self) -> str:
        return f"{self._id_prefix}{next(self._id_counter):016x}"

    def _refusal(self, path: str, headers: dict[bytes, bytes]) -> tuple[int, str, Any] | None:
        if is_admin_path(path):
            refusal = self._admin_refusal(headers)
            if refusal is not None:
                return refusal
        elif self.keys and path not in self.open_paths and not _matches(headers,
                                                                         self.any_keys):
            return 401, ("a valid API key is required (Authorization: Bearer KEY or "
                         "X-API-Key)"), _KEY_HEADERS
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return 413, (f"the body has {int(length)} bytes, more than the limit of "
                         f"{self.max_body}; split it or raise MODELPORT_MAX_BODY_BYTES"), []
        return None

    def _admin_refusal(self, headers: dict[bytes, bytes]) -> tuple[int, str, Any] | None:
        if not self.admin_keys:
            return 403, _ADMIN_OFF, []
        if _matches(headers, self.admin_keys):
            return None
        if self.keys and _matches(headers, self.keys):
            return 403, "this route needs an admin key; a prediction key was given", []
        return 401, "a valid admin key is required (Authorization: Bearer KEY)", _KEY_HEADERS

    def _limited(self, receive: Receive) -> Receive:
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise PayloadTooLarge(f"the body is larger than the limit of "
                                          f"{self.max_body} bytes")
            return message

        return limited


def route_path(scope: Scope) -> str:
    """The path the routes see: without the ``root_path`` prefix (``--root-path``; uvicorn
    puts it in front of the path), so that keys are checked on what is routed."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and (path == root or path.startswith(root + "/")):
        return path[len(root):] or "/"
    return path


def is_admin_path(path: str) -> bool:
    """Whether ``path`` changes what is served (it needs an admin key)."""
    return path.startswith(ADMIN_PREFIXES) and any(  # the first test rules out most paths
        path == p or path.startswith(p + "/") for p in ADMIN_PREFIXES)


def _matches(headers: dict[bytes, bytes], keys: list[bytes]) -> bool:
    given = headers.get(b"x-api-key", b"")
    auth = headers.get(b"authorization", b"")
    if auth[:7].lower() == b"bearer ":
        given = auth[7:].strip()
    ok = False
    for key in keys:  # compare with every key: time does not reveal which matched
        ok |= hmac.compare_digest(given, key)
    return ok


def _answer_headers(ctx: RequestContext) -> list[tuple[bytes, bytes]]:
    """``x-request-id``, and ``x-model-name``/``-version``/``-arm`` once a model answered."""
    added = [(b"x-request-id", ctx.request_id.encode("latin-1"))]
    model, version, arm = ctx.model, ctx.version, ctx.arm
    if model is not None and version is not None:
        added += [(b"x-model-name", model.encode()), (b"x-model-version", version.encode())]
        if arm is not None:
            added.append((b"x-model-arm", arm.encode()))
    return added


def _adding_headers(send: Send, ctx: RequestContext) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), *_answer_headers(ctx)]
        await send(message)

    return sending


async def _send_json(send: Send, status: int, message: str, headers: list[Any]) -> None:
    body = orjson.dumps({"error": message})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})
