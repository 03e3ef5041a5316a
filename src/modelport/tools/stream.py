"""Predictions over Redis Streams: a consumer group, micro-batches, at-least-once delivery.

A consumer reads requests from the input stream with ``XREADGROUP`` (``COUNT`` = the micro-batch
size), validates and predicts the whole batch at once, and for each request runs one small Lua
script that, atomically, adds the result to the output stream *unless that input id already has
one* (a ``<out>:done:<id>`` key, kept ``done_ttl_s``: a week by default) and acknowledges the
request. So a request is acknowledged only after its prediction is written, and a redelivered
request (its consumer died after reading it, another one claimed it with ``XAUTOCLAIM`` once it
had been idle ``claim_idle_ms``) never gets a second output record within that time. Requests
that cannot be predicted go to ``<out>:rejects`` with the reason.

A request carries an optional ``id`` field (else its stream entry id is its id) and either a
``features`` field holding a JSON object, or one field per feature (``age 63 thal normal``).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from modelport.errors import ConfigError, InvalidInput
from modelport.package import LoadedModel
from modelport.runtimes import check_finite
from modelport.signature import Signature
from modelport.types import Outputs

__all__ = ["StreamConfig", "StreamStats", "consume"]

# KEYS: target stream, the input id's done key, input stream;
# ARGV: group, entry id, seconds the done key lives (0: for ever), fields...
_WRITE_AND_ACK = """
local first
if tonumber(ARGV[3]) > 0 then
  first = redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3])
else
  first = redis.call('SET', KEYS[2], '1', 'NX')
end
local added = 0
if first then
  redis.call('XADD', KEYS[1], '*', unpack(ARGV, 4))
  added = 1
end
redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])
return added
"""


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class StreamConfig:
    """Where to read, where to write, and how."""

    redis_url: str = "redis://127.0.0.1:6379"
    in_stream: str = "requests"
    out_stream: str = "predictions"
    group: str = "modelport"
    consumer: str = field(default_factory=_default_consumer)
    batch: int = 64
    """Most requests read and predicted at once."""
    claim_idle_ms: int = 5000
    """A request pending this long with another consumer is taken over (that one is dead)."""
    block_ms: int = 1000
    """Longest one read waits for new requests (also how quickly a stop is noticed)."""
    done_ttl_s: int = 7 * 24 * 3600
    """How long an input id is remembered as answered: a redelivery within it gets no second
    output record. 0 remembers ids for ever (Redis memory then grows with every request)."""

    @property
    def rejects_stream(self) -> str:
        """Where requests that cannot be predicted go, with the reason."""
        return f"{self.out_stream}:rejects"

    def done_key(self, input_id: str) -> str:
        """The Redis key that marks ``input_id`` as having an output (or a reject) record."""
        return f"{self.out_stream}:done:{input_id}"


@dataclass(frozen=True)
class StreamStats:
    """Counts of one consumer's run."""

    read: int = 0
    predicted: int = 0
    rejected: int = 0
    duplicates: int = 0
    """Redelivered requests whose input id already had a record: acknowledged, not rewritten."""
    claimed: int = 0
    """Requests taken over from a consumer that stopped acknowledging them."""

    def __add__(self, other: StreamStats) -> StreamStats:
        return StreamStats(*(getattr(self, f.name) + getattr(other, f.name)
                             for f in fields(self)))


@dataclass(frozen=True)
class _Message:
    entry: str
    input_id: str
    record: dict[str, Any] | None
    problem: str = ""


def consume(
    model: LoadedModel,
    config: StreamConfig,
    *,
    stop: Callable[[], bool] = lambda: False,
    idle_exit_s: float | None = None,
    on_batch: Callable[[StreamStats], None] | None = None,
) -> StreamStats:
    """Serve predictions from ``config.in_stream`` until ``stop()`` is true (checked at least
    every ``block_ms``) or, with ``idle_exit_s``, until no request came for that long."""
    if config.batch < 1:
        raise ConfigError(f"--batch must be at least 1, got {config.batch}")
    if config.done_ttl_s < 0:
        raise ConfigError(f"--done-ttl-s must be 0 (for ever) or more, got {config.done_ttl_s}")
    client = _connect(config)
    write = client.register_script(_WRITE_AND_ACK)
    total = StreamStats()
    last_work = time.monotonic()
    backlog = _read(client, config, "0")  # what this consumer read before a restart
    while not stop():
        entries, claimed = (backlog, 0) if backlog else _next_entries(client, config)
        backlog = []
        if not entries:
            if idle_exit_s is not None and time.monotonic() - last_work > idle_exit_s:
                break
            continue
        stats = _handle(model, client, write, config, entries)
        total = total + stats + StreamStats(claimed=claimed)
        last_work = time.monotonic()
        if on_batch is not None:
            on_batch(total)
    return total


def _connect(config: StreamConfig) -> Any:
    try:
        import redis
    except ImportError as exc:
        raise ConfigError("streaming needs the redis client: pip install 'modelport[redis]'") \
            from exc
    client = redis.Redis.from_url(config.redis_url, decode_responses=True)
    try:
        client.xgroup_create(config.in_stream, config.group, id="0", mkstream=True)
    except redis.ConnectionError as exc:
        raise ConfigError(f"cannot reach Redis at {config.redis_url}: {exc}") from exc
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    return client


def _next_entries(client: Any, config: StreamConfig) -> tuple[list[Any], int]:
    """Entries a dead consumer left pending (claimed), else new ones."""
    reply = client.xautoclaim(config.in_stream, config.group, config.consumer,
                              config.claim_idle_ms, start_id="0-0", count=config.batch)
    entries = [e for e in reply[1] if e and e[1] is not None]
    gone = [e[0] for e in reply[1] if e and e[1] is None] + list(reply[2] if len(reply) > 2
                                                                 else [])
    if gone:  # trimmed from the stream before anyone predicted them: nothing left to do
        client.xack(config.in_stream, config.group, *gone)
    if entries:
        return entries, len(entries)
    return _read(client, config, ">"), 0


def _read(client: Any, config: StreamConfig, start: str) -> list[Any]:
    reply = client.xreadgroup(config.group, config.consumer, {config.in_stream: start},
                              count=config.batch, block=config.block_ms if start == ">" else None)
    return list(reply[0][1]) if reply else []


def _handle(model: LoadedModel, client: Any, write: Any, config: StreamConfig,
            entries: Sequence[Any]) -> StreamStats:
    messages = [_parse(model.signature, entry, values) for entry, values in entries]
    results = _predict(model, messages)
    pipe = client.pipeline(transaction=False)
    for msg, (target, payload) in zip(messages, results, strict=True):
        stream = config.out_stream if target == "out" else config.rejects_stream
        args = [config.group, msg.entry, config.done_ttl_s, "id", msg.input_id, "entry",
                msg.entry]
        write(keys=[stream, config.done_key(msg.input_id), config.in_stream],
              args=args + [x for kv in payload.items() for x in kv], client=pipe)
    added = pipe.execute()
    rejected = sum(1 for (t, _), a in zip(results, added, strict=True) if t == "rejects" and a)
    return StreamStats(read=len(messages), predicted=sum(added) - rejected, rejected=rejected,
                       duplicates=len(added) - sum(added))


def _parse(sig: Signature, entry: str, values: Mapping[str, str]) -> _Message:
    input_id = values.get("id") or entry
    if "features" in values:
        try:
            record = json.loads(values["features"])
        except json.JSONDecodeError as exc:
            return _Message(entry, input_id, None, f"'features' is not valid JSON: {exc}")
        if not isinstance(record, dict):
            return _Message(entry, input_id, None, "'features' must be a JSON object")
        return _Message(entry, input_id, record)
    text = {f.name for f in sig.features if f.dtype == "string"}
    return _Message(entry, input_id, {k: v if k in text else _scalar(v)
                                      for k, v in values.items() if k != "id"})


def _scalar(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _predict(model: LoadedModel, messages: list[_Message]) -> list[tuple[str, dict[str, str]]]:
    """("out", fields) or ("rejects", {"reason": ...}) per message, in order."""
    results: list[tuple[str, dict[str, str]]] = [
        ("rejects", {"reason": m.problem}) for m in messages]
    todo = [i for i, m in enumerate(messages) if m.record is not None]
    while todo:
        try:
            batch = model.signature.from_records([messages[i].record for i in todo])
        except InvalidInput as exc:
            if exc.row is None:
                raise
            results[todo.pop(exc.row)] = ("rejects", {"reason": _reason(exc)})
            continue
        try:
            outputs = check_finite(model.runtime.predict(batch))  # NaN/inf: no answer
        except Exception as exc:  # a poison request must not stop the stream: reject the batch
            for i in todo:
                results[i] = ("rejects", {"reason": f"the model raised: {exc}"})
            break
        for j, i in enumerate(todo):
            results[i] = ("out", _fields(model, outputs, j))
        break
    return results


def _reason(exc: InvalidInput) -> str:
    """The message without the row number (a position in the micro-batch, not the stream)."""
    prefix = f"row {exc.row}"
    text = exc.message
    return text[len(prefix):].lstrip(",: ") if text.startswith(prefix) else text


def _fields(model: LoadedModel, outputs: Outputs, j: int) -> dict[str, str]:
    pred = outputs.predictions[j]
    proba: dict[str, float] = {}
    if outputs.probabilities is not None:
        classes = outputs.classes or list(range(outputs.probabilities.shape[1]))
        proba = {str(c): float(p) for c, p in zip(classes, outputs.probabilities[j], strict=True)}
    return {"prediction": json.dumps(pred.item() if hasattr(pred, "item") else pred),
            "probabilities": json.dumps(proba), "model": model.name, "version": model.version}
