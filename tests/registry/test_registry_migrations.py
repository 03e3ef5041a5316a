"""Alembic: the catalog is created by migrations and stays upgradable across releases."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from modelport.registry import Registry
from modelport.registry import db as registry_db
from modelport.registry.schema import VERSION_TABLE, metadata


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(registry_db.__file__).parent
                                                  / "migrations"))
    return config


def test_open_migrates_an_empty_database_to_the_head(db_url: str, tmp_path: Path) -> None:
    Registry.open(db_url, tmp_path / "store").close()
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar() == "0001"
        assert "registry_alias_events" in inspect(conn).get_table_names()
    engine.dispose()


def test_the_migrated_schema_matches_the_tables_the_code_queries(db_url: str,
                                                                 tmp_path: Path) -> None:
    Registry.open(db_url, tmp_path / "store").close()
    engine = create_engine(db_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        assert compare_metadata(context, metadata) == []
    engine.dispose()


def test_a_catalog_made_by_revision_0001_opens_with_its_data(sqlite_url: str,
                                                              tmp_path: Path,
                                                              package: Path) -> None:
    """A database last migrated by 0001 (the first release) is upgraded in place by open()."""
    engine = registry_db.connect(sqlite_url)
    config = _config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
    engine.dispose()
    with Registry.open(sqlite_url, tmp_path / "store") as reg:
        reg.push(package, "heart")
    with Registry.open(sqlite_url, tmp_path / "store") as reg:
        assert [v.version for v in reg.versions("heart")] == ["1.0.0"]


def test_open_twice_does_not_migrate_again(sqlite_url: str, tmp_path: Path) -> None:
    Registry.open(sqlite_url, tmp_path / "store").close()
    engine = registry_db.connect(sqlite_url)
    assert registry_db.migrate(engine) == "0001"
    engine.dispose()
