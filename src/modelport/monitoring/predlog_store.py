"""Where prediction-log records go: SQL tables (idempotent inserts) and a local spool file.

Both ends are idempotent on purpose. A record is keyed by ``(request_id, row_index, model,
version)`` (model and version are in the key because a shadow deployment logs the same request
once per version), inserts skip keys already present, so replaying a spool that was written to
the database just before a crash does not duplicate anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from modelport.errors import ConfigError
from modelport.monitoring.quality import LabeledRow

__all__ = ["FeedbackRecord", "PredictionRecord", "RealizedAccuracy", "Record", "Spool", "Store"]


@dataclass(frozen=True)
class PredictionRecord:
    """One row of one answered request, joined with its outputs."""

    request_id: str
    row_index: int
    model: str
    version: str
    ts: float
    route: str
    arm: str | None
    latency_s: float
    inputs: dict[str, Any]
    outputs: dict[str, Any]


@dataclass(frozen=True)
class FeedbackRecord:
    """A delayed true label for one row of a request."""

    request_id: str
    row_index: int
    label: str | int | float | bool
    ts: float


Record = PredictionRecord | FeedbackRecord
_Insert = Callable[[list[Record]], int]


@dataclass(frozen=True)
class RealizedAccuracy:
    """Predictions of a model that received a label, and how many of them were right."""

    model: str
    version: str | None
    labeled: int
    correct: int

    @property
    def accuracy(self) -> float | None:
        """``correct / labeled``; None while nothing is labeled."""
        return self.correct / self.labeled if self.labeled else None


def _dumps(obj: Any) -> str:
    opts = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    return orjson.dumps(obj, option=opts, default=str).decode()


def _sqlite_wal(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def _same(prediction: Any, label: Any) -> bool:
    try:
        return float(prediction) == float(label)
    except (TypeError, ValueError):
        return str(prediction) == str(label)


class Store:
    """The prediction and feedback tables in SQLite or PostgreSQL (SQLAlchemy 2)."""

    def __init__(self, url: str, *, table_prefix: str = "modelport_") -> None:
        import sqlalchemy as sa

        self.url = sa.engine.make_url(url)
        if self.url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ConfigError(f"prediction log: database must be sqlite or postgresql, got {url!r}")
        self._sa = sa
        self.engine = sa.create_engine(
            self.url, json_serializer=_dumps, pool_pre_ping=True, connect_args=self._connect_args()
        )
        if self.url.get_backend_name() == "sqlite":  # readers (reports) never block the writer
            sa.event.listen(self.engine, "connect", _sqlite_wal)
        self._tables(sa, table_prefix)
        self._schema_ready = False

    def _connect_args(self) -> dict[str, Any]:
        if self.url.get_backend_name() == "postgresql":
            return {"connect_timeout": 5}
        if self.url.database not in (None, "", ":memory:"):
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
        return {"timeout": 30}

    def _tables(self, sa: Any, prefix: str) -> None:
        from sqlalchemy.dialects.postgresql import JSONB

        meta, json = sa.MetaData(), sa.JSON().with_variant(JSONB(), "postgresql")

        def key() -> list[Any]:
            return [
                sa.Column("request_id", sa.Text, primary_key=True),
                sa.Column("row_index", sa.Integer, primary_key=True, autoincrement=False),
            ]

        self.predictions = sa.Table(
            f"{prefix}predictions", meta, *key(),
            sa.Column("model", sa.Text, primary_key=True),
            sa.Column("version", sa.Text, primary_key=True),
            sa.Column("ts", sa.Float, nullable=False, index=True),
            sa.Column("route", sa.Text, nullable=False),
            sa.Column("arm", sa.Text),
            sa.Column("latency_s", sa.Float, nullable=False),
            sa.Column("inputs", json, nullable=False),
            sa.Column("outputs", json, nullable=False),
        )  # fmt: skip
        self.feedback = sa.Table(
            f"{prefix}feedback", meta, *key(),
            sa.Column("label", json, nullable=False),
            sa.Column("ts", sa.Float, nullable=False),
        )  # fmt: skip
        self.retrain_claims = sa.Table(
            f"{prefix}retrain_claims", meta,
            sa.Column("model", sa.Text, primary_key=True),
            sa.Column("holder", sa.Text, nullable=False),
            sa.Column("ts", sa.Float, nullable=False),
        )  # fmt: skip
        self.metadata = meta

    def _insert_stmt(self, table: Any) -> Any:
        from sqlalchemy.dialects import postgresql, sqlite

        if self.url.get_backend_name() == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    def insert(self, records: list[Record]) -> int:
        """Write records; keys already present are left as they are (predictions) or updated
        to the latest label (feedback). Returns how many records the database refused as
        invalid (e.g. a NUL character PostgreSQL cannot store): a batch that fails that way is
        retried record by record, so one bad record never blocks the others. Any other
        database error (unreachable, ...) is raised as SQLAlchemyError."""
        try:
            self._insert_all(records)
        except self._sa.exc.DataError:
            if len(records) == 1:
                return 1
            return sum(self.insert([record]) for record in records)
        return 0

    def _insert_all(self, records: list[Record]) -> None:
        preds = [asdict(r) for r in records if isinstance(r, PredictionRecord)]
        labels: dict[tuple[str, int], dict[str, Any]] = {}
        for r in records:
            if isinstance(r, FeedbackRecord):
                key, known = (r.request_id, r.row_index), labels.get((r.request_id, r.row_index))
                if known is None or known["ts"] <= r.ts:
                    labels[key] = asdict(r)
        if not self._schema_ready:
            self.metadata.create_all(self.engine)
            self._schema_ready = True
        with self.engine.begin() as conn:
            if preds:
                conn.execute(self._insert_stmt(self.predictions).on_conflict_do_nothing(), preds)
            if labels:
                stmt = self._insert_stmt(self.feedback)
                stmt = stmt.on_conflict_do_update(  # the latest label wins, whatever the
                    index_elements=["request_id", "row_index"],  # order of arrival (replays)
                    set_={"label": stmt.excluded.label, "ts": stmt.excluded.ts},
                    where=self.feedback.c.ts <= stmt.excluded.ts,
                )
                conn.execute(stmt, list(labels.values()))

    def realized_accuracy(self, model: str, version: str | None = None) -> RealizedAccuracy:
        """Compare each labeled prediction of ``model`` (and ``version``) with its label."""
        p, f, sa = self.predictions, self.feedback, self._sa
        on = sa.and_(p.c.request_id == f.c.request_id, p.c.row_index == f.c.row_index)
        query = sa.select(p.c.outputs, f.c.label).join(f, on).where(p.c.model == model)
        if version is not None:
            query = query.where(p.c.version == version)
        labeled = correct = 0
        with self.engine.connect() as conn:
            for outputs, label in conn.execute(query):
                labeled += 1
                correct += _same(outputs.get("prediction"), label)
        return RealizedAccuracy(model, version, labeled, correct)

    def labeled_rows(self, model: str, *, since: float | None = None,
                     limit: int | None = None) -> list[LabeledRow]:
        """Logged predictions of ``model`` that have a label, newest prediction first: every
        version and arm, predicted at or after ``since``, at most ``limit`` of them. One row
        per prediction and its latest label (the label table keeps one per row)."""
        p, f, sa = self.predictions, self.feedback, self._sa
        on = sa.and_(p.c.request_id == f.c.request_id, p.c.row_index == f.c.row_index)
        query = (sa.select(p.c.version, p.c.arm, p.c.ts, p.c.outputs, f.c.label)
                 .join(f, on).where(p.c.model == model).order_by(p.c.ts.desc()))
        if since is not None:
            query = query.where(p.c.ts >= since)
        if limit is not None:
            query = query.limit(limit)
        if not self._schema_ready:  # the writer creates the tables; until then: nothing
            inspector = sa.inspect(self.engine)
            if not all(inspector.has_table(t.name) for t in (p, f)):
                return []
        with self.engine.connect() as conn:
            return [LabeledRow(version, arm, ts, (outputs or {}).get("prediction"),
                               (outputs or {}).get("probabilities"), label)
                    for version, arm, ts, outputs, label in conn.execute(query)]

    def recent(self, *, model: str | None = None, version: str | None = None,
               arm: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The latest ``limit`` prediction rows, newest first, with their label when one
        arrived; filtered by model, version and arm (``ts`` is indexed: a cheap query)."""
        p, f, sa = self.predictions, self.feedback, self._sa
        if not self._schema_ready:  # the writer creates the tables; until then: nothing
            inspector = sa.inspect(self.engine)
            if not all(inspector.has_table(t.name) for t in (p, f)):
                return []
        on = sa.and_(p.c.request_id == f.c.request_id, p.c.row_index == f.c.row_index)
        query = sa.select(p, f.c.label).outerjoin(f, on)
        for column, value in ((p.c.model, model), (p.c.version, version), (p.c.arm, arm)):
            if value is not None:
                query = query.where(column == value)
        query = query.order_by(p.c.ts.desc()).limit(max(1, min(limit, 500)))
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def claim_retrain(self, model: str, holder: str, now: float, stale_s: float) -> bool:
        """Whether ``holder`` holds (or now takes) the open retraining episode of ``model``:
        the servers sharing this database call the webhook once per episode between them. A
        claim not renewed (by this call) for ``stale_s`` seconds (its holder is gone) is
        free."""
        table = self.retrain_claims
        self._ensure_schema()
        with self.engine.begin() as conn:
            conn.execute(table.delete().where(table.c.model == model,
                                              table.c.ts < now - stale_s))
            conn.execute(self._insert_stmt(table).on_conflict_do_nothing(),
                         [{"model": model, "holder": holder, "ts": now}])
            renewed = conn.execute(table.update().where(
                table.c.model == model, table.c.holder == holder).values(ts=now))
            held: bool = renewed.rowcount == 1
        return held

    def release_retrain(self, model: str, holder: str) -> None:
        """End ``holder``'s episode of ``model`` (its condition cleared)."""
        table = self.retrain_claims
        self._ensure_schema()
        with self.engine.begin() as conn:
            conn.execute(table.delete().where(table.c.model == model,
                                              table.c.holder == holder))

    def _ensure_schema(self) -> None:
        """Create missing tables; another process (or the log's writer) may be creating them
        at the same moment, so a clash is tried once more."""
        if self._schema_ready:
            return
        exc = self._sa.exc
        try:
            self.metadata.create_all(self.engine)
        except (exc.OperationalError, exc.ProgrammingError, exc.IntegrityError):
            self.metadata.create_all(self.engine)
        self._schema_ready = True

    def dispose(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()


class Spool:
    """An append-only JSON-lines file per process, fsync'd per batch, replayed when the
    database is back. Files of dead processes (no lock held) are adopted and replayed too."""

    PATTERN = "predlog-*.spool.jsonl"

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        name = f"predlog-{os.getpid()}-{id(self):x}"
        self.path = directory / f"{name}.spool.jsonl"
        # Locked under a name no other process looks at, then renamed: never seen unlocked.
        creating = directory / f"{name}.creating"
        self._file: IO[bytes] = open(creating, "a+b")  # noqa: SIM115 - closed in close()
        fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(creating, self.path)
        self.bad_lines = 0
        """Lines that could not be decoded on replay (a write torn by a crash)."""
        self.rejected = 0
        """Replayed records the database refused as invalid (see :meth:`Store.insert`)."""

    def append(self, records: list[Record]) -> None:
        """Append records durably (written and fsync'd before returning). When that fails
        (a full disk, a size limit) the file is cut back to where it was, so no half-written
        line is left for the replay, and the OSError is raised."""
        lines = [_dumps({"k": "p" if isinstance(r, PredictionRecord) else "f", **asdict(r)})
                 for r in records]  # fmt: skip
        data = memoryview(("\n".join(lines) + "\n").encode())
        fd = self._file.fileno()  # unbuffered writes: a failed one leaves nothing pending
        size = os.fstat(fd).st_size
        try:
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise

    def pending(self) -> bool:
        """Whether this spool or an orphaned one holds records."""
        return os.fstat(self._file.fileno()).st_size > 0 or bool(self._orphans())

    def replay(self, insert: _Insert, chunk: int = 500) -> int:
        """Insert every spooled record, then empty the spools. Returns how many were read;
        on an insert error the spools stay as they are (replaying again is harmless)."""
        total = 0
        for path in self._orphans():
            with open(path, "r+b") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # another process adopted it first
                    continue
                total += self._replay_file(handle, insert, chunk)
                path.unlink()
        total += self._replay_file(self._file, insert, chunk)
        return total

    def _replay_file(self, handle: IO[bytes], insert: _Insert, chunk: int) -> int:
        handle.seek(0)
        total, batch = 0, []
        for record in self._decode(handle):
            batch.append(record)
            if len(batch) >= chunk:
                self.rejected += insert(batch)
                total, batch = total + len(batch), []
        if batch:
            self.rejected += insert(batch)
        handle.truncate(0)
        os.fsync(handle.fileno())
        return total + len(batch)

    def _decode(self, handle: IO[bytes]) -> Iterator[Record]:
        for line in handle:
            try:
                data = orjson.loads(line)
                kind = data.pop("k")
                yield PredictionRecord(**data) if kind == "p" else FeedbackRecord(**data)
            except (orjson.JSONDecodeError, TypeError, KeyError):
                self.bad_lines += 1

    def _orphans(self) -> list[Path]:
        """Spool files whose owner is gone (nobody holds their lock)."""
        found = []
        for path in sorted(self.directory.glob(self.PATTERN)):
            if path != self.path and _lockable(path):
                found.append(path)
        return found

    def close(self) -> None:
        """Release the spool; an empty file is removed, a non-empty one waits to be adopted."""
        empty = os.fstat(self._file.fileno()).st_size == 0
        if empty:
            self.path.unlink(missing_ok=True)
        self._file.close()


def _lockable(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except FileNotFoundError:  # replayed and removed meanwhile
        return False
    return True
