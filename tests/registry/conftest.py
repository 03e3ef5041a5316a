"""Registry fixtures: a fresh catalog per test on SQLite and on the real PostgreSQL.

PostgreSQL runs get their own schema (``t_<random>``, selected with ``search_path`` in the
URL) that is dropped afterwards, so parallel runs never see each other's rows.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from modelport.registry import Registry
from tests.registry.regworkers import make_package

PG_URL = os.environ.get("MODELPORT_TEST_PG_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file of its own."""
    return f"sqlite:///{tmp_path / 'catalog' / 'registry.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a schema of its own, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except OperationalError as exc:  # pragma: no cover - only where no PostgreSQL runs
        admin.dispose()
        pytest.skip(f"PostgreSQL at {PG_URL} is not reachable: {exc.orig}")
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test on SQLite and on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture
def registry(db_url: str, tmp_path: Path) -> Iterator[Registry]:
    """An empty registry with its own store."""
    with Registry.open(db_url, tmp_path / "store") as reg:
        yield reg


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A tiny (not loadable) package: enough for catalog behaviour."""
    return make_package(tmp_path / "pkg", b"weights v1")


@pytest.fixture
def package_b(tmp_path: Path) -> Path:
    """A second tiny package with other content."""
    return make_package(tmp_path / "pkg-b", b"weights v2")


@pytest.fixture(scope="session")
def records(heart_features: Any) -> list[dict[str, Any]]:
    """A few rows of the example data as JSON-ready records."""
    return json.loads(heart_features.head(5).to_json(orient="records"))  # type: ignore[no-any-return]
