"""Engines, migrations and retried transactions for the catalog (SQLite or PostgreSQL).

SQLite is opened in WAL mode with a busy timeout, and a write transaction starts with
``BEGIN IMMEDIATE`` so concurrent writers from several processes queue instead of failing
half-way; PostgreSQL writers lock the model's row (``SELECT … FOR UPDATE``). Whatever still
fails transiently (a lock wait past the timeout, a serialization failure, a deadlock) is retried
with a short random back-off.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, event, exc, text
from sqlalchemy.engine import Connection, Engine, make_url

from modelport.errors import ConfigError
from modelport.registry.schema import VERSION_TABLE

__all__ = ["ATTEMPTS", "BUSY_TIMEOUT_S", "connect", "is_transient", "migrate", "transact",
           "unreachable_reason"]

T = TypeVar("T")
ATTEMPTS = 10
BUSY_TIMEOUT_S = 30.0
_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_PG_MIGRATION_LOCK = 0x6D70_7267  # pg_advisory_xact_lock key: one migrator at a time
_TRANSIENT_SQLSTATES = {"40001", "40P01", "55P03"}
_UNREACHABLE_SQLSTATES = {"57P01", "57P02", "57P03"}  # shut down, crashed, cannot connect now
_UNREACHABLE_SQLITE = {"SQLITE_CANTOPEN", "SQLITE_IOERR"}


def connect(url: str) -> Engine:
    """An engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://…``)."""
    try:
        parsed = make_url(url)
    except exc.ArgumentError as err:
        raise ConfigError(f"registry database URL '{url}' is not valid: {err}") from err
    try:
        if parsed.get_backend_name() == "sqlite":
            return _sqlite_engine(url, parsed.database)
        # a host that black-holes packets must not hang a poll (or a start-up) for minutes
        timeout = {} if "connect_timeout" in parsed.query else {"connect_timeout": 5}
        return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4,
                             connect_args=timeout)
    except (exc.NoSuchModuleError, exc.ArgumentError, ImportError) as err:
        raise ConfigError(f"cannot use registry database '{_safe(url)}': {err}; use "
                          "sqlite:///path.db or postgresql+psycopg://user@host/db "
                          "(pip install 'modelport[postgres]')") from err


def _sqlite_engine(url: str, database: str | None) -> Engine:
    if not database or database == ":memory:":
        raise ConfigError("the registry needs a SQLite file shared by every process; use "
                          "sqlite:///path/to/registry.db, not an in-memory database")
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy's begin event below issues BEGIN
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("modelport_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def is_transient(err: BaseException) -> bool:
    """True for lock timeouts, serialization failures and deadlocks: worth another try."""
    if not isinstance(err, exc.DBAPIError):
        return False
    if getattr(err.orig, "sqlstate", None) in _TRANSIENT_SQLSTATES:
        return True
    message = str(err.orig).lower()
    return "database is locked" in message or "database is busy" in message


def unreachable_reason(err: BaseException) -> str | None:
    """The database's own words when ``err`` (or an error that caused it) says the database
    cannot be reached — refused, timed out, connection lost, shutting down — else None.

    PostgreSQL refusing a login also counts (its driver tells the cases apart only in prose):
    a server that already served a version keeps serving it and keeps saying why it cannot
    follow, rather than stopping."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, (exc.OperationalError, exc.InterfaceError)):
            return _connection_failure(seen.orig)
        seen = seen.__cause__
    return None


def _connection_failure(orig: BaseException | None) -> str | None:
    words = (str(orig).strip().splitlines() or ["no answer"])[0]
    sqlite_name = getattr(orig, "sqlite_errorname", None)
    if sqlite_name is not None:
        return words if sqlite_name in _UNREACHABLE_SQLITE else None
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is None or sqlstate.startswith("08") or sqlstate in _UNREACHABLE_SQLSTATES:
        return words
    return None


def transact(engine: Engine, work: Callable[[Connection], T], *, write: bool = False) -> T:
    """Run ``work`` in one transaction, retried from scratch on a transient failure."""
    options_engine = engine.execution_options(modelport_write=write)
    for attempt in range(ATTEMPTS):
        try:
            with options_engine.begin() as conn:
                return work(conn)
        except exc.DBAPIError as err:
            if not is_transient(err) or attempt == ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def migrate(engine: Engine) -> str:
    """Bring the catalog to the newest schema (idempotent, safe from several processes);
    returns the revision it is at."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()

    def upgrade(conn: Connection) -> str:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        if context.get_current_revision() != head:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
        return str(head)

    try:
        return transact(engine, upgrade, write=True)
    except exc.OperationalError as err:
        raise ConfigError(f"cannot open the registry database '{_safe(str(engine.url))}': "
                          f"{str(err.orig).strip()}") from err


def _safe(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        return "<invalid URL>"
