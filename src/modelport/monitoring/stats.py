"""Drift statistics on binned counts, and the drift decision.

Every measure compares the reference counts of one feature (from its profile) with the
counts of the current window, bin by bin — nothing needs the raw values, so counts merged
from many servers give exactly the statistics of all their rows together.

Measures (``ref`` and ``cur`` are counts over the same bins):

- **PSI** ``sum((q - p) * ln(q / p))`` over shares ``p`` (reference) and ``q`` (current),
  natural log; a share of 0 is floored at ``eps`` (1e-4) first.
- **Jensen-Shannon distance**, **log base 2** (so it lies in [0, 1]): the square root of the
  JS divergence, as ``scipy.spatial.distance.jensenshannon(p, q, base=2)``.
- **Chi-square homogeneity** of the 2 x k table ``[ref; cur]`` (bins empty in both dropped, no
  Yates correction): ``scipy.stats.chi2_contingency(table, correction=False)``. For the
  decision, cells expecting fewer than 5 current rows are pooled first (:func:`pool_sparse`).
- **Binned KS** (numeric features; ordered bins, missing excluded): the largest gap between the
  two binned CDFs; its p-value is Smirnov's asymptotic one (``ks_2samp(method="asymp")``),
  conservative when bins are coarse. Equal to ``ks_2samp`` on the raw values when every value
  has its own bin.
- **Binned Wasserstein-1** (numeric): ``sum(|F_ref - F_cur| * gap)`` between bin centers (the
  reference mean of each bin), in the feature's units; exact when every value has its own bin.
- **Benjamini-Hochberg** adjusted p-values across all features and outputs of a model.

Decision (:func:`evaluate`), per feature: ``alert`` when the window holds at least
``min_rows`` rows (default 100) AND the effect size (PSI by default) reaches ``alert`` (0.25)
AND the BH-adjusted p-value is at most ``alpha`` (0.05); ``warn`` likewise with ``warn``
(0.1); ``ok`` otherwise; ``insufficient`` when the window is smaller than ``min_rows``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from modelport.errors import ConfigError
from modelport.monitoring.profile import FeatureProfile, NumericProfile, ReferenceProfile

__all__ = [
    "STATUS_LEVELS",
    "DriftReport",
    "DriftThresholds",
    "FeatureDrift",
    "TestResult",
    "benjamini_hochberg",
    "chi2_homogeneity",
    "evaluate",
    "js_distance",
    "ks_binned",
    "pool_sparse",
    "psi",
    "warm_up_tests",
    "wasserstein_binned",
]

Status = Literal["insufficient", "ok", "warn", "alert"]
STATUS_LEVELS: dict[str, int] = {"insufficient": -1, "ok": 0, "warn": 1, "alert": 2}
"""Numeric level of a status (for gauges and sorting): higher is worse."""
_EFFECT_DEFAULTS = {"psi": (0.1, 0.25), "js": (0.1, 0.2)}
Counts = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TestResult:
    """A test statistic and its p-value."""

    statistic: float
    p_value: float
    dof: int = 0


def _shares(counts: Counts) -> FloatArray:
    arr = np.asarray(counts, dtype=np.float64)
    total = arr.sum()
    return arr / total if total > 0 else arr


def psi(ref: Counts, cur: Counts, *, eps: float = 1e-4) -> float:
    """Population stability index (natural log; zero shares floored at ``eps``)."""
    p = np.maximum(_shares(ref), eps)
    q = np.maximum(_shares(cur), eps)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(ref: Counts, cur: Counts, *, base: float = 2.0) -> float:
    """Jensen-Shannon distance (square root of the divergence), log ``base`` (2 by default)."""
    p, q = _shares(ref), _shares(cur)
    m = (p + q) / 2
    div = (_kl(p, m) + _kl(q, m)) / 2 / np.log(base)
    return float(np.sqrt(max(div, 0.0)))


def _kl(p: FloatArray, m: FloatArray) -> float:
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] / m[nz])))


def chi2_homogeneity(ref: Counts, cur: Counts) -> TestResult:
    """Pearson chi-square test that both samples come from one distribution (no Yates)."""
    from scipy.special import chdtrc

    table = np.vstack([np.asarray(ref, np.float64), np.asarray(cur, np.float64)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return TestResult(0.0, 1.0, 0)
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    stat = float(np.sum((table - expected) ** 2 / expected))
    dof = table.shape[1] - 1
    return TestResult(stat, float(chdtrc(dof, stat)), dof)


def pool_sparse(
    ref: Counts, cur: Counts, min_expected: float = 5.0
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Merge the cells whose expected current count is below ``min_expected`` into one cell
    (and that cell into the smallest other one if it is still too small), so the chi-square
    approximation holds on small windows."""
    r, c = np.asarray(ref, np.int64), np.asarray(cur, np.int64)
    keep = (r + c) > 0
    r, c = r[keep], c[keep]
    total = r.sum() + c.sum()
    if total == 0:
        return r, c
    expected = (r + c) * c.sum() / total
    sparse = expected < min_expected
    if not sparse.any():
        return r, c
    rp, cp = r[~sparse], c[~sparse]
    pr, pc = int(r[sparse].sum()), int(c[sparse].sum())
    if rp.size and (pr + pc) * c.sum() / total < min_expected:
        j = int(np.argmin(rp + cp))
        rp, cp = rp.copy(), cp.copy()
        rp[j] += pr
        cp[j] += pc
        return rp, cp
    return np.append(rp, pr), np.append(cp, pc)


def warm_up_tests() -> None:
    """Run each test once, so that scipy's distributions are imported (about half a second
    and tens of MB) now rather than at the first evaluation of a window with rows."""
    ks_binned((1, 2), (2, 1))
    chi2_homogeneity((1, 2), (2, 1))


def ks_binned(ref: Counts, cur: Counts) -> TestResult | None:
    """Two-sample KS on ordered bins; ``None`` when either side is empty."""
    from scipy.stats import kstwo

    r, c = np.asarray(ref, np.float64), np.asarray(cur, np.float64)
    n, m = r.sum(), c.sum()
    if n == 0 or m == 0:
        return None
    d = float(np.max(np.abs(np.cumsum(r) / n - np.cumsum(c) / m)))
    big, small = max(n, m), min(n, m)
    en = big * small / (big + small)
    p = float(np.clip(kstwo.sf(d, np.round(en)), 0.0, 1.0))
    return TestResult(d, p)


def wasserstein_binned(ref: Counts, cur: Counts, centers: Sequence[float]) -> float | None:
    """Wasserstein-1 distance with each bin's mass at its center; ``None`` when a side is
    empty."""
    r, c = np.asarray(ref, np.float64), np.asarray(cur, np.float64)
    if r.sum() == 0 or c.sum() == 0:
        return None
    gaps = np.diff(np.asarray(centers, np.float64))
    cdf_gap = np.abs(np.cumsum(r / r.sum()) - np.cumsum(c / c.sum()))[:-1]
    return float(np.sum(cdf_gap * gaps))


def benjamini_hochberg(p_values: Sequence[float]) -> FloatArray:
    """Benjamini-Hochberg adjusted p-values (same order as given)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p)
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


@dataclass(frozen=True)
class DriftThresholds:
    """When a feature counts as drifted. Defaults: PSI 0.1 warn / 0.25 alert (JS 0.1 / 0.2),
    alpha 0.05 after Benjamini-Hochberg, at least 100 rows in the window."""

    effect: Literal["psi", "js"] = "psi"
    warn: float | None = None
    alert: float | None = None
    alpha: float = 0.05
    min_rows: int = 100
    test: Literal["chi2", "ks"] = "chi2"
    """Test for numeric features (categorical ones always use chi-square)."""
    min_expected: float = 5.0
    psi_eps: float = 1e-4

    def __post_init__(self) -> None:
        if self.effect not in _EFFECT_DEFAULTS or self.test not in ("chi2", "ks"):
            raise ConfigError(f"unknown drift effect {self.effect!r} or test {self.test!r}")
        warn, alert = _EFFECT_DEFAULTS[self.effect]
        object.__setattr__(self, "warn", warn if self.warn is None else self.warn)
        object.__setattr__(self, "alert", alert if self.alert is None else self.alert)
        if not (0 < self.alpha < 1 and self.min_rows >= 1 and self.warn <= self.alert):  # type: ignore[operator]
            raise ConfigError("drift thresholds need 0 < alpha < 1, min_rows >= 1 and "
                              "warn <= alert")


@dataclass(frozen=True)
class FeatureDrift:
    """Drift of one feature (or output) over the current window."""

    name: str
    kind: str
    status: Status
    window: int
    """Rows counted for this feature in the window."""
    method: str
    score: float | None
    """The effect size (``method``: psi or js)."""
    test: str
    statistic: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    psi: float | None = None
    js: float | None = None
    chi2: float | None = None
    chi2_p: float | None = None
    ks: float | None = None
    ks_p: float | None = None
    wasserstein: float | None = None
    missing: float = 0.0
    """Share of missing values in the window."""
    out_of_range: float = 0.0
    """Share below/above the reference range (numeric) or of unseen categories."""
    ref_missing: float = 0.0
    ref_out_of_range: float = 0.0

    @property
    def level(self) -> int:
        """:data:`STATUS_LEVELS` of ``status``."""
        return STATUS_LEVELS[self.status]


@dataclass(frozen=True)
class DriftReport:
    """Drift of every feature and output of one model over its current window."""

    model: str
    version: str
    status: Status
    window_rows: int
    total_rows: int
    features: tuple[FeatureDrift, ...]
    predictions: tuple[FeatureDrift, ...] = ()
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)

    @property
    def level(self) -> int:
        """:data:`STATUS_LEVELS` of ``status``."""
        return STATUS_LEVELS[self.status]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftReport:
        """Inverse of :meth:`to_dict`."""
        return cls(
            model=data["model"], version=data["version"], status=data["status"],
            window_rows=int(data["window_rows"]), total_rows=int(data["total_rows"]),
            features=tuple(FeatureDrift(**f) for f in data["features"]),
            predictions=tuple(FeatureDrift(**f) for f in data.get("predictions", [])),
            thresholds=DriftThresholds(**data.get("thresholds", {})),
        )


def evaluate(
    profile: ReferenceProfile,
    features: Mapping[str, Counts],
    outputs: Mapping[str, Counts] | None = None,
    *,
    rows: int,
    total_rows: int = 0,
    thresholds: DriftThresholds | None = None,
    model: str = "",
    version: str = "",
) -> DriftReport:
    """Compare window counts with the reference and decide, feature by feature."""
    th = thresholds or DriftThresholds()
    outs = outputs or {}
    measured = [_measure(p, features.get(p.name), th) for p in profile.features]
    measured += [_measure(p, outs.get(p.name), th) for p in profile.outputs]
    tested = [i for i, m in enumerate(measured) if m.p_value is not None]
    adjusted = benjamini_hochberg([measured[i].p_value or 0.0 for i in tested])
    for i, adj in zip(tested, adjusted, strict=True):
        measured[i] = replace(measured[i], p_adjusted=float(adj),
                              status=_status(measured[i], float(adj), th))
    n_in = len(profile.features)
    worst: Status = max((m.status for m in measured), key=STATUS_LEVELS.__getitem__,
                        default="ok")
    status: Status = "insufficient" if rows < th.min_rows else worst
    return DriftReport(model, version, status, rows, max(total_rows, rows),
                       tuple(measured[:n_in]), tuple(measured[n_in:]), th)


def _status(m: FeatureDrift, p_adj: float, th: DriftThresholds) -> Status:
    score = m.score or 0.0
    if p_adj > th.alpha:
        return "ok"
    if score >= (th.alert or 0.0):
        return "alert"
    return "warn" if score >= (th.warn or 0.0) else "ok"


def _measure(prof: FeatureProfile, counts: Counts | None, th: DriftThresholds) -> FeatureDrift:
    ref = np.asarray(prof.counts, np.int64)
    cur = np.zeros_like(ref) if counts is None else np.asarray(counts, np.int64)
    if cur.shape != ref.shape:
        raise ConfigError(f"counts of '{prof.name}' have {cur.size} bins, its reference "
                          f"profile {ref.size}: they come from another profile")
    n = int(cur.sum())
    numeric = prof if isinstance(prof, NumericProfile) else None
    test = th.test if numeric else "chi2"
    base = FeatureDrift(prof.name, prof.kind, "insufficient", n, th.effect, None, test,
                        **_shares_of(prof, ref, cur))
    if n < th.min_rows:
        return base
    psi_v, js_v = psi(ref, cur, eps=th.psi_eps), js_distance(ref, cur)
    chi = chi2_homogeneity(*pool_sparse(ref, cur, th.min_expected))
    ks = ks_binned(ref[:-1], cur[:-1]) if numeric else None
    wass = wasserstein_binned(ref[:-1], cur[:-1], numeric.centers) if numeric else None
    chosen = ks if test == "ks" and ks is not None else chi
    return replace(base, status="ok", score=psi_v if th.effect == "psi" else js_v,
                   statistic=chosen.statistic, p_value=chosen.p_value, psi=psi_v, js=js_v,
                   chi2=chi.statistic, chi2_p=chi.p_value,
                   ks=None if ks is None else ks.statistic,
                   ks_p=None if ks is None else ks.p_value, wasserstein=wass)


def _shares_of(prof: FeatureProfile, ref: npt.NDArray[np.int64],
               cur: npt.NDArray[np.int64]) -> dict[str, float]:
    out = list(prof.out_of_range_bins)
    p, q = _shares(ref), _shares(cur)
    return {"missing": float(q[-1]), "out_of_range": float(q[out].sum()),
            "ref_missing": float(p[-1]), "ref_out_of_range": float(p[out].sum())}
