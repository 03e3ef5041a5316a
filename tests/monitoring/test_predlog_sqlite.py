"""The prediction log on a real SQLite file: joined rows, sampling, drops, spool replay, labels."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from modelport.errors import ConfigError, InvalidInput
from modelport.monitoring.predlog import PredictionLog, event_records
from modelport.monitoring.predlog_store import Spool, Store
from modelport.types import Columns, Outputs, PredictionEvent


def event(
    request_id: str, rows: int = 2, *, model: str = "heart", version: str = "1"
) -> PredictionEvent:
    age = np.arange(rows, dtype=float) + 40.0
    age[-1] = np.nan
    inputs = Columns({"age": age, "sex": np.array(["m", "f"] * rows, dtype=object)[:rows]}, rows)
    proba = np.tile([0.75, 0.25], (rows, 1))
    outputs = Outputs(np.arange(rows) % 2, proba, [0, 1])
    return PredictionEvent(
        request_id, 1_700_000_000.5, model, version, inputs, outputs, 0.003, arm="canary"
    )


def rows(url: str, table: str = "modelport_predictions") -> list[sa.Row[tuple[object, ...]]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        result = conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY request_id, row_index"))
        out = list(result)
    engine.dispose()
    return out


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'db' / 'log.db'}"


@pytest.fixture
def plog(url: str, tmp_path: Path) -> Iterator[PredictionLog]:
    log = PredictionLog(url, spool_dir=tmp_path / "spool", flush_interval_s=0.05)
    yield log
    log.close()


def test_each_row_becomes_one_joined_record(plog: PredictionLog, url: str) -> None:
    plog.on_prediction(event("req-a", rows=3))
    assert plog.flush()
    found = rows(url)
    assert [(r.request_id, r.row_index) for r in found] == [
        ("req-a", 0),
        ("req-a", 1),
        ("req-a", 2),
    ]
    first = found[0]
    assert (first.model, first.version, first.arm, first.route) == (
        "heart",
        "1",
        "canary",
        "native",
    )
    assert first.ts == 1_700_000_000.5 and first.latency_s == 0.003


def test_inputs_and_outputs_are_json_with_nan_as_null(plog: PredictionLog, url: str) -> None:
    plog.on_prediction(event("req-b", rows=2))
    plog.flush()
    last = rows(url)[-1]
    assert json.loads(last.inputs) == {"age": None, "sex": "f"}
    assert json.loads(last.outputs) == {"prediction": 1, "probabilities": {"0": 0.75, "1": 0.25}}


def test_sample_rate_keeps_about_that_share_of_requests(url: str, tmp_path: Path) -> None:
    log = PredictionLog(url, spool_dir=tmp_path / "s", sample_rate=0.25, flush_interval_s=0.05)
    for i in range(400):
        log.on_prediction(event(f"r{i}", rows=1))
    log.close()
    kept = len(rows(url))
    assert 60 <= kept <= 140, kept
    assert log.stats().written == kept


def test_a_full_queue_counts_dropped_rows_instead_of_blocking(url: str, tmp_path: Path) -> None:
    counted: list[tuple[str, int]] = []
    log = PredictionLog(
        url,
        spool_dir=tmp_path / "s",
        queue_size=1,
        flush_interval_s=5.0,
        on_count=lambda outcome, n: counted.append((outcome, n)),
    )
    start = time.perf_counter()
    for i in range(50):
        log.on_prediction(event(f"r{i}", rows=2))
    assert time.perf_counter() - start < 0.5
    log.close()
    stats = log.stats()
    assert stats.dropped > 0 and stats.dropped + stats.written == 100
    assert sum(n for outcome, n in counted if outcome == "dropped") == stats.dropped


def test_close_writes_everything_still_queued(url: str, tmp_path: Path) -> None:
    log = PredictionLog(url, spool_dir=tmp_path / "s", flush_interval_s=10.0, batch_size=10_000)
    for i in range(30):
        log.on_prediction(event(f"r{i}"))
    log.close()
    assert len(rows(url)) == 60


def test_after_close_rows_are_counted_dropped_and_labels_refused(url: str, tmp_path: Path) -> None:
    log = PredictionLog(url, spool_dir=tmp_path / "s", flush_interval_s=0.05)
    log.close()
    log.on_prediction(event("late", rows=3))
    assert log.stats().dropped == 3
    assert log.record_feedback("late", 1) is False
    assert log.flush(timeout_s=1) is True


def test_spool_replay_after_a_crash_does_not_duplicate(url: str, tmp_path: Path) -> None:
    """Records written to the database but still in a spool (crash before truncation)."""
    records = event_records(event("dup", rows=4))
    store = Store(url)
    store.insert(list(records))
    store.dispose()
    orphan = Spool(tmp_path / "spool")
    orphan.append(list(records))
    orphan._file.close()  # the process "died": lock released, file left behind
    log = PredictionLog(url, spool_dir=tmp_path / "spool", flush_interval_s=0.05)
    log.flush()
    log.close()
    assert len(rows(url)) == 4
    assert log.stats().replayed == 4
    assert list((tmp_path / "spool").glob("*.jsonl")) == []


def test_a_torn_spool_line_is_counted_failed_and_the_rest_replayed(
    url: str, tmp_path: Path
) -> None:
    orphan = Spool(tmp_path / "spool")
    orphan.append(list(event_records(event("torn", rows=3))))
    orphan._file.write(b'{"k": "p", "request_id": "tor')
    orphan._file.close()
    log = PredictionLog(url, spool_dir=tmp_path / "spool", flush_interval_s=0.05)
    log.flush()
    log.close()
    assert (log.stats().replayed, log.stats().failed) == (3, 1)


def test_a_spool_held_by_a_live_process_is_left_alone(url: str, tmp_path: Path) -> None:
    live = Spool(tmp_path / "spool")
    live.append(list(event_records(event("live", rows=2))))
    log = PredictionLog(url, spool_dir=tmp_path / "spool", flush_interval_s=0.05)
    log.flush()
    log.close()
    assert log.stats().replayed == 0 and live.path.exists()
    live.close()


def test_feedback_joins_labels_for_realized_accuracy(plog: PredictionLog) -> None:
    plog.on_prediction(event("acc-1", rows=2))  # predicts 0, 1
    plog.on_prediction(event("acc-2", rows=2, version="2"))
    assert plog.record_feedback("acc-1", 0, row=0)
    assert plog.record_feedback("acc-1", "0", row=1)  # wrong, and given as a string
    assert plog.record_feedback("acc-2", 1, row=1)
    plog.flush()
    overall = plog.realized_accuracy("heart")
    assert (overall.labeled, overall.correct, overall.accuracy) == (3, 2, pytest.approx(2 / 3))
    assert plog.realized_accuracy("heart", "2").accuracy == 1.0
    assert plog.realized_accuracy("other").accuracy is None


def test_a_later_label_replaces_the_earlier_one(plog: PredictionLog, url: str) -> None:
    plog.record_feedback("fb", 1)
    plog.record_feedback("fb", 0)
    plog.record_feedback("unknown-id", "yes")
    plog.flush()
    labels = {r.request_id: json.loads(str(r.label)) for r in rows(url, "modelport_feedback")}
    assert labels == {"fb": 0, "unknown-id": "yes"}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"request_id": "", "label": 1}, "request_id"),
        ({"request_id": "x" * 129, "label": 1}, "request_id"),
        ({"request_id": "a", "label": [1]}, "label"),
        ({"request_id": "a", "label": 1, "row": -1}, "row"),
    ],
    ids=["empty-id", "long-id", "list-label", "negative-row"],
)
def test_bad_feedback_names_the_field(
    plog: PredictionLog, kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidInput, match=field):
        plog.record_feedback(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"sample_rate": 1.5}, "sample_rate"),
        ({"queue_size": 0}, "queue_size"),
        ({"flush_interval_s": 0}, "flush_interval_s"),
    ],
    ids=["rate", "queue", "interval"],
)
def test_bad_options_are_config_errors(tmp_path: Path, kwargs: dict[str, float], word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        PredictionLog(f"sqlite:///{tmp_path}/x.db", spool_dir=tmp_path, **kwargs)  # type: ignore[arg-type]


def test_only_sqlite_and_postgresql_are_accepted(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sqlite or postgresql"):
        PredictionLog("mysql://u@h/db", spool_dir=tmp_path)


def test_unique_table_prefix_keeps_logs_apart(url: str, tmp_path: Path) -> None:
    prefix = f"t{uuid.uuid4().hex[:6]}_"
    log = PredictionLog(url, spool_dir=tmp_path / "s", table_prefix=prefix, flush_interval_s=0.05)
    log.on_prediction(event("p"))
    log.close()
    assert len(rows(url, f"{prefix}predictions")) == 2
