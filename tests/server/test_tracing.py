"""OpenTelemetry spans of real requests (uvicorn on 127.0.0.1 in this process), collected by
the SDK's in-memory exporter: the caller's trace continued, one child span per stage, the
prediction-log write linked to its requests; nothing when tracing is off; the OTLP exporter
configured by the standard OTEL_* variables."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from modelport.config import Settings
from modelport.server import tracing
from modelport.server.app import create_app
from modelport.server.factory import build_app
from tests.registry.live import serving
from tests.server.conftest import v2_columns

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, into an in-memory exporter, for the apps this test creates."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        yield exporter
    finally:
        tracing.disable()
        provider.shutdown()


def by_name(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for s in exporter.get_finished_spans():
        out.setdefault(s.name, []).append(s)
    return out


def wait_for(exporter: InMemorySpanExporter, name: str, timeout: float = 10) -> ReadableSpan:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = by_name(exporter).get(name)
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no span {name}: {sorted(by_name(exporter))}")


def test_spans_continue_the_callers_trace(spans: InMemorySpanExporter, heart_package: Path,
                                          records: list[dict[str, Any]],
                                          tmp_path: Path) -> None:
    settings = Settings(model=[str(heart_package)], log_db=f"sqlite:///{tmp_path}/log.db",
                        log_spool_dir=tmp_path / "spool")
    app = build_app(settings)
    with serving(app) as url:
        r = httpx.post(f"{url}/models/heart/predict", json={"instances": records[:2]},
                       headers={"traceparent": f"00-{TRACE}-{PARENT}-01",
                                "x-request-id": "traced-1"})
        assert r.status_code == 200
        write = wait_for(spans, "modelport.predlog.write")
    assert r.headers["traceparent"].startswith(f"00-{TRACE}-")  # the answer names the trace
    found = by_name(spans)
    server = found["POST /models/{name}/predict"][0]
    assert server.context.trace_id == int(TRACE, 16)
    assert server.parent is not None and server.parent.span_id == int(PARENT, 16)
    assert server.parent.is_remote
    assert r.headers["traceparent"] == f"00-{TRACE}-{server.context.span_id:016x}-01"
    attrs = server.attributes or {}
    assert attrs["http.route"] == "/models/{name}/predict"
    assert attrs["http.response.status_code"] == 200
    assert (attrs["modelport.request_id"], attrs["modelport.model"]) == ("traced-1", "heart")
    for name in ("modelport.validate", "modelport.queue", "modelport.model"):
        child = found[name][0]
        assert child.context.trace_id == int(TRACE, 16), name
        assert child.parent is not None and child.parent.span_id == server.context.span_id
        assert server.start_time <= child.start_time <= child.end_time <= server.end_time
    queue, model = found["modelport.queue"][0], found["modelport.model"][0]
    assert queue.end_time <= model.start_time + 1000  # the wait, then the call
    assert (model.attributes or {})["modelport.batch.rows"] >= 2
    # the log write is its own trace, linked to the request it wrote
    assert write.parent is None and write.context.trace_id != int(TRACE, 16)
    assert any(link.context.span_id == server.context.span_id for link in write.links)


def test_every_protocol_and_a_new_trace(spans: InMemorySpanExporter, heart_package: Path,
                                        records: list[dict[str, Any]]) -> None:
    from modelport.package import load_model

    app = create_app([load_model(heart_package)], Settings())
    with serving(app) as url:
        fresh = httpx.post(f"{url}/predict", json={"features": records[0]})
        v2 = httpx.post(f"{url}/v2/models/heart/infer", json=v2_columns(records[:3]),
                        headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
        bad = httpx.post(f"{url}/models/heart/predict", json={"instances": [{"age": 1}]},
                         headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
    assert (fresh.status_code, v2.status_code, bad.status_code) == (200, 200, 422)
    found = by_name(spans)
    root = found["POST /predict"][0]
    assert root.parent is None  # no traceparent sent: a new trace, named in the answer
    assert fresh.headers["traceparent"].split("-")[1] == f"{root.context.trace_id:032x}"
    v2_span = found["POST /v2/models/{name}/infer"][0]
    assert v2_span.context.trace_id == int(TRACE, 16)
    kids = [s.name for s in spans.get_finished_spans()
            if s.parent is not None and s.parent.span_id == v2_span.context.span_id]
    assert sorted(kids) == ["modelport.model", "modelport.queue", "modelport.validate"]
    refused = found["POST /models/{name}/predict"][0]  # bad input: validated, never queued
    kids = [s for s in spans.get_finished_spans()
            if s.parent is not None and s.parent.span_id == refused.context.span_id]
    assert [s.name for s in kids] == ["modelport.validate"]
    assert (refused.attributes or {})["http.response.status_code"] == 422


def test_tracing_off_adds_nothing(heart_package: Path, records: list[dict[str, Any]]) -> None:
    from modelport.package import load_model

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))  # made, never enabled
    assert not tracing.ON
    app = create_app([load_model(heart_package)], Settings())
    with serving(app) as url:
        r = httpx.post(f"{url}/predict", json={"features": records[0]},
                       headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
    assert r.status_code == 200 and "traceparent" not in r.headers
    assert exporter.get_finished_spans() == ()
    assert not any(type(m.cls).__name__ == "TracingMiddleware" for m in app.user_middleware)


@pytest.mark.parametrize(("env", "on"), [
    ({}, False),
    ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_SDK_DISABLED": "true"}, False),
])
def test_off_unless_configured(env: dict[str, str], on: bool,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SDK_DISABLED",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert Settings().tracing_on() is on
    assert Settings(tracing="off").tracing_on() is False


class _Collector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver: keeps the bodies posted to /v1/traces."""

    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        if self.path == "/v1/traces":
            type(self).bodies.append(self.rfile.read(length))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_otlp_exporter_from_the_standard_variables(heart_package: Path,
                                                   records: list[dict[str, Any]],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from modelport.package import load_model

    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT",
                       f"http://127.0.0.1:{collector.server_address[1]}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "heart-api")
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    try:
        app = create_app([load_model(heart_package)], Settings())
        assert tracing.ON
        with serving(app) as url:  # shutting down flushes the exporter
            assert httpx.post(f"{url}/predict", json={"features": records[0]},
                              headers={"traceparent": f"00-{TRACE}-{PARENT}-01"}
                              ).status_code == 200
    finally:
        tracing.disable()
        collector.shutdown()
        collector.server_close()
    names, services, traces = set(), set(), set()
    for body in _Collector.bodies:
        message = ExportTraceServiceRequest.FromString(body)
        for rs in message.resource_spans:
            services |= {a.value.string_value for a in rs.resource.attributes
                         if a.key == "service.name"}
            for ss in rs.scope_spans:
                names |= {s.name for s in ss.spans}
                traces |= {s.trace_id.hex() for s in ss.spans}
    assert services == {"heart-api"}
    assert {"POST /predict", "modelport.validate", "modelport.model"} <= names
    assert TRACE in traces
