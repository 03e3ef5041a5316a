"""The catalog's queries, each one small function on an open connection (one transaction).

Writers call :func:`lock_model` first: on PostgreSQL it takes the model row ``FOR UPDATE``, so
the pushes and alias moves of one model run one after another; on SQLite the whole write
transaction already holds the database lock (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, RowMapping

from modelport.errors import ModelNotFound
from modelport.registry.records import AliasMove, ModelVersion
from modelport.registry.schema import alias_events, aliases, files, models, versions

__all__ = [
    "alias_map",
    "alias_rows_for_version",
    "alias_target",
    "delete_version",
    "events",
    "find_model",
    "insert_version",
    "lock_model",
    "model_names",
    "move_alias",
    "now",
    "version_names",
    "version_record",
]


def now() -> datetime:
    """The time recorded on rows: timezone-aware UTC."""
    return datetime.now(timezone.utc)


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:  # SQLite keeps no zone; we only ever write UTC
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def find_model(conn: Connection, name: str) -> int:
    """The model's id, or :class:`ModelNotFound`."""
    model_id = conn.scalar(select(models.c.id).where(models.c.name == name))
    if model_id is None:
        raise ModelNotFound(f"no model named '{name}' is registered; push one with: "
                            f"modelport registry push PACKAGE --name {name}")
    return int(model_id)


def lock_model(conn: Connection, name: str, *, create: bool) -> int:
    """The model's id, its row locked until the transaction ends (created when ``create``)."""
    if create:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        conn.execute(dialect.insert(models).values(name=name, created_at=now())
                     .on_conflict_do_nothing(index_elements=["name"]))
    query = select(models.c.id).where(models.c.name == name).with_for_update()
    model_id = conn.scalar(query)
    if model_id is None:
        return find_model(conn, name)
    return int(model_id)


def model_names(conn: Connection) -> list[str]:
    """Every registered model name, sorted."""
    return list(conn.scalars(select(models.c.name).order_by(models.c.name)))


def version_names(conn: Connection, model_id: int) -> list[str]:
    """Every version string of a model (unordered: sort with ``SemVer.key``)."""
    return list(conn.scalars(select(versions.c.version).where(versions.c.model_id == model_id)))


def _version_row(conn: Connection, model_id: int, version: str) -> RowMapping | None:
    query = select(versions).where(versions.c.model_id == model_id,
                                   versions.c.version == version)
    return conn.execute(query).mappings().first()


def version_record(conn: Connection, name: str, version: str) -> ModelVersion:
    """The registered version, or :class:`ModelNotFound` listing what exists."""
    model_id = find_model(conn, name)
    row = _version_row(conn, model_id, version)
    if row is None:
        known = ", ".join(version_names(conn, model_id)) or "none"
        raise ModelNotFound(f"model '{name}' has no version {version} (registered: {known})")
    file_rows = conn.execute(select(files.c.path, files.c.sha256)
                             .where(files.c.version_id == row["id"])).all()
    return ModelVersion(
        name=name, version=row["version"], flavor=row["flavor"], digest=row["digest"],
        files={str(path): str(sha) for path, sha in file_rows},
        created_at=_aware(row["created_at"]), created_by=row["created_by"],
        manifest=row["manifest"],
    )


def insert_version(conn: Connection, model_id: int, record: ModelVersion) -> None:
    """Add a version and its file list."""
    version_id = conn.execute(insert(versions).values(
        model_id=model_id, version=record.version, flavor=record.flavor, digest=record.digest,
        manifest=record.manifest, created_at=record.created_at, created_by=record.created_by,
    ).returning(versions.c.id)).scalar_one()
    conn.execute(insert(files), [{"version_id": version_id, "path": p, "sha256": s}
                                 for p, s in record.files.items()])


def alias_rows_for_version(conn: Connection, model_id: int, version: str) -> list[str]:
    """The aliases that point at ``version``."""
    query = (select(aliases.c.alias).join(versions, versions.c.id == aliases.c.version_id)
             .where(aliases.c.model_id == model_id, versions.c.version == version))
    return sorted(conn.scalars(query))


def delete_version(conn: Connection, model_id: int, version: str) -> None:
    """Remove a version and its file list (its alias history stays)."""
    row = _version_row(conn, model_id, version)
    if row is None:
        return
    conn.execute(delete(files).where(files.c.version_id == row["id"]))
    conn.execute(delete(versions).where(versions.c.id == row["id"]))


def alias_map(conn: Connection, model_id: int) -> dict[str, str]:
    """alias -> version for one model."""
    query = (select(aliases.c.alias, versions.c.version)
             .join(versions, versions.c.id == aliases.c.version_id)
             .where(aliases.c.model_id == model_id).order_by(aliases.c.alias))
    return {str(alias): str(version) for alias, version in conn.execute(query).all()}


def alias_target(conn: Connection, name: str, alias: str) -> str | None:
    """The version an alias points at, in one indexed query (None when unset)."""
    query = (select(versions.c.version)
             .select_from(aliases.join(versions, versions.c.id == aliases.c.version_id)
                          .join(models, models.c.id == aliases.c.model_id))
             .where(models.c.name == name, aliases.c.alias == alias))
    return conn.scalar(query)


def move_alias(conn: Connection, model_id: int, move: AliasMove) -> None:
    """Point the alias at ``move.to_version`` and record the move, in the caller's
    transaction (the model row is locked)."""
    row = _version_row(conn, model_id, move.to_version)
    if row is None:  # the caller checked; a concurrent delete lost the race to our lock
        raise ModelNotFound(f"model '{move.name}' has no version {move.to_version}")
    values: dict[str, Any] = {"version_id": row["id"], "updated_at": move.at}
    where = (aliases.c.model_id == model_id) & (aliases.c.alias == move.alias)
    if move.from_version is None:
        conn.execute(insert(aliases).values(model_id=model_id, alias=move.alias, **values))
    else:
        conn.execute(update(aliases).where(where).values(**values))
    conn.execute(insert(alias_events).values(
        model_id=model_id, alias=move.alias, from_version=move.from_version,
        to_version=move.to_version, kind=move.kind, at=move.at, actor=move.actor,
        reason=move.reason,
    ))


def events(conn: Connection, name: str, alias: str | None = None) -> list[AliasMove]:
    """Recorded moves of a model's aliases (or of one alias), oldest first."""
    model_id = find_model(conn, name)
    query = select(alias_events).where(alias_events.c.model_id == model_id)
    if alias is not None:
        query = query.where(alias_events.c.alias == alias)
    rows = conn.execute(query.order_by(alias_events.c.id)).mappings().all()
    return [_move(name, row) for row in rows]


def _move(name: str, row: RowMapping) -> AliasMove:
    kind: Literal["move", "rollback"] = "rollback" if row["kind"] == "rollback" else "move"
    return AliasMove(name=name, alias=row["alias"], from_version=row["from_version"],
                     to_version=row["to_version"], kind=kind, at=_aware(row["at"]),
                     actor=row["actor"], reason=row["reason"])
