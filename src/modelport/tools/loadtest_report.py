"""What a load test measured: a mergeable latency histogram, the report, and the SLO verdicts.

The histogram is HDR-style: latencies in microseconds fall into log-linear buckets (128 exact
ones below 128 µs, then 64 per power of two, so any value is known within 1/64 ≈ 1.6 %). Each
load-generating process keeps its own; merging is adding counts, so percentiles over all
processes are exact to the bucket, whatever the number of processes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from modelport.errors import ConfigError

__all__ = ["Histogram", "LoadReport", "Slo", "SloResult", "parse_duration", "parse_fraction"]

_LINEAR = 128
_SUB = 64
_BUCKETS = _LINEAR + 40 * _SUB  # enough for latencies up to ~2**46 µs


def _index(us: int) -> int:
    if us < _LINEAR:
        return max(us, 0)
    shift = us.bit_length() - 7  # us >> shift falls in [64, 127]
    return min(_LINEAR + (shift - 1) * _SUB + (us >> shift) - _SUB, _BUCKETS - 1)


def _bounds(idx: int) -> tuple[int, int]:
    """[low, high) of bucket ``idx`` in µs."""
    if idx < _LINEAR:
        return idx, idx + 1
    shift = (idx - _LINEAR) // _SUB + 1
    low = ((idx - _LINEAR) % _SUB + _SUB) << shift
    return low, low + (1 << shift)


@dataclass
class Histogram:
    """Latency counts in log-linear buckets of microseconds; add with :meth:`merge`."""

    counts: npt.NDArray[np.int64] = field(
        default_factory=lambda: np.zeros(_BUCKETS, dtype=np.int64))
    max_us: int = 0
    sum_us: int = 0

    @property
    def total(self) -> int:
        """Number of recorded values."""
        return int(self.counts.sum())

    def record(self, seconds: float) -> None:
        """Count one latency."""
        us = round(seconds * 1e6)
        self.counts[_index(us)] += 1
        self.max_us = max(self.max_us, us)
        self.sum_us += us

    def merge(self, other: Histogram) -> None:
        """Add another histogram's counts into this one."""
        self.counts += other.counts
        self.max_us = max(self.max_us, other.max_us)
        self.sum_us += other.sum_us

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0 to 100) in milliseconds: the middle of its bucket, capped at
        the largest value seen."""
        n = self.total
        if n == 0:
            return 0.0
        rank = max(1, int(np.ceil(q / 100 * n)))
        idx = int(np.searchsorted(np.cumsum(self.counts), rank))
        low, high = _bounds(idx)
        return min((low + high - 1) / 2, self.max_us) / 1000

    def to_dict(self) -> dict[str, Any]:
        """Sparse plain data (what a worker process sends back)."""
        nz = np.flatnonzero(self.counts)
        return {"buckets": dict(zip(nz.tolist(), self.counts[nz].tolist(), strict=True)),
                "max_us": self.max_us, "sum_us": self.sum_us}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Histogram:
        """Inverse of :meth:`to_dict`."""
        hist = cls(max_us=int(data["max_us"]), sum_us=int(data["sum_us"]))
        for idx, count in data["buckets"].items():
            hist.counts[int(idx)] = int(count)
        return hist


def parse_duration(text: str | float) -> float:
    """Seconds from ``"30s"``, ``"200ms"``, ``"2m"``, ``"500us"`` or a bare number of seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(us|µs|ms|s|m|h)?\s*", text)
    if match is None:
        raise ConfigError(f"cannot read the duration '{text}': write e.g. 30s, 200ms or 2m")
    scale = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    return float(match.group(1)) * scale[match.group(2) or "s"]


def parse_fraction(text: str | float) -> float:
    """A fraction from ``"0.1%"`` or ``"0.001"``."""
    if isinstance(text, (int, float)):
        return float(text)
    raw = text.strip()
    try:
        return float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError as exc:
        raise ConfigError(f"cannot read the rate '{text}': write e.g. 0.1% or 0.001") from exc


@dataclass(frozen=True)
class Slo:
    """One objective: a latency percentile at most ``limit`` ms, a throughput at least
    ``limit`` requests/s, or an error rate at most ``limit`` (a fraction)."""

    metric: Literal["p50", "p90", "p95", "p99", "max", "rps", "error_rate"]
    limit: float

    def check(self, report: LoadReport) -> SloResult:
        """Whether ``report`` meets this objective."""
        if self.metric == "rps":
            return SloResult(self.metric, self.limit, report.throughput_rps,
                             report.throughput_rps >= self.limit, f">= {self.limit:g} req/s")
        if self.metric == "error_rate":
            return SloResult(self.metric, self.limit, report.error_rate,
                             report.error_rate <= self.limit, f"<= {self.limit:.4%}")
        actual = report.latency_ms[self.metric]
        return SloResult(self.metric, self.limit, actual, actual <= self.limit,
                         f"<= {self.limit:g} ms")


@dataclass(frozen=True)
class SloResult:
    """An objective's verdict."""

    metric: str
    limit: float
    actual: float
    passed: bool
    objective: str


@dataclass(frozen=True)
class LoadReport:
    """The measured window of one load test (warm-up excluded)."""

    endpoint: str
    mode: Literal["open", "closed"]
    target_load: float
    """Requests/s asked for (open loop) or concurrent requests (closed loop)."""
    duration_s: float
    requests: int
    statuses: dict[str, int]
    """Responses by HTTP status, plus ``timeout`` / transport error names."""
    latency_ms: dict[str, float]
    processes: int
    slos: tuple[SloResult, ...] = ()

    @property
    def errors(self) -> int:
        """Responses that were not 2xx, and requests that got no response."""
        return sum(n for s, n in self.statuses.items() if not s.startswith("2"))

    @property
    def error_rate(self) -> float:
        """Errors over all requests of the window."""
        return self.errors / self.requests if self.requests else 0.0

    @property
    def throughput_rps(self) -> float:
        """Completed requests per second of the window."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def passed(self) -> bool:
        """Every SLO met (true when none was set)."""
        return all(r.passed for r in self.slos)

    def judged(self, slos: Sequence[Slo]) -> LoadReport:
        """This report with a verdict for each of ``slos``."""
        from dataclasses import replace

        return replace(self, slos=tuple(s.check(self) for s in slos))

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        data = asdict(self)
        data.update(throughput_rps=self.throughput_rps, errors=self.errors,
                    error_rate=self.error_rate, passed=self.passed)
        return data


def latency_summary(hist: Histogram) -> dict[str, float]:
    """p50/p90/p95/p99/max/mean in milliseconds."""
    out = {f"p{q}": hist.percentile(q) for q in (50, 90, 95, 99)}
    out["max"] = hist.max_us / 1000
    out["mean"] = hist.sum_us / hist.total / 1000 if hist.total else 0.0
    return out
