"""Fleet-wide drift through Prometheus: exact sums of every replica's drift windows.

Each replica exports its drift window as gauges (:func:`drift_gauges`, computed at scrape
time, nothing added to the hot path)::

    modelport_drift_window_count{model, version, reference, kind, slot, bin}
    modelport_drift_window_rows{model, version, reference}
    modelport_drift_seen_rows{model, version, reference}

``reference`` is the sha256 of the reference profile the bins come from, so only counts of the
same bins are ever added. ``sum by (…)`` over replicas is the element-wise sum of their
:class:`~modelport.monitoring.drift.CountsSnapshot`\\ s — integers, exact — and
:func:`snapshot_from_sums` turns those sums back into one snapshot to evaluate: the drift of
the whole fleet, equal to that of one process fed every replica's rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from modelport.errors import ConfigError
from modelport.monitoring.drift import CountsSnapshot, DriftMonitor
from modelport.monitoring.metrics import GaugeFamily
from modelport.monitoring.profile import ReferenceProfile

__all__ = [
    "COUNT_LABELS",
    "GROUP_LABELS",
    "SEEN_ROWS",
    "WINDOW_COUNT",
    "WINDOW_ROWS",
    "FleetGroup",
    "Sample",
    "drift_gauges",
    "group_sums",
    "snapshot_from_sums",
]

WINDOW_COUNT = "modelport_drift_window_count"
WINDOW_ROWS = "modelport_drift_window_rows"
SEEN_ROWS = "modelport_drift_seen_rows"
GROUP_LABELS = ("model", "version", "reference")
COUNT_LABELS = (*GROUP_LABELS, "kind", "slot", "bin")

Sample = tuple[Mapping[str, str], float]
"""One series of a Prometheus instant vector: its labels and its value."""


def drift_gauges(monitors: Mapping[str, DriftMonitor]) -> list[GaugeFamily]:
    """The drift windows of ``monitors`` as gauge families (one snapshot per monitor)."""
    counts: list[tuple[tuple[str, ...], float]] = []
    rows: list[tuple[tuple[str, ...], float]] = []
    seen: list[tuple[tuple[str, ...], float]] = []
    for monitor in list(monitors.values()):
        snap = monitor.snapshot()
        group = (monitor.model, monitor.version, snap.digest)
        rows.append((group, float(snap.rows)))
        seen.append((group, float(snap.total_rows)))
        for kind, slots in (("feature", snap.features), ("output", snap.outputs)):
            for slot, bins in slots.items():
                counts += [((*group, kind, slot, str(i)), float(c)) for i, c in enumerate(bins)]
    return [
        GaugeFamily(WINDOW_COUNT, "Drift window: rows per reference bin of each feature and "
                    "output (sum over replicas for the fleet).", COUNT_LABELS, counts),
        GaugeFamily(WINDOW_ROWS, "Drift window: rows in the window.", GROUP_LABELS, rows),
        GaugeFamily(SEEN_ROWS, "Rows counted since the server started.", GROUP_LABELS, seen),
    ]


@dataclass(frozen=True)
class FleetGroup:
    """The summed counts of one (model, version, reference profile) over the replicas."""

    model: str
    version: str
    reference: str
    replicas: int
    rows: int
    seen_rows: int
    counts: Mapping[tuple[str, str], Mapping[int, int]]
    """``(kind, slot) -> {bin: count}``."""


def group_sums(counts: Iterable[Sample], rows: Iterable[Sample], seen: Iterable[Sample],
               replicas: Iterable[Sample]) -> list[FleetGroup]:
    """Groups from the four instant vectors ``sum by (…)`` / ``count by (…)`` answered."""
    key = _group_key
    bins: dict[tuple[str, str, str], dict[tuple[str, str], dict[int, int]]] = {}
    for labels, value in counts:
        slot = (labels["kind"], labels["slot"])
        bins.setdefault(key(labels), {}).setdefault(slot, {})[int(labels["bin"])] = _int(value)
    row_sums = {key(labels): _int(v) for labels, v in rows}
    seen_sums = {key(labels): _int(v) for labels, v in seen}
    members = {key(labels): _int(v) for labels, v in replicas}
    return [FleetGroup(*g, replicas=members.get(g, 0), rows=row_sums.get(g, 0),
                       seen_rows=seen_sums.get(g, 0), counts=bins.get(g, {}))
            for g in sorted(row_sums)]


def snapshot_from_sums(profile: ReferenceProfile, group: FleetGroup) -> CountsSnapshot:
    """The fleet's window as one snapshot of ``profile``'s bins (slots in profile order)."""
    if group.reference != profile.digest():
        raise ConfigError(f"the fleet's counts of {group.model}:{group.version} use reference "
                          f"profile {group.reference[:12]}…, not {profile.digest()[:12]}…")
    features = {p.name: _bins(group, "feature", p.name, p.n_bins) for p in profile.features}
    outputs = {p.name: _bins(group, "output", p.name, p.n_bins) for p in profile.outputs}
    return CountsSnapshot(group.reference, group.rows, group.seen_rows, features, outputs)


def _bins(group: FleetGroup, kind: str, slot: str, n_bins: int) -> tuple[int, ...]:
    found = group.counts.get((kind, slot))
    if found is None or set(found) != set(range(n_bins)):
        raise ConfigError(f"Prometheus has incomplete drift counts for {kind} '{slot}' of "
                          f"{group.model}:{group.version} (expected {n_bins} bins)")
    return tuple(found[i] for i in range(n_bins))


def _group_key(labels: Mapping[str, str]) -> tuple[str, str, str]:
    return labels["model"], labels["version"], labels["reference"]


def _int(value: float) -> int:
    if value != int(value) or value < 0:
        raise ConfigError(f"a drift count must be a whole number, got {value}")
    return int(value)
