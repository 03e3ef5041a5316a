"""The prediction log: one joined record per predicted row, written off the hot path, lossless.

:meth:`PredictionLog.on_prediction` runs on the event loop and only puts the event on a bounded
queue (full → the rows are counted as ``dropped``). One background thread turns events into
records and writes them in batches through SQLAlchemy (SQLite by default, PostgreSQL for a
fleet). When the database is unreachable the batch is appended to a local spool file (fsync'd)
instead, and the spool is replayed once the database answers again; inserts are idempotent, so
every accepted row ends up in the database exactly once. Outcomes are reported to a plain
``on_count(outcome, n)`` callback (``Metrics.count_predlog``):

- ``written``: records (prediction rows and labels) inserted, replayed ones included;
- ``spooled``: records put in the spool;
- ``replayed``: spooled rows inserted later; ``dropped``: rows refused because the queue was full;
- ``failed``: rows lost anyway (spool not writable, unreadable spool line, unconvertible event);
- ``unspooled``: of those, the rows the spool could not take (a full disk): the first such
  failure is logged as an error naming the spool file and the cause, the recovery as a warning.
  A failed append leaves the spool as it was, so rows spooled before are replayed intact.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import zlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelport.errors import ConfigError, InvalidInput, NotReady
from modelport.monitoring.predlog_store import (
    FeedbackRecord,
    PredictionRecord,
    RealizedAccuracy,
    Record,
    Spool,
    Store,
)
from modelport.monitoring.quality import LabeledRow
from modelport.types import PredictionEvent

__all__ = ["PredictionLog", "PredlogStats", "RealizedAccuracy", "event_records"]

log = logging.getLogger("modelport.predlog")

OnCount = Callable[[str, int], None]
_Item = PredictionEvent | FeedbackRecord | threading.Event | None


@dataclass(frozen=True)
class PredlogStats:
    """Rows by outcome since the log was opened (see the module docstring)."""

    written: int = 0
    dropped: int = 0
    failed: int = 0
    spooled: int = 0
    replayed: int = 0
    unspooled: int = 0


def event_records(event: PredictionEvent) -> list[PredictionRecord]:
    """The joined records of one event, one per row (columns are converted once, not per row)."""
    cols = {name: values.tolist() for name, values in event.inputs.data.items()}
    out = event.outputs
    preds = out.predictions.tolist()
    proba = None if out.probabilities is None else out.probabilities.tolist()
    classes = None if out.classes is None else [str(c) for c in out.classes]
    records = []
    for i in range(event.inputs.n_rows):
        outputs: dict[str, Any] = {"prediction": preds[i]}
        if proba is not None:
            outputs["probabilities"] = (
                dict(zip(classes, proba[i], strict=True)) if classes else proba[i]
            )
        records.append(
            PredictionRecord(
                event.request_id,
                i,
                event.model,
                event.version,
                event.timestamp,
                event.route,
                event.arm,
                event.latency_s,
                {k: col[i] for k, col in cols.items()},
                outputs,
            )
        )
    return records


class PredictionLog:
    """A sampled, batched, spooled log of predictions and delayed labels."""

    write_span: Callable[[list[str]], AbstractContextManager[object]] | None = None
    """Tracing: entered around each batch written, with the batch's request ids (the server
    sets it while tracing is on)."""

    def __init__(
        self,
        url: str,
        *,
        spool_dir: Path,
        sample_rate: float = 1.0,
        queue_size: int = 10_000,
        batch_size: int = 500,
        flush_interval_s: float = 0.5,
        retry_interval_s: float = 1.0,
        table_prefix: str = "modelport_",
        on_count: OnCount | None = None,
    ) -> None:
        _check_options(sample_rate, queue_size, batch_size, flush_interval_s)
        self._store = Store(url, table_prefix=table_prefix)
        self._spool = Spool(spool_dir)
        self._threshold = int(sample_rate * 2**32)
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=queue_size)
        self._batch_size, self._interval = batch_size, flush_interval_s
        self._retry_interval, self._next_try = retry_interval_s, 0.0
        self._on_count = on_count
        self._counts = dict.fromkeys(PredlogStats.__dataclass_fields__, 0)
        self._lock = threading.Lock()
        self._closed = False
        self._unspooled_since: int | None = None
        """``unspooled`` when the spool started failing (None while it works)."""
        self._thread = threading.Thread(target=self._run, name="modelport-predlog", daemon=True)
        self._thread.start()

    # -- called on the event loop: never blocks -------------------------------------------

    def on_prediction(self, event: PredictionEvent) -> None:
        """Prediction callback: queue the event if it is sampled; a full queue drops it."""
        if zlib.crc32(event.request_id.encode()) >= self._threshold:
            return
        if self._closed:
            self._count("dropped", event.inputs.n_rows)
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._count("dropped", event.inputs.n_rows)

    def record_feedback(self, request_id: str, label: str | float | bool, *, row: int = 0) -> bool:
        """Queue a true label for row ``row`` of a request; False when the queue is full
        (or the log is closed).

        Labels for ids not (yet) in the log are stored too: the prediction may still be queued.
        """
        if not isinstance(request_id, str) or not 0 < len(request_id) <= 128:
            raise InvalidInput("must be a string of 1 to 128 characters", field="request_id")
        if not isinstance(label, (str, int, float, bool)):
            raise InvalidInput("must be a string, a number or a boolean", field="label")
        if isinstance(row, bool) or not isinstance(row, int) or row < 0:
            raise InvalidInput("must be an integer >= 0", field="row")
        try:
            if self._closed:
                raise queue.Full
            self._queue.put_nowait(FeedbackRecord(request_id, row, label, time.time()))
        except queue.Full:
            self._count("dropped", 1)
            return False
        return True

    # -- called anywhere --------------------------------------------------------------------

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything queued so far is written or spooled; False on timeout."""
        done = threading.Event()
        if self._closed:
            return not self._thread.is_alive()
        try:
            self._queue.put(done, timeout=timeout_s)
        except queue.Full:
            return False
        return done.wait(timeout_s)

    def close(self, timeout_s: float = 30.0) -> None:
        """Write (or spool) everything queued, then stop the writer thread."""
        self._closed = True
        if self._thread.is_alive():
            self._queue.put(None, timeout=timeout_s)
            self._thread.join(timeout_s)

    def stats(self) -> PredlogStats:
        """Rows by outcome so far."""
        with self._lock:
            return PredlogStats(**self._counts)

    def realized_accuracy(self, model: str, version: str | None = None) -> RealizedAccuracy:
        """Share of labeled predictions of ``model`` (``version``) that matched their label."""
        import sqlalchemy as sa

        try:
            return self._store.realized_accuracy(model, version)
        except sa.exc.SQLAlchemyError as exc:
            raise NotReady(
                f"prediction log database unreachable: {exc.__class__.__name__}"
            ) from exc

    def recent(self, *, model: str | None = None, version: str | None = None,
               arm: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The latest logged prediction rows, newest first (see ``Store.recent``); blocking:
        call it off the event loop."""
        import sqlalchemy as sa

        try:
            return self._store.recent(model=model, version=version, arm=arm, limit=limit)
        except sa.exc.SQLAlchemyError as exc:
            raise NotReady(
                f"prediction log database unreachable: {exc.__class__.__name__}"
            ) from exc

    def labeled_rows(self, model: str, *, since: float | None = None,
                     limit: int | None = None) -> list[LabeledRow]:
        """Labeled predictions of ``model``, newest first (see :meth:`Store.labeled_rows`)."""
        import sqlalchemy as sa

        try:
            return self._store.labeled_rows(model, since=since, limit=limit)
        except sa.exc.SQLAlchemyError as exc:
            raise NotReady(
                f"prediction log database unreachable: {exc.__class__.__name__}"
            ) from exc

    def claim_retrain(self, model: str, holder: str, now: float, stale_s: float) -> bool:
        """See :meth:`Store.claim_retrain` (NotReady while the database is unreachable)."""
        import sqlalchemy as sa

        try:
            return self._store.claim_retrain(model, holder, now, stale_s)
        except sa.exc.SQLAlchemyError as exc:
            raise NotReady(
                f"prediction log database unreachable: {exc.__class__.__name__}"
            ) from exc

    def release_retrain(self, model: str, holder: str) -> None:
        """See :meth:`Store.release_retrain` (NotReady while the database is unreachable)."""
        import sqlalchemy as sa

        try:
            self._store.release_retrain(model, holder)
        except sa.exc.SQLAlchemyError as exc:
            raise NotReady(
                f"prediction log database unreachable: {exc.__class__.__name__}"
            ) from exc

    # -- the writer thread ------------------------------------------------------------------

    def _count(self, outcome: str, n: int) -> None:
        if n <= 0:
            return
        with self._lock:
            self._counts[outcome] += n
        if self._on_count is not None:
            self._on_count(outcome, n)

    def _run(self) -> None:
        stop = False
        while not stop:
            records, markers, stop = self._collect()
            try:
                if self.write_span is not None and records:  # tracing on: a span per batch
                    with self.write_span([r.request_id for r in records]):
                        self._write(records)
                else:
                    self._write(records)
            except Exception:  # e.g. an unreadable spool: keep the writer alive
                log.exception("prediction log: writing a batch failed")
                self._to_spool(records)
            for marker in markers:
                marker.set()
        self._spool.close()
        self._store.dispose()

    def _collect(self) -> tuple[list[Record], list[threading.Event], bool]:
        records: list[Record] = []
        markers: list[threading.Event] = []
        deadline = time.monotonic() + self._interval
        while len(records) < self._batch_size:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:
                return records, markers, True
            if isinstance(item, threading.Event):
                markers.append(item)
                break
            records.extend(self._records(item))
        return records, markers, False

    def _records(self, item: PredictionEvent | FeedbackRecord) -> list[Record]:
        if isinstance(item, FeedbackRecord):
            return [item]
        try:
            return list(event_records(item))
        except Exception:  # a malformed event must not stop the writer
            log.exception("prediction log: cannot convert request %s", item.request_id)
            self._count("failed", item.inputs.n_rows)
            return []

    def _write(self, records: list[Record]) -> None:
        import sqlalchemy as sa

        if time.monotonic() < self._next_try:  # database known down: do not wait on it again
            self._to_spool(records)
            return
        try:
            self._replay()
            if records:
                rejected = self._store.insert(records)
                self._count("written", len(records) - rejected)
                self._count("failed", rejected)
        except sa.exc.SQLAlchemyError as exc:
            if self._next_try == 0.0:
                log.warning("prediction log: database unreachable (%s); spooling", exc)
            self._next_try = time.monotonic() + self._retry_interval
            self._to_spool(records)
            return
        if self._next_try:
            log.warning("prediction log: database reachable again; spool replayed")
        self._next_try = 0.0

    def _replay(self) -> None:
        if not self._spool.pending():
            return
        bad, rejected = self._spool.bad_lines, self._spool.rejected
        n = self._spool.replay(self._store.insert)
        refused = self._spool.rejected - rejected
        self._count("replayed", n - refused)
        self._count("written", n - refused)
        self._count("failed", refused + self._spool.bad_lines - bad)

    def _to_spool(self, records: list[Record]) -> None:
        if not records:
            return
        try:
            self._spool.append(records)
        except OSError as exc:
            self._spool_failed(exc, len(records))
            return
        self._count("spooled", len(records))
        if self._unspooled_since is not None:
            lost = self._counts["unspooled"] - self._unspooled_since
            log.warning("prediction log: the spool %s is writable again; %d records could not "
                        "be spooled meanwhile", self._spool.path, lost)
            self._unspooled_since = None

    def _spool_failed(self, exc: OSError, n: int) -> None:
        if self._unspooled_since is None:
            self._unspooled_since = self._counts["unspooled"]
            log.error("prediction log: the spool %s cannot be written (%s): %d records lost, "
                      "and so is every record the database cannot take until the spool can "
                      "be written (counted as modelport_predlog_records_total"
                      "{outcome=\"unspooled\"}); records spooled before are kept and will be "
                      "replayed; serving goes on", self._spool.path, exc.strerror or exc, n)
        self._count("failed", n)
        self._count("unspooled", n)


def _check_options(sample_rate: float, queue_size: int, batch_size: int, interval: float) -> None:
    if not 0.0 <= sample_rate <= 1.0:
        raise ConfigError(f"prediction log: sample_rate must be in [0, 1], got {sample_rate}")
    if queue_size < 1 or batch_size < 1:
        raise ConfigError("prediction log: queue_size and batch_size must be >= 1")
    if interval <= 0:
        raise ConfigError(f"prediction log: flush_interval_s must be > 0, got {interval}")
