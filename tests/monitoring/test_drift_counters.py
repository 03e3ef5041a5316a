"""Drift counters: exact, mergeable bin counts over a rolling window."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modelport.errors import ConfigError
from modelport.monitoring.drift import (
    LATENCY_BOUNDS,
    CountsSnapshot,
    DriftCounters,
    DriftMonitor,
    Window,
    evaluate_snapshot,
    merge,
    merge_counts,
)
from modelport.monitoring.profile import ReferenceProfile, build_profile
from modelport.types import Columns, PredictionEvent
from tests.monitoring.fixtures.drift_samples import SIGNATURE, columns, frame, predict


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    ref = frame(2000, seed=11)
    return build_profile(ref, SIGNATURE, predict(columns(ref)))


def _feed(counters: DriftCounters, batch: Columns, step: int) -> None:
    for start in range(0, batch.n_rows, step):
        part = batch.take(start, min(start + step, batch.n_rows))
        counters.observe(part, predict(part), latency_s=0.002)


def test_four_servers_fed_disjoint_slices_sum_to_one_server_fed_all_rows(
        profile: ReferenceProfile) -> None:
    """Fleet-wide drift is exact: the merged counts, and so the decision, are identical."""
    batch = columns(frame(6000, seed=12, shift=1.0))
    requests = [batch.take(i, i + 25) for i in range(0, 6000, 25)]
    whole = DriftCounters(profile, Window(rows=10_000))
    servers = [DriftCounters(profile, Window(rows=10_000)) for _ in range(4)]
    for i, request in enumerate(requests):
        for counters in (whole, servers[i % 4]):
            counters.observe(request, predict(request), latency_s=0.001 * (i % 7))
    merged = merge_counts(s.snapshot() for s in servers)
    assert merged == whole.snapshot()
    assert evaluate_snapshot(profile, merged) == evaluate_snapshot(profile, whole.snapshot())


def test_counts_do_not_depend_on_how_rows_are_batched(profile: ReferenceProfile) -> None:
    batch = columns(frame(1000, seed=13))
    one_by_one, all_at_once = DriftCounters(profile), DriftCounters(profile)
    _feed(one_by_one, batch, 1)
    _feed(all_at_once, batch, 1000)
    a, b = one_by_one.snapshot(), all_at_once.snapshot()
    assert (a.features, a.outputs, a.rows) == (b.features, b.outputs, b.rows)


def test_every_feature_counts_every_row_once(profile: ReferenceProfile) -> None:
    counters = DriftCounters(profile)
    _feed(counters, columns(frame(777, seed=14)), 100)
    snap = counters.snapshot()
    assert snap.rows == snap.total_rows == 777
    assert {sum(c) for c in (*snap.features.values(), *snap.outputs.values())} == {777}


def test_missing_out_of_range_and_unseen_values_get_their_own_bins(
        profile: ReferenceProfile) -> None:
    counters = DriftCounters(profile)
    batch = SIGNATURE.from_records([
        {"income": 1e9, "age": -5, "children": 0, "score": None, "region": "mars",
         "member": True},
        {"income": 1.0, "age": 40, "children": 1, "score": 0.5, "region": "north",
         "member": False},
    ], unseen="pass")
    counters.observe(batch)
    snap = counters.snapshot().features
    assert snap["income"][0] == 1 and snap["income"][-2] == 1  # underflow, overflow
    assert snap["age"][0] == 1
    assert snap["score"][-1] == 1  # missing
    assert snap["region"] == (1, 0, 0, 0, 1, 0)  # north, ..., __other__, missing


def test_a_row_window_keeps_only_the_latest_rows(profile: ReferenceProfile) -> None:
    counters = DriftCounters(profile, Window(rows=1000, buckets=10))
    _feed(counters, columns(frame(3000, seed=15)), 64)
    drifted = columns(frame(1000, seed=16, shift=2.0))
    _feed(counters, drifted, 64)
    snap = counters.snapshot()
    assert 900 <= snap.rows <= 1000 and snap.total_rows == 4000
    only_drifted = DriftCounters(profile, Window(rows=1000))
    _feed(only_drifted, drifted.take(1000 - snap.rows, 1000), 64)
    assert snap.features == only_drifted.snapshot().features


def test_a_time_window_drops_buckets_older_than_the_window(profile: ReferenceProfile) -> None:
    now = [1_000_000.0]
    counters = DriftCounters(profile, Window(seconds=60, buckets=6), clock=lambda: now[0])
    batch = columns(frame(100, seed=17))
    counters.observe(batch, timestamp=now[0])
    now[0] += 30
    counters.observe(batch.take(0, 40), timestamp=now[0])
    assert counters.snapshot().rows == 140
    now[0] += 35  # the first batch is now 65 s old
    assert counters.snapshot().rows == 40
    now[0] += 60
    assert counters.snapshot().rows == 0


def test_time_buckets_are_aligned_so_servers_merge_exactly(profile: ReferenceProfile) -> None:
    now = [5_000.0]
    batch = columns(frame(300, seed=18))
    servers = [DriftCounters(profile, Window(seconds=100), clock=lambda: now[0])
               for _ in range(2)]
    whole = DriftCounters(profile, Window(seconds=100), clock=lambda: now[0])
    for i in range(300):
        ts = 5_000.0 + i * 0.5
        servers[i % 2].observe(batch.take(i, i + 1), timestamp=ts)
        whole.observe(batch.take(i, i + 1), timestamp=ts)
    now[0] = 5_160.0
    assert merge(servers[0].snapshot(), servers[1].snapshot()) == whole.snapshot()


def test_request_latency_goes_into_a_histogram(profile: ReferenceProfile) -> None:
    counters = DriftCounters(profile)
    batch = columns(frame(3, seed=19))
    for latency in (0.0001, 0.003, 0.003, 100.0):
        counters.observe(batch, latency_s=latency)
    latency_counts = counters.snapshot().latency
    assert len(latency_counts) == len(LATENCY_BOUNDS) + 1
    assert latency_counts[0] == 1 and latency_counts[4] == 2 and latency_counts[-1] == 1


def test_merging_counts_of_different_profiles_is_refused(profile: ReferenceProfile) -> None:
    other = build_profile(frame(500, seed=20), SIGNATURE)
    with pytest.raises(ConfigError, match="different reference profiles"):
        merge(DriftCounters(profile).snapshot(), DriftCounters(other).snapshot())


def test_a_snapshot_survives_json(profile: ReferenceProfile) -> None:
    counters = DriftCounters(profile)
    _feed(counters, columns(frame(250, seed=21)), 50)
    snap = counters.snapshot()
    assert CountsSnapshot.from_dict(json.loads(json.dumps(snap.to_dict()))) == snap


def test_the_monitor_counts_its_own_model_and_version_only(profile: ReferenceProfile) -> None:
    monitor = DriftMonitor(profile, "credit", "2")
    batch = columns(frame(120, seed=22))
    for model, version in (("credit", "2"), ("credit", "1"), ("other", "2")):
        monitor.on_prediction(PredictionEvent("r", 0.0, model, version, batch, predict(batch),
                                              0.01))
    assert monitor.snapshot().rows == 120
    assert monitor.status().window_rows == 120


@pytest.mark.parametrize("window", [{"rows": None}, {"rows": 0}, {"seconds": -1},
                                    {"buckets": 0}], ids=["none", "zero-rows", "negative",
                                                          "no-buckets"])
def test_windows_that_make_no_sense_are_refused(window: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        Window(**window)  # type: ignore[arg-type]


def test_observing_adds_bins_with_numpy_only(profile: ReferenceProfile) -> None:
    """The reference's own rows land in exactly the reference counts."""
    ref = frame(2000, seed=11)
    counters = DriftCounters(profile, Window(rows=2000, buckets=1))
    batch = columns(ref)
    counters.observe(batch, predict(batch))
    snap = counters.snapshot()
    for prof in profile.features:
        np.testing.assert_array_equal(snap.features[prof.name], prof.counts)
