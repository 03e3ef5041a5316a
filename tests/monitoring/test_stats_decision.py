"""The drift decision: minimum window AND effect size AND BH-adjusted p-value."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modelport.errors import ConfigError
from modelport.monitoring.drift import DriftMonitor
from modelport.monitoring.profile import (
    CategoricalProfile,
    Moments,
    ReferenceProfile,
    build_profile,
)
from modelport.monitoring.stats import (
    DriftReport,
    DriftThresholds,
    evaluate,
    pool_sparse,
)
from tests.monitoring.fixtures.drift_samples import SIGNATURE, columns, frame, predict


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    ref = frame(2000, seed=7)
    return build_profile(ref, SIGNATURE, predict(columns(ref)))


def _report(profile: ReferenceProfile, rows: int, seed: int, shift: float = 0.0,
            thresholds: DriftThresholds | None = None) -> DriftReport:
    monitor = DriftMonitor(profile, "m", "1", thresholds=thresholds or DriftThresholds())
    batch = columns(frame(rows, seed, shift=shift))
    monitor.counters.observe(batch, predict(batch))
    return monitor.status()


def _one(prof_counts: tuple[int, ...], cur: list[int], **th: float) -> DriftReport:
    prof = CategoricalProfile("c", ("a", "b"), prof_counts, Moments(sum(prof_counts), 0))
    return evaluate(ReferenceProfile((prof,), rows=sum(prof_counts)), {"c": cur},
                    rows=sum(cur), thresholds=DriftThresholds(**th))  # type: ignore[arg-type]


def test_a_window_below_min_rows_is_insufficient(profile: ReferenceProfile) -> None:
    report = _report(profile, 99, seed=1, shift=3.0)
    assert report.status == "insufficient"
    assert {f.status for f in report.features} == {"insufficient"}
    assert all(f.p_value is None for f in report.features)


def test_a_strong_shift_alerts_on_the_shifted_features_and_the_predictions(
        profile: ReferenceProfile) -> None:
    report = _report(profile, 400, seed=2, shift=2.0)
    status = {f.name: f.status for f in (*report.features, *report.predictions)}
    assert report.status == "alert"
    assert status["income"] == status["region"] == status["proba[yes]"] == "alert"
    assert status["age"] == status["children"] == "ok"


def test_the_same_distribution_is_ok(profile: ReferenceProfile) -> None:
    report = _report(profile, 500, seed=3)
    assert report.status == "ok"
    assert max(f.psi or 0 for f in report.features) < 0.1


def test_a_significant_but_tiny_effect_is_ok() -> None:
    """60,000 rows make a 1-point shift significant, but PSI stays far below 0.1."""
    report = _one((50_000, 50_000, 0, 0), [29_400, 30_600, 0, 0])
    feature = report.features[0]
    assert feature.p_adjusted is not None and feature.p_adjusted < 0.001
    assert feature.psi is not None and feature.psi < 0.01
    assert feature.status == "ok"


def test_a_large_effect_that_is_not_significant_is_ok() -> None:
    """PSI 0.16 measured against a 10-row reference is not evidence of drift."""
    report = _one((6, 4, 0, 0), [40, 60, 0, 0])
    feature = report.features[0]
    assert feature.psi is not None and feature.psi > 0.1
    assert feature.p_adjusted is not None and feature.p_adjusted > 0.05
    assert feature.status == "ok"


@pytest.mark.parametrize(("cur", "expected"), [
    ([500, 500, 0, 0], "ok"),
    ([340, 660, 0, 0], "warn"),
    ([200, 800, 0, 0], "alert"),
], ids=["same", "psi-between-warn-and-alert", "psi-above-alert"])
def test_the_effect_size_picks_warn_or_alert(cur: list[int], expected: str) -> None:
    assert _one((5000, 5000, 0, 0), cur).features[0].status == expected


def test_the_effect_size_can_be_jensen_shannon() -> None:
    feature = _one((5000, 5000, 0, 0), [200, 800, 0, 0], effect="js").features[0]
    assert feature.method == "js"
    assert feature.score == feature.js
    assert feature.status == "alert"


def test_ks_can_be_the_test_of_numeric_features(profile: ReferenceProfile) -> None:
    report = _report(profile, 400, seed=2, shift=2.0, thresholds=DriftThresholds(test="ks"))
    income = next(f for f in report.features if f.name == "income")
    region = next(f for f in report.features if f.name == "region")
    assert (income.test, income.statistic, income.p_value) == ("ks", income.ks, income.ks_p)
    assert region.test == "chi2"


def test_p_values_are_adjusted_across_features_with_benjamini_hochberg(
        profile: ReferenceProfile) -> None:
    report = _report(profile, 300, seed=4)
    tested = [f for f in (*report.features, *report.predictions) if f.p_value is not None]
    assert len(tested) == 8
    assert all(f.p_adjusted is not None and f.p_adjusted >= f.p_value for f in tested)


@pytest.mark.slow
def test_same_distribution_windows_of_100_rows_rarely_alarm(profile: ReferenceProfile) -> None:
    """Over 200 windows of 100 rows drawn like the reference, the share that warns or alerts
    stays within alpha (0.05): Benjamini-Hochberg bounds the family-wise error under no drift."""
    alarms = sum(_report(profile, 100, seed=1000 + s).status in ("warn", "alert")
                 for s in range(200))
    assert alarms <= 10


def test_sparse_cells_are_pooled_until_each_expects_five_rows() -> None:
    ref, cur = pool_sparse([500, 400, 60, 3, 0, 1], [50, 40, 4, 1, 2, 0])
    expected = (ref + cur) * cur.sum() / (ref.sum() + cur.sum())
    assert (expected >= 5).all()
    assert ref.sum() == 964 and cur.sum() == 97


@pytest.mark.parametrize("bad", [{"alpha": 0.0}, {"min_rows": 0}, {"warn": 0.3, "alert": 0.2},
                                 {"effect": "kl"}], ids=["alpha", "min-rows", "order", "effect"])
def test_thresholds_that_make_no_sense_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        DriftThresholds(**bad)  # type: ignore[arg-type]


def test_defaults_are_psi_01_025_alpha_005_and_100_rows() -> None:
    th = DriftThresholds()
    assert (th.effect, th.warn, th.alert, th.alpha, th.min_rows) == ("psi", 0.1, 0.25, 0.05, 100)


def test_a_report_survives_json(profile: ReferenceProfile) -> None:
    report = _report(profile, 400, seed=2, shift=2.0)
    again = DriftReport.from_dict(json.loads(json.dumps(report.to_dict(), allow_nan=False)))
    assert again == report
    assert np.isfinite([f.score for f in again.features if f.score is not None]).all()
