"""The drift report: one self-contained HTML file, readable offline, small at any volume.

Everything is drawn from aggregated bins (a :class:`~modelport.monitoring.drift.CountsSnapshot`
and its :class:`~modelport.monitoring.profile.ReferenceProfile`), so the file size depends on
the number of features and bins, never on the number of rows. Charts are inline SVG whose
geometry is computed here; the markup lives in ``templates/report.html.j2``. No script, font
or stylesheet is loaded from anywhere: the file works air-gapped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from modelport.monitoring.drift import LATENCY_BOUNDS, CountsSnapshot
from modelport.monitoring.profile import FeatureProfile, NumericProfile, ReferenceProfile
from modelport.monitoring.quality import LOWER_IS_BETTER
from modelport.monitoring.stats import DriftReport, FeatureDrift

__all__ = ["Accuracy", "Bar", "Chart", "ModelView", "bar_chart", "latency_quantile",
           "render_report"]

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Accuracy:
    """Realized accuracy: predictions that received a true label, and how many were right."""

    labeled: int
    correct: int

    @property
    def value(self) -> float | None:
        """``correct / labeled``; ``None`` before any label."""
        return self.correct / self.labeled if self.labeled else None


@dataclass(frozen=True)
class ModelView:
    """What the report shows for one model."""

    profile: ReferenceProfile
    snapshot: CountsSnapshot
    report: DriftReport
    accuracy: Accuracy | None = None
    quality: Mapping[str, Any] | None = None
    """Realized and estimated quality (``QualityTracker.status``), when known."""


@dataclass(frozen=True)
class Bar:
    """One rectangle of a chart, in SVG user units."""

    x: float
    y: float
    w: float
    h: float
    series: str
    tip: str


@dataclass(frozen=True)
class Chart:
    """A bar chart ready for the template: bars, x labels and y grid lines."""

    title: str
    width: int
    height: int
    bars: list[Bar]
    labels: list[tuple[float, str]]
    ticks: list[tuple[float, str]]
    rotate: bool = False
    status: str = "ok"
    legend: list[tuple[str, str]] = field(default_factory=list)


DASH = "\u2013"
"""En dash: ranges on axis labels, and empty table cells."""
_LEFT, _RIGHT, _TOP, _BOTTOM = 40.0, 8.0, 10.0, 58.0


def bar_chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    width: int = 440,
    height: int = 220,
    status: str = "ok",
    tips: Sequence[str] | None = None,
) -> Chart:
    """Grouped bars of shares (0..1): one group per label, one bar per series; ``tips`` are
    longer labels for the hover titles."""
    tips = tips or labels
    plot_w, plot_h = width - _LEFT - _RIGHT, height - _TOP - _BOTTOM
    top = max((max(values, default=0.0) for _, values in series), default=0.0)
    scale = _nice(top)
    group = plot_w / max(len(labels), 1)
    bar_w = group * 0.8 / max(len(series), 1)
    bars = []
    for s, (name, values) in enumerate(series):
        for i, value in enumerate(values):
            h = plot_h * value / scale
            x = _LEFT + i * group + group * 0.1 + s * bar_w
            bars.append(Bar(round(x, 1), round(_TOP + plot_h - h, 1), round(bar_w, 1),
                            round(h, 1), f"s{s}", f"{tips[i]} · {name}: {value:.1%}"))
    ticks = [(round(_TOP + plot_h * (1 - f), 1), f"{scale * f:.0%}") for f in (0, 0.5, 1)]
    xlabels = [(round(_LEFT + (i + 0.5) * group, 1), _short(label))
               for i, label in enumerate(labels)]
    return Chart(title, width, height, bars, xlabels, ticks, len(labels) > 6, status,
                 [(f"s{s}", name) for s, (name, _) in enumerate(series)])


def _nice(top: float) -> float:
    """A round upper bound for the y axis."""
    for step in (0.05, 0.1, 0.2, 0.25, 0.4, 0.5, 0.6, 0.8, 1.0):
        if top <= step:
            return step
    return 1.0


def _short(label: str, limit: int = 14) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def _shares(counts: Sequence[int]) -> list[float]:
    total = sum(counts)
    return [c / total if total else 0.0 for c in counts]


def _distribution(prof: FeatureProfile, counts: Sequence[int], drift: FeatureDrift) -> Chart:
    labels = list(prof.labels())
    short = _compact_labels(prof) if isinstance(prof, NumericProfile) else labels
    ref, cur = list(prof.counts), list(counts) or [0] * len(labels)
    special = {*prof.out_of_range_bins, prof.n_bins - 1}
    keep = [i for i in range(len(labels)) if i not in special or ref[i] or cur[i]]
    ref_s, cur_s = _shares(ref), _shares(cur)
    return bar_chart(prof.name, [short[i] for i in keep],
                     [("reference", [ref_s[i] for i in keep]),
                      ("current", [cur_s[i] for i in keep])],
                     status=drift.status, tips=[labels[i] for i in keep])


def _compact_labels(prof: NumericProfile) -> list[str]:
    """Axis labels short enough to stay legible (the full interval is in the hover title)."""
    edges = [prof.low, *prof.cuts, prof.high]
    if prof.discrete:
        inner = [_compact(e) for e in edges[:-1]]
    else:
        inner = [f"{_compact(a)}{DASH}{_compact(b)}" for a, b in pairwise(edges)]
    return [f"<{_compact(prof.low)}", *inner, f">{_compact(prof.high)}", "missing"]


def _compact(value: float) -> str:
    for bound, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= bound:
            return f"{value / bound:.3g}{suffix}"
    return f"{value:.3g}"


def latency_quantile(counts: Sequence[int], q: float) -> float | None:
    """Upper bound (seconds) of the histogram bucket holding quantile ``q``; ``None`` when
    empty or beyond the last bound."""
    total = sum(counts)
    if not total:
        return None
    position = int(np.searchsorted(np.cumsum(counts), q * total))
    return LATENCY_BOUNDS[position] if position < len(LATENCY_BOUNDS) else None


def _latency(snapshot: CountsSnapshot) -> dict[str, Any] | None:
    counts = list(snapshot.latency)
    if not sum(counts):
        return None
    used = [i for i, c in enumerate(counts) if c]
    lo, hi = used[0], used[-1] + 1
    labels = [_ms(LATENCY_BOUNDS[i]) if i < len(LATENCY_BOUNDS) else "more"
              for i in range(lo, hi)]
    chart = bar_chart("Request latency (share of requests per bucket)", labels,
                      [("requests", _shares(counts[lo:hi]))], width=560)
    quantiles = {f"p{int(q * 100)}": latency_quantile(counts, q) for q in (0.5, 0.9, 0.99)}
    return {"requests": sum(counts), "chart": chart,
            "quantiles": {k: "> " + _ms(LATENCY_BOUNDS[-1]) if v is None else "≤ " + _ms(v)
                          for k, v in quantiles.items()}}


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.2f} ms" if ms < 1 else f"{ms:.0f} ms" if ms < 10_000 else f"{ms / 1000:.0f} s"


def _model_context(view: ModelView) -> dict[str, Any]:
    report, snap, prof = view.report, view.snapshot, view.profile
    by_name = {f.name: f for f in (*report.features, *report.predictions)}
    ranked = sorted(by_name.values(), key=lambda f: (-f.level, -(f.score or 0.0), f.name))
    features = [_distribution(p, snap.features.get(p.name, ()), by_name[p.name])
                for p in sorted(prof.features, key=lambda p: -by_name[p.name].level)]
    outputs = [_distribution(p, snap.outputs.get(p.name, ()), by_name[p.name])
               for p in prof.outputs]
    counts = {s: sum(1 for f in by_name.values() if f.status == s)
              for s in ("alert", "warn", "ok", "insufficient")}
    return {"report": report, "ranked": ranked, "features": features, "outputs": outputs,
            "counts": counts, "latency": _latency(snap), "accuracy": view.accuracy,
            "quality_section": _quality(view.quality),
            "quality": [by_name[p.name] for p in (*prof.features, *prof.outputs)]}


def _quality(status: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Rows of the quality section: each realized window with its metrics against their
    baselines, and each CBPE estimate (or the reason it is withheld)."""
    if not status:
        return None
    thresholds = status.get("thresholds") or {}
    baselines = status.get("baseline") or {}
    realized = []
    for entry in status.get("realized", []):
        version = entry["version"]
        cells = []
        for metric, value in entry["metrics"].items():
            limit = (thresholds.get(version) or {}).get(metric)
            worse = limit is not None and (value > limit if metric in LOWER_IS_BETTER
                                           else value < limit)
            cells.append({"metric": metric, "value": value,
                          "baseline": (baselines.get(version) or {}).get(metric),
                          "threshold": limit,
                          "status": "alert" if worse else "ok" if limit is not None else ""})
        realized.append({**entry, "cells": cells,
                         "status": "alert" if any(c["status"] == "alert" for c in cells)
                         else "ok" if cells else "insufficient"})
    return {"realized": realized, "estimated": list(status.get("estimated", [])),
            "margin": status.get("margin"), "min_labels": status.get("min_labels"),
            "calibration": status.get("calibration") or {}}


def render_report(
    models: Sequence[ModelView],
    *,
    title: str = "Drift report",
    generated: datetime | None = None,
) -> str:
    """One self-contained HTML page covering ``models``."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["pct"] = lambda v: DASH if v is None else f"{v:.1%}"
    env.filters["num"] = lambda v: DASH if v is None else f"{v:.3g}" if abs(v) < 1000 \
        else f"{v:,.0f}"
    env.filters["pval"] = lambda v: DASH if v is None else "< 1e-6" if v < 1e-6 \
        else f"{v:.2g}"
    when = (generated or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    return env.get_template("report.html.j2").render(
        title=title, generated=when, models=[_model_context(m) for m in models])
