"""Where a modelport request's time goes: the parts ``serving.py`` times in its own process.

For one request body (native ``{"features": ...}``/``{"instances": ...}`` or V2 JSON tensors),
each part is modelport's own function on that body, timed with :mod:`timeit` (best of 5, in
microseconds per call), on the model the server serves (``load_model(pkg)``, ONNX runtime):

- ``parse``: ``orjson.loads`` and ``numbers_only`` of the body (what the native endpoint's
  ``read_native`` does), or ``v2codec.decode_request``;
- ``validate``: ``native.native_batch`` with the model's signature, or ``v2codec.to_columns``
  (the server's default settings: unseen categories rejected, 10,000 rows at most);
- ``encode``: ``native.native_response``, or ``v2codec.encode_response`` and the ``Response``
  the V2 endpoint wraps it in, on the model's real outputs for the body's rows;
- ``metrics``: ``Metrics.request_started``, ``observe_request``, ``request_finished`` and
  ``on_prediction`` on a fresh ``Metrics()`` with the model registered;
- ``log``: ``access_log.request`` and ``access_log.flush`` into the file handler
  ``configure_logging(log_file=...)`` installs (one write per line: a loaded server writes the
  lines of an event-loop turn together, so this is the most a line costs).

The rest of the split (HTTP, queue, model, other) comes from the servers' measurements
(:func:`split_row`).
"""

from __future__ import annotations

import time
import timeit
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

PARTS = ("http", "parse", "validate", "queue", "model", "encode", "metrics", "log", "other")
"""The columns of the split, in order; ``other`` is the residual."""
TIMED = ("parse", "validate", "encode", "metrics", "log")
"""The parts timed here."""
ROUTES = {"native": "/predict", "v2": "/v2/models/{name}/infer"}
"""The route template each body kind is counted under (the request metrics' label)."""


def best_us(fn: Callable[[], object], *, target_s: float = 0.05, repeat: int = 5) -> float:
    """Microseconds per call of ``fn``: the best of ``repeat`` runs of about ``target_s``."""
    started = time.perf_counter()
    for _ in range(10):
        fn()
    each = max((time.perf_counter() - started) / 10, 1e-7)
    number = max(1, int(target_s / each))
    return min(timeit.Timer(fn).repeat(repeat, number)) / number * 1e6


def time_parts(pkg: Path, bodies: dict[tuple[str, int], bytes],
               log_file: Path) -> dict[tuple[str, int], dict[str, float]]:
    """µs per call of every timed part, for each ``(kind, rows)`` body (kind ``native`` or
    ``v2``)."""
    from modelport.monitoring.metrics import Metrics
    from modelport.package import load_model
    from modelport.server.accesslog import access_log
    from modelport.server.logs import configure_logging

    loaded = load_model(pkg, runtime="onnx")
    configure_logging(log_file=log_file)
    metrics = Metrics()
    metrics.set_model_info(loaded.name, loaded.version, flavor="onnx")
    out = {}
    for (kind, rows), body in bodies.items():
        parts = _parse_validate_encode(loaded, kind, body)
        batch, outputs = parts.pop("_batch"), parts.pop("_outputs")
        parts["metrics"] = best_us(_metrics_call(metrics, loaded, kind, batch, outputs))
        route = ROUTES[kind].replace("{name}", loaded.name)

        def log(route: str = route) -> None:
            access_log.request("POST", route, 200, 0.001, request_id="0123456789abcdef",
                               model=loaded.name, version=loaded.version)
            access_log.flush()

        parts["log"] = best_us(log)
        out[(kind, rows)] = parts
    return out


def _parse_validate_encode(loaded: Any, kind: str, body: bytes) -> dict[str, Any]:
    """parse, validate and encode of one body (µs), and the batch and outputs it gives."""
    import orjson
    from starlette.responses import Response

    from modelport.server import v2codec
    from modelport.server.native import native_batch, native_response
    from modelport.signature import numbers_only

    sig, unseen, max_rows = loaded.signature, "reject", 10_000
    served: Any = SimpleNamespace(name=loaded.name, version=loaded.version)  # what it reads
    if kind == "native":
        doc = orjson.loads(body)
        plain = numbers_only(body)
        batch = native_batch(doc, sig, unseen=unseen, max_rows=max_rows, plain=plain)
        outputs = loaded.runtime.predict(batch)
        return {
            "parse": best_us(lambda: (orjson.loads(body), numbers_only(body))),
            "validate": best_us(lambda: native_batch(doc, sig, unseen=unseen,
                                                     max_rows=max_rows, plain=plain)),
            "encode": best_us(lambda: native_response(served, outputs, "0123456789abcdef")),
            "_batch": batch, "_outputs": outputs}
    request, tensors = v2codec.decode_request(body, None)
    batch = v2codec.to_columns(tensors, sig, unseen=unseen, max_rows=max_rows)
    outputs = loaded.runtime.predict(batch)

    def encode() -> Response:
        payload, _ = v2codec.encode_response(request, outputs, model=loaded.name,
                                             version=loaded.version,
                                             request_id="0123456789abcdef")
        return Response(payload, media_type="application/json")

    return {
        "parse": best_us(lambda: v2codec.decode_request(body, None)),
        "validate": best_us(lambda: v2codec.to_columns(tensors, sig, unseen=unseen,
                                                        max_rows=max_rows)),
        "encode": best_us(encode),
        "_batch": batch, "_outputs": outputs}


def _metrics_call(metrics: Any, loaded: Any, kind: str, batch: Any,
                  outputs: Any) -> Callable[[], None]:
    """One request's metric updates, as the edge and the prediction hook make them."""
    from modelport.types import PredictionEvent

    route, name, version = ROUTES[kind], loaded.name, loaded.version
    event = PredictionEvent(request_id="0123456789abcdef", timestamp=time.time(), model=name,
                            version=version, inputs=batch, outputs=outputs, latency_s=0.001,
                            route=kind)

    def call() -> None:
        metrics.request_started(route)
        metrics.observe_request(name, version, route, 200, 0.001)
        metrics.request_finished(route)
        metrics.on_prediction(event)

    return call


def split_row(total_us: float, http_us: float, queue_us: float, model_us: float,
              timed: dict[str, float], *, round_trip: bool) -> dict[str, float]:
    """One workload's split: every part and the residual ``other`` (may be negative), plus
    ``total`` (the server's µs per request).

    ``round_trip``: ``total`` is one request's latency (c=1), so the batcher's queue wait is in
    it and is taken out of ``other``. Otherwise ``total`` is the core's time per request under
    saturation (1 / req/s), and a request's queue wait is time the core spends on other
    requests (the waits of concurrent requests overlap): shown, not taken out."""
    row = {"http": http_us, "queue": queue_us, "model": model_us,
           **{k: timed[k] for k in TIMED}}
    row["other"] = total_us - sum(v for k, v in row.items() if round_trip or k != "queue")
    return {**{k: row[k] for k in PARTS}, "total": total_us}
