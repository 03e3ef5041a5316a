"""Realized quality from labels that arrive late, out of order or twice (real SQLite files).

The latest label of a row wins and every row counts once, whichever way its labels came."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from modelport.errors import ConfigError
from modelport.monitoring.predlog import PredictionLog
from modelport.monitoring.predlog_store import FeedbackRecord, Store
from modelport.monitoring.quality import (
    Baseline,
    LabeledRow,
    QualityWindow,
    classification_quality,
    realized_quality,
    regression_quality,
)
from modelport.types import Columns, Outputs, PredictionEvent

N = 60


def event(i: int, *, version: str = "1", arm: str | None = None, ts: float | None = None,
          pred: int = 1) -> PredictionEvent:
    p1 = 0.8 if pred == 1 else 0.3
    return PredictionEvent(
        f"req-{version}-{i}", float(i) if ts is None else ts, "m", version,
        Columns({"x": np.array([float(i)])}, 1),
        Outputs(np.array([pred]), np.array([[1 - p1, p1]]), [0, 1]), 0.001, arm=arm)


@pytest.fixture
def plog(tmp_path: Path) -> PredictionLog:
    log = PredictionLog(f"sqlite:///{tmp_path / 'p.db'}", spool_dir=tmp_path / "spool",
                        flush_interval_s=0.05)
    yield log  # type: ignore[misc]
    log.close()


def quality(plog: PredictionLog, windows: str = "1000") -> dict[str, float]:
    rows = plog.labeled_rows("m")
    entries = realized_quality(rows, task="classification",
                               windows=[QualityWindow.parse(windows)], now=1e9, classes=[0, 1])
    assert len(entries) == 1
    return {"labeled": entries[0].labeled, **entries[0].metrics}


def truth(i: int) -> int:
    return int(i % 3 != 0)  # the model always says 1: right on 2 rows of 3


def test_labels_sent_before_their_prediction_is_logged_join_later(plog: PredictionLog) -> None:
    for i in range(N):
        assert plog.record_feedback(f"req-1-{i}", truth(i))
    assert plog.flush()
    assert plog.labeled_rows("m") == []  # nothing to join yet: not an error
    for i in range(N):
        plog.on_prediction(event(i))
    assert plog.flush()
    got = quality(plog)
    assert got["labeled"] == N and got["accuracy"] == pytest.approx(2 / 3)


def test_labels_out_of_order_give_the_same_metrics(plog: PredictionLog) -> None:
    for i in range(N):
        plog.on_prediction(event(i))
    order = list(range(N))
    random.Random(5).shuffle(order)
    for i in order:
        plog.record_feedback(f"req-1-{i}", truth(i))
    assert plog.flush()
    shuffled = quality(plog)
    assert shuffled["labeled"] == N and shuffled["accuracy"] == pytest.approx(2 / 3)
    expected = classification_quality([truth(i) for i in range(N)], [1] * N,
                                      np.tile([0.2, 0.8], (N, 1)), [0, 1])
    assert {k: shuffled[k] for k in expected} == pytest.approx(expected)


def test_a_second_label_replaces_the_first_and_counts_once(plog: PredictionLog) -> None:
    for i in range(N):
        plog.on_prediction(event(i))
    for i in range(N):
        plog.record_feedback(f"req-1-{i}", 0)  # all wrong first
    assert plog.flush()
    assert quality(plog) == pytest.approx({"labeled": N, "accuracy": 0.0, "f1": 0.0,
                                           "log_loss": -np.log(0.2)})
    for i in range(N):
        plog.record_feedback(f"req-1-{i}", 1)  # corrected: all right
    assert plog.flush()
    again = quality(plog)
    assert again["labeled"] == N and again["accuracy"] == 1.0


def test_a_replayed_older_label_does_not_overwrite_a_newer_one(tmp_path: Path) -> None:
    """A label spooled while the database was down is replayed after a newer one was
    written: the newer one (by time of arrival) stays."""
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    try:
        store.insert([FeedbackRecord("r", 0, "new", 20.0)])
        store.insert([FeedbackRecord("r", 0, "old", 10.0)])
        store.insert([FeedbackRecord("q", 0, "b", 20.0), FeedbackRecord("q", 0, "a", 10.0)])
        with store.engine.connect() as conn:
            labels = dict(conn.execute(store.feedback.select().with_only_columns(
                store.feedback.c.request_id, store.feedback.c.label)).all())
    finally:
        store.dispose()
    assert labels == {"r": "new", "q": "b"}


def test_windows_are_per_version_and_arm_rows_or_time(plog: PredictionLog) -> None:
    for i in range(N):
        plog.on_prediction(event(i, version="1", arm="stable", ts=1000.0 + i))
        plog.on_prediction(event(i, version="2", arm="canary", ts=1000.0 + i, pred=0))
        plog.record_feedback(f"req-1-{i}", 1)
        plog.record_feedback(f"req-2-{i}", int(i >= 50))
    assert plog.flush()
    rows = plog.labeled_rows("m")
    windows = [QualityWindow.parse("10"), QualityWindow.parse("30s")]
    entries = realized_quality(rows, task="classification", windows=windows, now=1000.0 + N,
                               classes=[0, 1], min_labels=5)
    got = {(e.version, e.arm, e.window): (e.labeled, e.metrics.get("accuracy"))
           for e in entries}
    assert got == {("1", "stable", "10"): (10, 1.0), ("1", "stable", "30s"): (30, 1.0),
                   # the canary says 0; the last 10 rows were labeled 1
                   ("2", "canary", "10"): (10, 0.0), ("2", "canary", "30s"): (30, 20 / 30)}
    few = realized_quality(rows, task="classification", windows=windows[:1], now=0,
                           classes=[0, 1], min_labels=11)
    assert all(e.labeled == 10 and e.metrics == {} for e in few)


def test_regression_metrics_and_string_classes() -> None:
    y, pred = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 2.0, 2.0, 4.0])
    assert regression_quality(y, pred) == pytest.approx(
        {"mae": 0.375, "rmse": np.sqrt(1.25 / 4), "r2": 1 - 1.25 / 5})
    rows = [LabeledRow("1", None, float(i), "yes" if i % 2 else "no",
                       {"no": 0.4, "yes": 0.6} if i % 2 else {"no": 0.7, "yes": 0.3},
                       "yes" if i % 4 == 1 else "no") for i in range(8)]
    (entry,) = realized_quality(rows, task="classification",
                                windows=[QualityWindow.parse("100")], now=0)
    assert entry.arm == "none" and entry.metrics["accuracy"] == 0.75
    assert set(entry.metrics) == {"accuracy", "f1", "roc_auc", "log_loss"}


def test_the_baseline_threshold_goes_the_right_way_for_each_metric() -> None:
    base = Baseline({"accuracy": 0.9, "log_loss": 0.3, "r2": 0.8}, margin=0.05)
    assert base.threshold("accuracy") == pytest.approx(0.85)
    assert base.breached("accuracy", 0.84) and not base.breached("accuracy", 0.86)
    assert base.threshold("log_loss") == pytest.approx(0.315)
    assert base.breached("log_loss", 0.4) and not base.breached("log_loss", 0.31)
    assert base.threshold("f1") is None and not base.breached("f1", 0.0)


@pytest.mark.parametrize("spec", ["", "0", "1w", "-5", "1.5h"])
def test_a_bad_window_is_refused_naming_the_forms(spec: str) -> None:
    with pytest.raises(ConfigError, match="row count"):
        QualityWindow.parse(spec)
