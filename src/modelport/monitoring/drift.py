"""Drift counters on the hot path: per-feature bin counts over a rolling window.

Each answered request adds, per feature and per output, one ``np.bincount`` of the bins its
values fall in (see :mod:`~modelport.monitoring.profile`) — O(features) numpy calls per batch,
no per-row Python. The counts are plain integers, so :func:`merge_counts` of the snapshots of
many workers or replicas is *exactly* the counts of one counter fed all their rows: fleet-wide
drift is exact, not an approximation.

The window is a ring of ``buckets`` sub-windows (10 by default), by rows or by time:

- ``Window(rows=10_000)``: each bucket takes ``ceil(rows / buckets)`` rows (a batch is split at
  a bucket boundary), and the oldest bucket is dropped when a new one starts, so the window
  holds between ``rows - rows / buckets`` and ``rows`` of the latest rows.
- ``Window(seconds=3600)``: buckets are aligned on absolute time (``floor(t / span)``), so
  windows of different servers cover the same span; buckets older than the window are dropped
  when time moves on (also when a snapshot is taken).

Concurrency: the server calls :meth:`DriftMonitor.on_prediction` on its single event loop, and
``observe`` never awaits, so calls never interleave there; a lock still guards the arrays so
that a thread (a test, a report) may take snapshots safely.
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from modelport.errors import ConfigError
from modelport.monitoring.profile import ReferenceProfile
from modelport.monitoring.stats import DriftReport, DriftThresholds, evaluate
from modelport.types import Columns, Outputs, PredictionEvent

__all__ = [
    "LATENCY_BOUNDS",
    "CountsSnapshot",
    "DriftCounters",
    "DriftMonitor",
    "Window",
    "evaluate_snapshot",
    "merge",
    "merge_counts",
]

LATENCY_BOUNDS: tuple[float, ...] = tuple(0.00025 * 2**i for i in range(18))
"""Upper bounds (seconds) of the request-latency histogram: 0.25 ms doubling up to ~33 s,
plus one overflow bucket."""
Counts = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Window:
    """The rolling window: by ``rows`` (default 10,000) or by ``seconds`` — set one."""

    rows: int | None = 10_000
    seconds: float | None = None
    buckets: int = 10

    def __post_init__(self) -> None:
        if self.seconds is not None:
            object.__setattr__(self, "rows", None)
        if self.buckets < 1 or (self.rows is None) == (self.seconds is None):
            raise ConfigError("a drift window needs buckets >= 1 and either rows or seconds")
        if (self.rows is not None and self.rows < 1) or (self.seconds or 1) <= 0:
            raise ConfigError("a drift window must be at least 1 row or a positive duration")


@dataclass(frozen=True)
class CountsSnapshot:
    """The window's counts: per feature and output, one count per bin (profile order).

    Plain integers: snapshots of any number of counters merge exactly (:func:`merge`).
    """

    digest: str
    """sha256 of the reference profile the bins come from."""
    rows: int
    total_rows: int
    features: Mapping[str, tuple[int, ...]]
    outputs: Mapping[str, tuple[int, ...]]
    latency: tuple[int, ...] = ()
    """Requests per :data:`LATENCY_BOUNDS` bucket (the last one is the overflow)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready)."""
        return {"digest": self.digest, "rows": self.rows, "total_rows": self.total_rows,
                "features": {k: list(v) for k, v in self.features.items()},
                "outputs": {k: list(v) for k, v in self.outputs.items()},
                "latency_bounds": list(LATENCY_BOUNDS), "latency": list(self.latency)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CountsSnapshot:
        """Inverse of :meth:`to_dict`."""
        if [float(b) for b in data.get("latency_bounds", LATENCY_BOUNDS)] != list(
                LATENCY_BOUNDS):
            raise ConfigError("these counts use other latency buckets; upgrade the server")
        return cls(str(data["digest"]), int(data["rows"]), int(data["total_rows"]),
                   {k: tuple(int(c) for c in v) for k, v in data["features"].items()},
                   {k: tuple(int(c) for c in v) for k, v in data["outputs"].items()},
                   tuple(int(c) for c in data.get("latency", ())))


def merge(a: CountsSnapshot, b: CountsSnapshot) -> CountsSnapshot:
    """Element-wise sum of two snapshots of the same reference profile (exact)."""
    if a.digest != b.digest:
        raise ConfigError("cannot merge drift counts of different reference profiles "
                          f"({a.digest[:12]}… and {b.digest[:12]}…)")
    return CountsSnapshot(a.digest, a.rows + b.rows, a.total_rows + b.total_rows,
                          _sum_maps(a.features, b.features), _sum_maps(a.outputs, b.outputs),
                          _sum(a.latency, b.latency))


def merge_counts(snapshots: Iterable[CountsSnapshot]) -> CountsSnapshot:
    """The sum of several servers' snapshots: the counts of all their rows together."""
    items = list(snapshots)
    if not items:
        raise ConfigError("no drift counts to merge")
    out = items[0]
    for snap in items[1:]:
        out = merge(out, snap)
    return out


def _sum(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    if not a or not b:
        return a or b
    if len(a) != len(b):
        raise ConfigError(f"cannot merge counts of {len(a)} and {len(b)} bins")
    return tuple(x + y for x, y in zip(a, b, strict=True))


def _sum_maps(a: Mapping[str, tuple[int, ...]],
              b: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    return {k: _sum(a.get(k, ()), b.get(k, ())) for k in dict.fromkeys([*a, *b])}


@dataclass
class _Ring:
    """``buckets`` rows of counts per slot (feature or output), one row per sub-window."""

    slots: dict[str, npt.NDArray[np.int64]]
    rows: npt.NDArray[np.int64]
    latency: npt.NDArray[np.int64]
    cur: int = 0
    key: int = 0
    """Time mode: ``floor(t / span)`` of the current bucket."""

    def advance(self, steps: int) -> None:
        for _ in range(min(steps, len(self.rows))):
            self.cur = (self.cur + 1) % len(self.rows)
            self.rows[self.cur] = 0
            self.latency[self.cur] = 0
            for arr in self.slots.values():
                arr[self.cur] = 0


class _Pending(NamedTuple):  # a tuple: built once per request, cheaper than a dataclass
    inputs: Columns
    outputs: Outputs | None
    ts: float
    latency: int
    """Latency bucket, -1 when unknown."""


class DriftCounters:
    """Bin counts of every feature and output of one model over a rolling :class:`Window`.

    ``observe`` only queues the batch (O(1)); every ``flush_rows`` rows, and before each
    snapshot, queued batches are concatenated and counted in one go, so a one-row request costs
    microseconds while the counts stay exact.
    """

    def __init__(self, profile: ReferenceProfile, window: Window | None = None, *,
                 clock: Callable[[], float] = time.time, flush_rows: int = 2048) -> None:
        self.profile = profile
        self.window = window or Window()
        self.digest = profile.digest()
        self.flush_rows = flush_rows
        self._clock = clock
        self._lock = threading.Lock()
        self._inputs = {p.name: p for p in profile.features}
        self._outputs = {p.name: p for p in profile.outputs}
        b = self.window.buckets
        self._ring = _Ring(
            {n: np.zeros((b, p.n_bins), np.int64)
             for n, p in (*self._inputs.items(), *self._outputs.items())},
            np.zeros(b, np.int64), np.zeros((b, len(LATENCY_BOUNDS) + 1), np.int64))
        rows = self.window.rows
        self._cap = math.ceil(rows / b) if rows is not None else 0
        self._span = (self.window.seconds or 0.0) / b
        self._total = 0
        self._pending: list[_Pending] = []
        self._pending_rows = 0
        if self._span:
            self._ring.key = math.floor(clock() / self._span)

    def observe(self, inputs: Columns, outputs: Outputs | None = None, *,
                timestamp: float | None = None, latency_s: float | None = None) -> None:
        """Count one batch (one request's rows) into the window."""
        if inputs.n_rows <= 0:
            return
        lat = -1 if latency_s is None else bisect.bisect_left(LATENCY_BOUNDS, latency_s)
        ts = timestamp if timestamp is not None else (self._clock() if self._span else 0.0)
        with self._lock:
            self._pending.append(_Pending(inputs, outputs, ts, lat))
            self._pending_rows += inputs.n_rows
            self._total += inputs.n_rows
            if self._pending_rows >= self.flush_rows:
                self._flush()

    def observe_latency(self, latency_s: float) -> None:
        """Count one request's latency without rows (e.g. when rebuilding from a log)."""
        with self._lock:
            self._flush()
            self._add_latency(self._ring.cur,
                              np.asarray([np.searchsorted(LATENCY_BOUNDS, latency_s)]))

    def _flush(self) -> None:
        items, self._pending, self._pending_rows = self._pending, [], 0
        if not items:
            return
        if not self._span:
            self._count(items, None)
            return
        for key, group in itertools.groupby(items, key=lambda p: math.floor(p.ts / self._span)):
            self._count(list(group), key)

    def _count(self, items: list[_Pending], key: int | None) -> None:
        try:
            inputs = Columns.concat([p.inputs for p in items])
            outs = [p.outputs for p in items]
            outputs = None if None in outs else Outputs.concat(outs)  # type: ignore[arg-type]
        except (KeyError, ValueError):  # batches of different shapes: count one by one
            if len(items) > 1:
                for item in items:
                    self._count([item], key)
                return
            raise
        bins = self._bins(inputs, outputs)
        ends = np.cumsum([p.inputs.n_rows for p in items])
        lats = np.asarray([p.latency for p in items])
        if key is None:
            self._add_rows(bins, inputs.n_rows, ends, lats)
        else:
            self._add_timed(bins, inputs.n_rows, lats, key)

    def _bins(self, inputs: Columns, outputs: Outputs | None) -> dict[str, npt.NDArray[np.intp]]:
        bins = {name: prof.bin_index(inputs.data[name])
                for name, prof in self._inputs.items() if name in inputs.data}
        if outputs is not None:
            for name, values in self.profile.output_columns(outputs).items():
                bins[name] = self._outputs[name].bin_index(values)
        return bins

    def _add_rows(self, bins: dict[str, npt.NDArray[np.intp]], n: int,
                  ends: npt.NDArray[np.int64], lats: npt.NDArray[np.int64]) -> None:
        ring, start = self._ring, 0
        while start < n:
            room = self._cap - int(ring.rows[ring.cur])
            if room <= 0:
                ring.advance(1)
                continue
            stop = min(n, start + room)
            self._add(ring.cur, bins, start, stop)
            self._add_latency(ring.cur, lats[(ends > start) & (ends <= stop)])
            start = stop

    def _add_timed(self, bins: dict[str, npt.NDArray[np.intp]], n: int,
                   lats: npt.NDArray[np.int64], key: int) -> None:
        ring = self._ring
        self._expire(key)
        age = ring.key - key
        if age >= len(ring.rows):  # older than the whole window
            return
        bucket = (ring.cur - age) % len(ring.rows)
        self._add(bucket, bins, 0, n)
        self._add_latency(bucket, lats)

    def _add_latency(self, bucket: int, lats: npt.NDArray[np.int64]) -> None:
        known = lats[lats >= 0]
        if known.size:
            self._ring.latency[bucket] += np.bincount(known, minlength=len(LATENCY_BOUNDS) + 1)

    def _expire(self, key: int) -> None:
        if key > self._ring.key:
            self._ring.advance(key - self._ring.key)
            self._ring.key = key

    def _add(self, bucket: int, bins: dict[str, npt.NDArray[np.intp]], start: int,
             stop: int) -> None:
        ring = self._ring
        ring.rows[bucket] += stop - start
        for name, idx in bins.items():
            arr = ring.slots[name]
            arr[bucket] += np.bincount(idx[start:stop], minlength=arr.shape[1])

    def snapshot(self) -> CountsSnapshot:
        """The window's counts now (a copy: later requests do not change it)."""
        with self._lock:
            self._flush()
            if self._span:
                self._expire(math.floor(self._clock() / self._span))
            ring = self._ring
            sums = {n: tuple(int(c) for c in a.sum(axis=0)) for n, a in ring.slots.items()}
            return CountsSnapshot(
                self.digest, int(ring.rows.sum()), self._total,
                {n: sums[n] for n in self._inputs}, {n: sums[n] for n in self._outputs},
                tuple(int(c) for c in ring.latency.sum(axis=0)))


def evaluate_snapshot(
    profile: ReferenceProfile,
    snapshot: CountsSnapshot,
    *,
    thresholds: DriftThresholds | None = None,
    model: str = "",
    version: str = "",
) -> DriftReport:
    """Drift of a (possibly merged) snapshot against the profile its bins come from."""
    if snapshot.digest != profile.digest():
        raise ConfigError("these drift counts were not made with this reference profile")
    return evaluate(profile, snapshot.features, snapshot.outputs, rows=snapshot.rows,
                    total_rows=snapshot.total_rows, thresholds=thresholds, model=model,
                    version=version)


@dataclass
class DriftMonitor:
    """Drift of one served model: a prediction callback that counts, and its status.

    The server registers :meth:`on_prediction` (a ``Callable[[PredictionEvent], None]``) for
    each served model that has a reference profile; events of other models are ignored.
    """

    profile: ReferenceProfile
    model: str
    version: str
    window: Window = field(default_factory=Window)
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)
    clock: Callable[[], float] = time.time
    counters: DriftCounters = field(init=False)

    def __post_init__(self) -> None:
        self.counters = DriftCounters(self.profile, self.window, clock=self.clock)

    def on_prediction(self, event: PredictionEvent) -> None:
        """Count the event's rows when it is for this model and version."""
        if event.model == self.model and event.version == self.version:
            self.counters.observe(event.inputs, event.outputs, timestamp=event.timestamp,
                                  latency_s=event.latency_s)

    def snapshot(self) -> CountsSnapshot:
        """Raw window counts (for ``/monitoring/drift/{model}/counts``)."""
        return self.counters.snapshot()

    def status(self) -> DriftReport:
        """Drift of every feature and output over the current window."""
        return evaluate_snapshot(self.profile, self.snapshot(), thresholds=self.thresholds,
                                 model=self.model, version=self.version)
