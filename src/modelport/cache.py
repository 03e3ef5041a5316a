"""Prediction cache: rows seen before are answered without the model.

Keys are per ROW: a hash of the model name, the model version and the row's canonical bytes
(each feature's value as the signature typed it, in signature order). So a batch can be partly
answered from the cache — only its new rows reach the model, in one call — and an answer of one
version is never served for another. Values are the row's outputs in a small JSON document
(no pickle: a shared cache must not be able to run code in the server).

Two backends behind one small protocol: :class:`LRUCache` (in process) and :class:`RedisCache`
(shared by replicas). A failing cache never fails a prediction: the rows are predicted, the
problem is logged, and the rows are reported to an ``on_fallback`` callback. A Redis that
failed is not asked again for ``retry_after_s`` (its rows fall back at once, reason
``unavailable``), and a Redis that does not answer within ``timeout_s`` counts as failed, so
an outage costs no latency; the outage and the recovery are logged once each. Hit/miss counts
go to a plain callback (metrics plug in there).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
import orjson

from modelport.errors import ConfigError, MissingExtra
from modelport.types import Columns, Outputs

__all__ = ["CacheUnavailable", "FallbackHook", "LRUCache", "LookupHook", "PredictionCache",
           "RedisCache", "cached_predict", "row_keys"]

_log = logging.getLogger("modelport")
T = TypeVar("T")
LookupHook = Callable[[str, str, int, int], None]
"""``(model, version, hits, misses)`` after each lookup of a batch."""
FallbackHook = Callable[[str, str, str, int], None]
"""``(model, version, reason, rows)`` when the cache could not be used for ``rows`` rows:
``error`` (the lookup failed: predicted without it), ``unavailable`` (it failed moments ago and
was not asked: predicted without it) or ``store_error`` (answers predicted but not stored)."""


class CacheUnavailable(Exception):
    """The cache cannot be used now; ``tried`` is False when it was not even asked (it had
    failed moments before). Never reaches a client: the rows are predicted instead."""

    def __init__(self, message: str, *, tried: bool) -> None:
        super().__init__(message)
        self.tried = tried


class PredictionCache(Protocol):
    """Bytes to bytes, many keys at a time."""

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """The stored value of each key, ``None`` where there is none."""
        ...

    async def set_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        """Store each ``(key, value)``."""
        ...


class LRUCache:
    """In-process cache of the ``max_entries`` most recently used rows."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ConfigError(f"the cache needs room for at least one entry, got {max_entries}")
        self.max_entries = max_entries
        self._data: OrderedDict[bytes, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Stored values; a hit becomes the most recently used entry."""
        out: list[bytes | None] = []
        for key in keys:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            out.append(value)
        return out

    async def set_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        """Store; the least recently used entries go when the cache is full."""
        for key, value in items:
            self._data[key] = value
            self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)


class RedisCache:
    """Redis-backed cache shared by every replica pointed at the same ``url`` and ``prefix``;
    entries expire after ``ttl_s`` seconds (``0``: never). Any failure (or no answer within
    ``timeout_s``) raises :class:`CacheUnavailable`, and for ``retry_after_s`` afterwards
    calls raise it at once without asking Redis."""

    def __init__(self, url: str, *, ttl_s: float = 3600.0, prefix: str = "modelport:",
                 timeout_s: float = 0.25, retry_after_s: float = 1.0) -> None:
        try:
            redis = importlib.import_module("redis.asyncio")
        except ImportError as exc:
            raise MissingExtra("redis", "redis") from exc
        self.prefix = prefix.encode()
        self.ttl_ms = int(ttl_s * 1000) or None
        self.retry_after_s = retry_after_s
        self._client: Any = redis.Redis.from_url(url, socket_timeout=timeout_s,
                                                 socket_connect_timeout=timeout_s)
        self._where = url.rsplit("@", 1)[-1]  # never log a password
        self._down_until = 0.0

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """One ``MGET`` for the whole batch."""
        if not keys:
            return []
        self._check_up()
        values: list[bytes | None] = await self._guard(
            self._client.mget([self.prefix + k for k in keys]))
        return values

    async def set_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        """One pipelined round trip of ``SET key value PX ttl``."""
        if not items:
            return
        self._check_up()
        pipe = self._client.pipeline(transaction=False)
        for key, value in items:
            pipe.set(self.prefix + key, value, px=self.ttl_ms)
        await self._guard(pipe.execute())

    def _check_up(self) -> None:
        if self._down_until and time.monotonic() < self._down_until:
            raise CacheUnavailable(f"Redis at {self._where} failed moments ago", tried=False)

    async def _guard(self, call: Awaitable[T]) -> T:
        try:
            result = await call
        except Exception as exc:
            if not self._down_until:
                _log.warning("prediction cache: Redis at %s failed (%s: %s); predicting "
                             "without it, trying it again every %g s", self._where,
                             type(exc).__name__, exc, self.retry_after_s)
            self._down_until = time.monotonic() + self.retry_after_s
            raise CacheUnavailable(f"Redis at {self._where} failed: {exc}", tried=True) from exc
        if self._down_until:
            _log.warning("prediction cache: Redis at %s answers again; caching resumed",
                         self._where)
            self._down_until = 0.0
        return result

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


def row_keys(model: str, version: str, batch: Columns) -> list[bytes]:
    """One key per row: a 128-bit hash of model, version and the row's typed values."""
    parts = [_column_bytes(batch.data[name], batch.n_rows) for name in sorted(batch.data)]
    head = orjson.dumps([model, version, sorted(batch.data)])
    return [hashlib.blake2b(head + b"".join(p[i] for p in parts), digest_size=16).digest()
            for i in range(batch.n_rows)]


async def cached_predict(
    cache: PredictionCache,
    served_name: str,
    version: str,
    batch: Columns,
    predict: Callable[[Columns], Awaitable[Outputs]],
    *,
    on_lookup: LookupHook | None = None,
    on_fallback: FallbackHook | None = None,
) -> Outputs:
    """Outputs for ``batch``: cached rows from ``cache``, the others from one ``predict`` call
    (then stored), reassembled in the batch's order."""
    keys = row_keys(served_name, version, batch)
    found, failure = await _lookup(cache, keys)
    if failure is not None:
        _report(on_fallback, served_name, version, failure, batch.n_rows)
        return await predict(batch)  # a cache that just failed is not written either
    missing = [i for i, value in enumerate(found) if value is None]
    if on_lookup is not None:
        on_lookup(served_name, version, batch.n_rows - len(missing), len(missing))
    if not missing and batch.n_rows:
        return _assemble(found, missing, None)
    everything = len(missing) == batch.n_rows
    idx = np.asarray(missing)
    computed = await predict(batch if everything else Columns(
        {k: v[idx] for k, v in batch.data.items()}, len(missing)))
    if not await _store(cache, [keys[i] for i in missing], _encode_rows(computed)):
        _report(on_fallback, served_name, version, "store_error", len(missing))
    return computed if everything else _assemble(found, missing, computed)


async def _lookup(cache: PredictionCache,
                  keys: list[bytes]) -> tuple[list[bytes | None], str | None]:
    """The stored values, or (when the cache fails) none and the fallback's reason."""
    try:
        return await cache.get_many(keys), None
    except CacheUnavailable as exc:  # logged by the cache, once per outage
        return [], "error" if exc.tried else "unavailable"
    except Exception as exc:  # the cache is an optimisation: predict instead
        _log.warning("prediction cache lookup failed (%s: %s); predicting every row",
                     type(exc).__name__, exc)
        return [], "error"


async def _store(cache: PredictionCache, keys: list[bytes], values: list[bytes]) -> bool:
    """Whether the answers were stored (a failure is logged, by the cache or here)."""
    try:
        await cache.set_many(list(zip(keys, values, strict=True)))
    except CacheUnavailable:
        return False
    except Exception as exc:
        _log.warning("prediction cache store failed (%s: %s)", type(exc).__name__, exc)
        return False
    return True


def _report(hook: FallbackHook | None, model: str, version: str, reason: str,
            rows: int) -> None:
    if hook is not None:
        hook(model, version, reason, rows)


def _column_bytes(col: npt.NDArray[Any], n_rows: int) -> list[bytes]:
    """Each row's value as bytes that differ whenever the typed values differ."""
    if col.dtype.kind in "biuf":
        raw = np.ascontiguousarray(col, dtype=col.dtype.newbyteorder("<"))
        width = raw.dtype.itemsize
        tag = raw.dtype.str.encode()
        data = raw.tobytes()
        return [tag + data[i * width:(i + 1) * width] for i in range(n_rows)]
    # JSON is self-delimiting only up to its end: a NUL (never inside JSON text) ends it
    return [orjson.dumps(v, default=str) + b"\x00" for v in col.tolist()]


def _encode_rows(outputs: Outputs) -> list[bytes]:
    preds = outputs.predictions
    proba = outputs.probabilities
    head: dict[str, Any] = {"d": preds.dtype.str, "c": outputs.classes}
    if proba is not None:
        head["pd"] = proba.dtype.str
    rows = preds.tolist()
    probs = proba.tolist() if proba is not None else [None] * len(rows)
    return [orjson.dumps({**head, "p": p, "q": q}) for p, q in zip(rows, probs, strict=True)]


def _assemble(found: list[bytes | None], missing: list[int],
              computed: Outputs | None) -> Outputs:
    """The batch's outputs in order, from stored rows and the freshly computed ones."""
    fresh = dict(zip(missing, _decode_outputs(computed), strict=True)) if computed else {}
    docs = [orjson.loads(v) if v is not None else fresh[i] for i, v in enumerate(found)]
    first = docs[0]
    preds = np.asarray([d["p"] for d in docs], dtype=np.dtype(first["d"]))
    proba = None
    if "pd" in first:
        proba = np.asarray([d["q"] for d in docs], dtype=np.dtype(first["pd"]))
    return Outputs(preds, proba, first["c"])


def _decode_outputs(outputs: Outputs | None) -> list[dict[str, Any]]:
    return [] if outputs is None else [orjson.loads(b) for b in _encode_rows(outputs)]
