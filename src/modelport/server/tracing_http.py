"""The request span of every HTTP request, as a pure ASGI middleware (installed only while
tracing is on; see :mod:`modelport.server.tracing`).

It sits outside the edge, so the span covers key checks and refusals too. The caller's W3C
``traceparent`` (and ``tracestate``; any propagator ``OTEL_PROPAGATORS`` names) becomes the
parent; the span is current while the app runs (the data plane's spans are its children); the
answer carries the span's own ``traceparent``. The span is named after the route *template*
(``POST /models/{name}/predict``) once the route is known, and carries the status, the request
id and the model version that answered.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelport.server import tracing
from modelport.server.edge import context_of

__all__ = ["TracingMiddleware"]


class TracingMiddleware:
    """One SERVER span per HTTP request, continuing the caller's trace."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not tracing.ON:
            await self.app(scope, receive, send)
            return
        carrier = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope["headers"]}
        parent = propagate.extract(carrier)
        method = scope["method"]
        span = tracing.tracer().start_span(
            f"{method} {scope['path']}", context=parent, kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"],
                        "url.scheme": scope.get("scheme", "http")})
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        status = 500

        async def send_traced(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()),
                                      (b"traceparent", _traceparent(span).encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_traced)
        except Exception as exc:
            span.record_exception(exc)
            raise
        finally:
            _finish(span, scope, method, status)
            otel_context.detach(token)


def _finish(span: Any, scope: Scope, method: str, status: int) -> None:
    route = getattr(scope.get("route"), "path", None)
    if route is not None:
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", str(route))
    span.set_attribute("http.response.status_code", status)
    ctx = context_of(scope)
    if ctx is not None:
        span.set_attribute("modelport.request_id", ctx.request_id)
        if ctx.model is not None:
            span.set_attribute("modelport.model", ctx.model)
            span.set_attribute("modelport.version", ctx.version or "")
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
    span.end()


def _traceparent(span: Any) -> str:
    c = span.get_span_context()
    return f"00-{c.trace_id:032x}-{c.span_id:016x}-{int(c.trace_flags):02x}"
