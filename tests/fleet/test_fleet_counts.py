"""The drift windows exported as gauges, summed as Prometheus sums them, evaluate exactly like
one counter fed every replica's rows (no server, no Prometheus: the exposition text itself)."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from modelport.cli import app
from modelport.errors import ConfigError, ModelportError
from modelport.monitoring.drift import DriftCounters, DriftMonitor, Window, evaluate_snapshot
from modelport.monitoring.fleet import (
    COUNT_LABELS,
    GROUP_LABELS,
    SEEN_ROWS,
    WINDOW_COUNT,
    WINDOW_ROWS,
    FleetGroup,
    Sample,
    drift_gauges,
    group_sums,
    snapshot_from_sums,
)
from modelport.monitoring.metrics import Metrics
from modelport.monitoring.profile import ReferenceProfile, build_profile
from tests.fleet.topology import free_port
from tests.monitoring.fixtures.drift_samples import SIGNATURE, columns, frame, predict


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    ref = frame(2000, seed=21)
    return build_profile(ref, SIGNATURE, predict(columns(ref)))


def _replicas(profile: ReferenceProfile, n: int = 3) -> tuple[list[DriftMonitor], DriftCounters]:
    """``n`` replicas' monitors fed disjoint requests, and one counter fed all of them."""
    batch = columns(frame(3000, seed=22, shift=0.7))
    monitors = [DriftMonitor(profile, "m", "1.0.0") for _ in range(n)]
    whole = DriftCounters(profile, Window(rows=10_000))
    for k, start in enumerate(range(0, 3000, 20)):
        part = batch.take(start, start + 20)
        for counters in (whole, monitors[k % n].counters):
            counters.observe(part, predict(part))
    return monitors, whole


def _scraped(monitors: list[DriftMonitor]) -> list[str]:
    """Each replica's /metrics text, as its Metrics renders it."""
    texts = []
    for monitor in monitors:
        metrics = Metrics()
        metrics.add_gauges(lambda m=monitor: drift_gauges({"m": m}))
        texts.append(metrics.render()[0].decode())
    return texts


def _sum_by(texts: Iterable[str], metric: str, by: tuple[str, ...]) -> list[Sample]:
    """``sum by (by) (metric)`` over the scraped texts, as Prometheus computes it."""
    sums: dict[tuple[str, ...], float] = defaultdict(float)
    for text in texts:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == metric:
                    sums[tuple(s.labels[k] for k in by)] += s.value
    return [(dict(zip(by, key, strict=True)), value) for key, value in sums.items()]


def _groups(texts: list[str]) -> list[FleetGroup]:
    count = [(labels, 1.0) for labels, _ in _sum_by(texts, WINDOW_ROWS, GROUP_LABELS)]
    return group_sums(_sum_by(texts, WINDOW_COUNT, COUNT_LABELS),
                      _sum_by(texts, WINDOW_ROWS, GROUP_LABELS),
                      _sum_by(texts, SEEN_ROWS, GROUP_LABELS), count)


def test_prometheus_sums_of_the_replicas_equal_one_counter_fed_every_row(
        profile: ReferenceProfile) -> None:
    monitors, whole = _replicas(profile)
    [group] = _groups(_scraped(monitors))
    fleet = snapshot_from_sums(profile, group)
    alone = whole.snapshot()
    assert (group.model, group.version, group.reference) == ("m", "1.0.0", profile.digest())
    assert (fleet.features, fleet.outputs, fleet.rows, fleet.total_rows) == \
        (alone.features, alone.outputs, alone.rows, alone.total_rows)
    assert evaluate_snapshot(profile, fleet) == evaluate_snapshot(profile, alone)


def test_every_bin_of_every_feature_and_output_is_exported(profile: ReferenceProfile) -> None:
    monitors, _ = _replicas(profile, 1)
    [family, rows, seen] = drift_gauges({"m": monitors[0]})
    expected = sum(p.n_bins for p in (*profile.features, *profile.outputs))
    assert len(family.samples) == expected
    assert family.labels == COUNT_LABELS
    assert rows.samples == [(("m", "1.0.0", profile.digest()), 3000.0)]
    assert seen.samples == rows.samples


def test_counts_of_another_reference_profile_are_refused(profile: ReferenceProfile) -> None:
    monitors, _ = _replicas(profile, 1)
    [group] = _groups(_scraped(monitors))
    with pytest.raises(ConfigError, match="reference profile"):
        snapshot_from_sums(profile, replace(group, reference="0" * 64))


def test_missing_bins_are_named(profile: ReferenceProfile) -> None:
    monitors, _ = _replicas(profile, 1)
    [group] = _groups(_scraped(monitors))
    first = profile.features[0].name
    counts: Mapping[tuple[str, str], Mapping[int, int]] = {
        k: v for k, v in group.counts.items() if k != ("feature", first)}
    with pytest.raises(ConfigError, match=f"feature '{first}'"):
        snapshot_from_sums(profile, replace(group, counts=counts))


def test_a_fractional_count_is_refused() -> None:
    labels = {"model": "m", "version": "1", "reference": "r"}
    with pytest.raises(ConfigError, match="whole number"):
        group_sums([], [(labels, 2.5)], [], [])


def test_status_with_prometheus_needs_a_reference_source() -> None:
    result = CliRunner().invoke(app, ["drift", "status", "--prometheus", "http://127.0.0.1:9"])
    assert isinstance(result.exception, ConfigError)
    assert "--package" in str(result.exception)


def test_status_names_an_unreachable_prometheus() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["drift", "status", "--prometheus", url, "--package", "."])
    assert isinstance(result.exception, ModelportError)
    assert f"cannot reach {url}" in str(result.exception)


def test_computed_gauges_are_exported_in_multiprocess_mode_too(tmp_path: Path) -> None:
    """With ``--workers`` > 1 the worker answering the scrape adds its own gauges (run in a
    subprocess: multiprocess mode is process-wide)."""
    code = (
        "from pathlib import Path\n"
        "from modelport.monitoring.metrics import GaugeFamily, Metrics\n"
        f"m = Metrics(multiprocess_dir=Path({str(tmp_path)!r}))\n"
        "m.add_gauges(lambda: [GaugeFamily('modelport_x', 'x', ('a',), [(('1',), 7.0)])])\n"
        "print(m.render()[0].decode())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert 'modelport_x{a="1"} 7.0' in out
