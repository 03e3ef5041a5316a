"""OpenTelemetry tracing: off unless configured, and then one trace per request.

Spans (names as exported)::

    POST /models/{name}/predict          SERVER, the whole request (tracing_http.py), child
      |                                  of the caller's W3C ``traceparent`` when it sent one
      +-- modelport.validate             the body decoded and checked against the signature
      +-- modelport.queue                waiting in the micro-batcher for the model call
      +-- modelport.model                the model call that answered (shared by the requests
      |                                  of its micro-batch: batch.requests, batch.rows)
      +-- modelport.cache                instead of the two above when the cache answered
    modelport.predlog.write              a batch of prediction-log rows written (its own
                                         trace, linked to the request span of each row)

The answer carries the request span's ``traceparent`` header, so a client that sent none can
still find the trace. The exporter is configured by the standard ``OTEL_*`` variables (see
:meth:`~modelport.config.Settings.tracing_on`; ``OTEL_TRACES_EXPORTER=otlp|console``, the
OTLP protocol, endpoint and headers, ``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER``,
``OTEL_BSP_*`` are read by the SDK). A process that already set an SDK tracer provider (for
instance under ``opentelemetry-instrument``) keeps it.

Off costs nothing measurable: no span object is made, no middleware is installed, and each
hook on the request's way is one check of the module boolean :data:`ON`::

    with tracing.span("modelport.validate") if tracing.ON else tracing.NOOP:
        batch = ...

The queue and model spans are written after the fact from the micro-batcher's own timing (its
batch hook), so the batcher itself carries no tracing code. This module imports no web
framework: the data plane uses it.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from modelport.batching import BatchStats
from modelport.config import Settings
from modelport.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext, Tracer

__all__ = ["NOOP", "ON", "batch_hook", "configure", "disable", "enable", "infer_spans",
           "predlog_span", "span", "trace_predlog", "tracer"]

ON = False
"""Whether requests are traced: the one check each hook makes."""
NOOP: contextlib.nullcontext[None] = contextlib.nullcontext()
"""What a hook enters when tracing is off (reusable, allocates nothing)."""

_log = logging.getLogger("modelport")
_tracer: Tracer | None = None
_offset_ns = 0
"""``time.time_ns() - perf_counter`` in ns: turns the batcher's clock into span times."""
_batches: dict[int, tuple[BatchStats, float]] = {}
"""Per served model (by id): the last model call's stats and when it was recorded."""
_recent: dict[str, SpanContext] = {}
"""Request span by request id, for the prediction-log spans' links (bounded)."""
_RECENT_MAX = 4096
_MAX_LINKS = 64


def enable(provider: Any = None) -> None:
    """Trace from now on with ``provider`` (an SDK ``TracerProvider``; default: the global
    one). Apps created afterwards get the request middleware."""
    global ON, _tracer, _offset_ns  # noqa: PLW0603 -- one module flag, read by every hook
    from opentelemetry import trace

    _tracer = (provider or trace.get_tracer_provider()).get_tracer("modelport")
    _offset_ns = time.time_ns() - int(time.perf_counter() * 1e9)
    ON = True


def disable() -> None:
    """Stop tracing (spans already ended are exported as the provider does)."""
    global ON, _tracer
    ON, _tracer = False, None
    _batches.clear()
    _recent.clear()


def tracer() -> Tracer:
    """The tracer in use (only while :data:`ON`)."""
    assert _tracer is not None, "tracing is off"
    return _tracer


def configure(settings: Settings) -> Callable[[], object] | None:
    """Turn tracing on when ``settings`` (and the ``OTEL_*`` variables) ask for it; returns
    what flushes and stops the exporter at shutdown, when this call made one. A missing SDK is
    an error with ``tracing=on`` and a warning with ``auto``."""
    if ON or not settings.tracing_on():
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        message = ("tracing is configured but the OpenTelemetry SDK is not installed; install "
                   "it with: pip install 'modelport[otel]'")
        if settings.tracing == "on":
            raise ConfigError(message) from exc
        _log.warning("%s; serving without tracing", message)
        return None
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):  # the process set one up already: use it
        enable(current)
        return None
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "modelport"}))
    provider = TracerProvider(resource=resource)
    for exporter in _exporters(settings):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    enable(provider)
    _log.info("tracing on: exporting spans with %s",
              ", ".join(settings.otel_exporters()) or "no exporter")
    return provider.shutdown


_OTLP = {"otlp-grpc": ("opentelemetry.exporter.otlp.proto.grpc.trace_exporter", "gRPC",
                      "opentelemetry-exporter-otlp-proto-grpc"),
         "otlp-http": ("opentelemetry.exporter.otlp.proto.http.trace_exporter", "HTTP",
                      "opentelemetry-exporter-otlp-proto-http")}
"""OTLP exporters by ``OTEL_TRACES_EXPORTER`` name: module, transport, the package it needs."""


def _exporters(settings: Settings) -> list[Any]:
    out: list[Any] = []
    for name in settings.otel_exporters():
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            out.append(ConsoleSpanExporter())
        elif name in _OTLP:
            module, transport, package = _OTLP[name]
            try:
                exporter = importlib.import_module(module).OTLPSpanExporter
            except ImportError as exc:
                raise ConfigError(f"OTLP over {transport} needs {package}; install it with: "
                                  "pip install 'modelport[otel]'") from exc
            out.append(exporter())
        else:
            raise ConfigError(f"OTEL_TRACES_EXPORTER: unknown exporter '{name}' (modelport "
                              "knows otlp, console and none)")
    return out


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[None]:
    """A child span of the current one around a block (call only while :data:`ON`)."""
    with tracer().start_as_current_span(name, attributes=attributes or None):
        yield


def batch_hook(inner: Callable[[Any, BatchStats], None] | None
               ) -> Callable[[Any, BatchStats], None]:
    """The micro-batcher's batch hook, remembering each model's last call for
    :func:`infer_spans`, then calling ``inner`` (the monitoring hook)."""
    def hook(served: Any, stats: BatchStats) -> None:
        _batches[id(served)] = (stats, time.perf_counter())
        if inner is not None:
            inner(served, stats)

    return hook


def infer_spans(served: Any, request_id: str, started: float) -> None:
    """The queue and model spans of a request that submitted at ``started`` (perf_counter)
    and just got its answer; a cache span when no model call answered it.

    The batcher answers a request's future and then reports its call to the batch hook
    before the request resumes, so the last call recorded for the model when the request
    resumes is the one that answered it."""
    from opentelemetry import trace

    t = tracer()
    now = time.perf_counter()
    current = trace.get_current_span().get_span_context()
    if not current.is_valid:  # no request span (a gRPC call): no orphan spans either
        return
    _remember(request_id, current)
    attrs = {"modelport.model": served.name, "modelport.version": served.version}
    last = _batches.get(id(served))
    if last is None or last[1] < started:
        _timed(t, "modelport.cache", started, now, attrs)
        return
    stats, ended = last
    call = max(started, ended - stats.inference_s)
    _timed(t, "modelport.queue", started, call, attrs)
    _timed(t, "modelport.model", call, ended, {
        **attrs, "modelport.batch.requests": stats.requests, "modelport.batch.rows": stats.rows})


def _timed(t: Tracer, name: str, start: float, end: float, attrs: dict[str, Any]) -> None:
    s = t.start_span(name, attributes=attrs, start_time=_ns(start))
    s.end(end_time=_ns(end))


def _ns(perf: float) -> int:
    return int(perf * 1e9) + _offset_ns


def _remember(request_id: str, context: SpanContext) -> None:
    if len(_recent) >= _RECENT_MAX:
        _recent.pop(next(iter(_recent)), None)
    _recent[request_id] = context


def predlog_span(request_ids: Sequence[str]) -> contextlib.AbstractContextManager[Any]:
    """A span around one batch of prediction-log rows written (its own trace: the write
    serves many requests), linked to the request span of each row still remembered."""
    if not ON:
        return NOOP
    from opentelemetry.context import Context
    from opentelemetry.trace import Link

    links: list[Link] = []
    seen: set[str] = set()
    for rid in request_ids:
        ctx = _recent.get(rid)
        if ctx is not None and rid not in seen and len(links) < _MAX_LINKS:
            seen.add(rid)
            links.append(Link(ctx))
    return tracer().start_as_current_span(
        "modelport.predlog.write", context=Context(), links=links,
        attributes={"modelport.predlog.records": len(request_ids)})


def trace_predlog(predlog: Any) -> None:
    """Give a prediction log (when there is one) its write spans, while tracing is on."""
    if ON and predlog is not None:
        predlog.write_span = predlog_span
