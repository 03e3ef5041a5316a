"""A fleet per test module: 3 replicas behind nginx, the machine's PostgreSQL and Redis
(``topology.py``). Skipped, saying why, when nginx, PostgreSQL or Redis is missing."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from tests.fleet.load import find_wrk
from tests.fleet.topology import ADMIN_KEY, PG_URL, Fleet, FleetSpec, find_nginx

INSTALL_HINT = "run scripts/install-verify-tools"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def fleet_ready() -> None:
    """Skip unless nginx, PostgreSQL and Redis are all there."""
    if find_nginx() is None:
        pytest.skip(f"nginx is not installed: {INSTALL_HINT}")
    engine = create_engine(PG_URL)
    try:
        with engine.connect():
            pass
    except OperationalError as exc:  # pragma: no cover - only where no PostgreSQL runs
        pytest.skip(f"PostgreSQL at {PG_URL} is not reachable: {exc.orig}")
    finally:
        engine.dispose()
    if not _reachable("127.0.0.1", 6379):  # pragma: no cover
        pytest.skip("Redis at 127.0.0.1:6379 is not reachable")


@pytest.fixture(scope="session")
def wrk() -> str:
    """wrk's path, or skip."""
    path = find_wrk()
    if path is None:
        pytest.skip(f"wrk is not installed: {INSTALL_HINT}")
    return path


def start_fleet(root: Path, package: Path, **spec: Any) -> Fleet:
    """A fleet of a model name of its own (PostgreSQL and Redis are shared)."""
    fleet = Fleet.create(root, FleetSpec(str(package), f"fleet_{uuid.uuid4().hex[:8]}", **spec))
    try:
        fleet.up()
    except BaseException:
        fleet.down()
        raise
    return fleet


@pytest.fixture(scope="module")
def fleet(fleet_ready: None, heart_package: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """3 replicas behind nginx, serving MODEL@production (1.0.0), for this module."""
    running = start_fleet(tmp_path_factory.mktemp("fleet"), heart_package)
    yield running
    running.down()


@pytest.fixture(scope="session")
def records(heart_features: pd.DataFrame) -> list[dict[str, Any]]:
    """The example rows as JSON-ready records."""
    rows: list[dict[str, Any]] = json.loads(heart_features.to_json(orient="records"))
    return rows


@pytest.fixture(scope="session")
def one_row(records: list[dict[str, Any]]) -> dict[str, Any]:
    """A native one-row prediction body."""
    return {"features": records[0]}


def served_versions(fleet: Fleet) -> list[str]:
    """The version each replica answers with now (asked directly, not through nginx)."""
    out = []
    for i in range(fleet.spec.replicas):
        resp = httpx.get(f"{fleet.replica_url(i)}/models/{fleet.spec.model}", timeout=5)
        resp.raise_for_status()
        out.append(str(resp.json()["version"]))
    return out


def admin_view(fleet: Fleet, i: int) -> dict[str, Any]:
    """What replica ``i``'s admin API says of the model: default version, alias follower."""
    resp = httpx.get(f"{fleet.replica_url(i)}/admin/models", timeout=5,
                     headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    resp.raise_for_status()
    view: dict[str, Any] = resp.json()[fleet.spec.model]
    return view
