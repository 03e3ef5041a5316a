"""The catalog's tables (SQLAlchemy Core). Alembic migrations create and change them; this module
is what the queries are written against, and must match the latest migration (a test checks).

::

    registry_models         one row per model name; locked FOR UPDATE to serialise writers
    registry_versions       one row per (model, version): the manifest as pushed, who, when
    registry_files          the files of a version: path -> sha256 of the store object
    registry_aliases        (model, alias) -> version; moved in place
    registry_alias_events   every move: when, from, to, actor, reason, kind (move|rollback)
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = ["VERSION_TABLE", "alias_events", "aliases", "files", "metadata", "models", "versions"]

VERSION_TABLE = "registry_alembic_version"
"""Alembic's bookkeeping table, named so other modelport schemas in the same database don't
collide with the registry's."""

metadata = MetaData()

models = Table(
    "registry_models",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

versions = Table(
    "registry_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("registry_models.id"), nullable=False),
    Column("version", String(128), nullable=False),
    Column("flavor", String(32), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("manifest", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200), nullable=True),
    UniqueConstraint("model_id", "version", name="uq_registry_versions_model_version"),
)

files = Table(
    "registry_files",
    metadata,
    Column("version_id", Integer, ForeignKey("registry_versions.id", ondelete="CASCADE"),
           primary_key=True),
    Column("path", String(255), primary_key=True),
    Column("sha256", String(64), nullable=False, index=True),
)

aliases = Table(
    "registry_aliases",
    metadata,
    Column("model_id", Integer, ForeignKey("registry_models.id"), primary_key=True),
    Column("alias", String(64), primary_key=True),
    Column("version_id", Integer, ForeignKey("registry_versions.id"), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

alias_events = Table(
    "registry_alias_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("registry_models.id"), nullable=False, index=True),
    Column("alias", String(64), nullable=False),
    Column("from_version", String(128), nullable=True),
    Column("to_version", String(128), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(200), nullable=True),
    Column("reason", Text, nullable=True),
)
