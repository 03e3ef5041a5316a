"""Live traffic by model and arm for the console: requests per second, p50/p99, error rate,
and how often a shadow version disagrees with the answer sent.

Fed on the hot path, so each observation is a few dict and list operations: per (model, arm,
version) a ring of one-second slots, each with a request count, an error count and a
log-spaced latency histogram (about 7 % wide buckets from 0.1 ms to a minute). Reading sums
the slots of the last seconds and takes percentiles from the merged histogram, which costs
nothing on the hot path and bounds memory by the number of arms, not of requests.

A shadow copy's answer arrives after the answer that was sent: the sent predictions of a
request are kept (a bounded map) only while the model's traffic policy has shadow versions,
and compared when the shadow's answer comes.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelport.types import PredictionEvent

__all__ = ["ArmStats", "LiveStats", "ShadowStats"]

RING_S = 60
"""Seconds of history kept per arm."""
_BOUNDS: tuple[float, ...] = tuple(1e-4 * 1.15 ** i for i in range(int(math.log(6e5) /
                                                                        math.log(1.15)) + 1))
_PENDING_MAX = 4096
"""Sent answers waiting for their shadow copy; the oldest are forgotten first."""


@dataclass(frozen=True)
class ArmStats:
    """One arm over the window (latencies in milliseconds; None without requests)."""

    model: str
    arm: str
    version: str
    requests: int
    errors: int
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    error_rate: float | None


@dataclass(frozen=True)
class ShadowStats:
    """A shadow version over the window: rows compared and rows answered differently."""

    model: str
    version: str
    rows: int
    disagreements: int
    rate: float | None


class _Slot:
    __slots__ = ("errors", "hist", "n", "second")

    def __init__(self, second: int) -> None:
        self.second, self.n, self.errors = second, 0, 0
        self.hist = [0] * (len(_BOUNDS) + 1)


class LiveStats:
    """Per-arm request statistics over the last :data:`RING_S` seconds."""

    def __init__(self, has_shadow: Callable[[str], bool] = lambda _model: False, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._has_shadow = has_shadow
        self._clock = clock
        self._rings: dict[tuple[str, str, str], list[_Slot | None]] = {}
        self._shadow: dict[tuple[str, str], list[list[int]]] = {}
        """(model, version) -> per second [second, rows, disagreements]."""
        self._pending: OrderedDict[tuple[str, str], Any] = OrderedDict()

    # -- the hot path ---------------------------------------------------------------------

    def request(self, model: str, version: str, arm: str | None, status: int,
                seconds: float) -> None:
        """One answered prediction request (any status) of ``model:version``."""
        key = (model, arm or version, version)
        ring = self._rings.get(key)
        if ring is None:
            ring = self._rings[key] = [None] * RING_S
        second = int(self._clock())
        slot = ring[second % RING_S]
        if slot is None or slot.second != second:
            slot = ring[second % RING_S] = _Slot(second)
        slot.n += 1
        if status >= 500:
            slot.errors += 1
        slot.hist[bisect.bisect_left(_BOUNDS, seconds)] += 1

    def on_prediction(self, event: PredictionEvent) -> None:
        """Prediction hook: remember sent answers of shadowed models, compare shadow copies."""
        if event.arm == "shadow":
            sent = self._pending.pop((event.request_id, event.model), None)
            if sent is None or len(sent) != event.inputs.n_rows:
                return
            differ = int((np.asarray(event.outputs.predictions) != np.asarray(sent)).sum())
            self._count_shadow(event.model, event.version, event.inputs.n_rows, differ)
        elif self._has_shadow(event.model):
            self._pending[(event.request_id, event.model)] = event.outputs.predictions
            if len(self._pending) > _PENDING_MAX:
                self._pending.popitem(last=False)

    def _count_shadow(self, model: str, version: str, rows: int, differ: int) -> None:
        ring = self._shadow.setdefault((model, version), [[-1, 0, 0] for _ in range(RING_S)])
        second = int(self._clock())
        slot = ring[second % RING_S]
        if slot[0] != second:
            slot[:] = [second, 0, 0]
        slot[1] += rows
        slot[2] += differ

    # -- reading --------------------------------------------------------------------------

    def arms(self, model: str, window_s: int = 10) -> list[ArmStats]:
        """Every arm of ``model`` seen in the last ``window_s`` seconds."""
        window_s = max(1, min(window_s, RING_S))
        since = int(self._clock()) - window_s
        out = []
        for (name, arm, version), ring in list(self._rings.items()):
            if name != model:
                continue
            slots = [s for s in ring if s is not None and s.second > since]
            if not slots:
                continue
            n, errors = sum(s.n for s in slots), sum(s.errors for s in slots)
            hist = [sum(col) for col in zip(*(s.hist for s in slots), strict=True)]
            out.append(ArmStats(model, arm, version, n, errors, round(n / window_s, 3),
                                _percentile(hist, n, 0.50), _percentile(hist, n, 0.99),
                                errors / n if n else None))
        return sorted(out, key=lambda a: (a.arm, a.version))

    def shadows(self, model: str, window_s: int = 60) -> list[ShadowStats]:
        """Every shadow version of ``model`` compared in the last ``window_s`` seconds."""
        since = int(self._clock()) - max(1, min(window_s, RING_S))
        out = []
        for (name, version), ring in list(self._shadow.items()):
            if name != model:
                continue
            rows = sum(s[1] for s in ring if s[0] > since)
            differ = sum(s[2] for s in ring if s[0] > since)
            if rows:
                out.append(ShadowStats(model, version, rows, differ, differ / rows))
        return out

    def forget(self, model: str, version: str) -> None:
        """Drop the rings of a version no longer served (bounded memory across swaps)."""
        for key in [k for k in self._rings if k[0] == model and k[2] == version]:
            del self._rings[key]
        self._shadow.pop((model, version), None)


def _percentile(hist: list[int], n: int, q: float) -> float | None:
    """The upper bound (ms) of the bucket holding the ``q`` quantile of ``n`` latencies."""
    if n <= 0:
        return None
    rank, seen = math.ceil(q * n), 0
    for i, count in enumerate(hist):
        seen += count
        if seen >= rank:
            bound = _BOUNDS[i] if i < len(_BOUNDS) else _BOUNDS[-1]
            return round(bound * 1000, 3)
    return round(_BOUNDS[-1] * 1000, 3)
