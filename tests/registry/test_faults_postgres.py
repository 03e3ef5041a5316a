"""The PostgreSQL registry goes away: at start-up, and again while serving.

The server reaches PostgreSQL through a :class:`~tests.faultproxy.FaultProxy` that the test cuts
(every connection closed, new ones refused) and restores; the test itself moves the alias over
a direct connection meanwhile. ``modelport serve heart@production`` must start from what the
alias last resolved to (recorded in the artifact store), keep answering and stay ready while
the database is gone, and follow the alias again once it is back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from modelport.config import Settings
from modelport.errors import ConfigError, IntegrityError
from modelport.registry import Registry
from modelport.registry.db import unreachable_reason
from modelport.server.factory import build_app
from tests.faultproxy import FaultProxy
from tests.registry.live import free_port
from tests.registry.test_hot_swap_e2e import Load
from tests.server.test_e2e import stop

REF = "heart@production"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def reg(pg_url: str, store: Path, heart_package: Path) -> Iterator[Registry]:
    """heart 1.0.0 and 1.1.0 (the example model) in a schema of their own; production ->
    1.0.0. The test moves aliases through this direct connection."""
    with Registry.open(pg_url, store) as registry:
        registry.push(heart_package, "heart", "1.0.0")
        registry.push(heart_package, "heart", "1.1.0")
        registry.set_alias("heart", "production", "1.0.0", actor="test")
        yield registry


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    """PostgreSQL at 127.0.0.1:5432, reached through a proxy the test can cut."""
    with FaultProxy(5432) as p:
        yield p


def _settings(db: str, store: Path) -> Settings:
    return Settings(model=[REF], registry_db=db, registry_store=store)


def _error(url: str, sql: str = "SELECT 1") -> BaseException:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    except DBAPIError as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError(f"{sql} on {url} did not fail")


@pytest.mark.parametrize(("where", "sql", "unreachable"), [
    ("refused", "SELECT 1", True),
    ("pg", "SELECT * FROM no_such_table", False),
    ("sqlite-missing-dir", "SELECT 1", True),
    ("sqlite", "SELECT * FROM no_such_table", False),
], ids=["pg-refused", "pg-bad-query", "sqlite-cannot-open", "sqlite-bad-query"])
def test_only_a_database_that_cannot_be_reached_counts_as_unreachable(
        where: str, sql: str, unreachable: bool, request: pytest.FixtureRequest,
        tmp_path: Path) -> None:
    """Also when the driver's error is the cause of a modelport error (as migrate raises)."""
    url = {"refused": f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test",
           "sqlite-missing-dir": f"sqlite:///{tmp_path / 'no' / 'such.db'}",
           "sqlite": f"sqlite:///{tmp_path / 'x.db'}"}.get(where)
    err = _error(url or request.getfixturevalue("pg_url"), sql)
    wrapped = ConfigError("cannot open the registry")
    wrapped.__cause__ = err
    assert (unreachable_reason(err) is not None) is unreachable
    assert (unreachable_reason(wrapped) is not None) is unreachable


def test_a_start_records_what_the_alias_resolved_to(reg: Registry, pg_url: str,
                                                    store: Path) -> None:
    build_app(_settings(pg_url, store))
    recorded = reg.store.recall(REF)
    assert recorded is not None
    assert (recorded.name, recorded.version) == ("heart", "1.0.0")
    assert recorded.digest == reg.get("heart", "1.0.0").digest


def test_a_start_with_the_database_down_and_no_record_fails_naming_both(
        reg: Registry, pg_url: str, store: Path, proxy: FaultProxy) -> None:
    proxy.cut()
    with pytest.raises(ConfigError) as caught:
        build_app(_settings(proxy.url(pg_url), store))
    message = caught.value.message
    assert f"cannot serve {REF}: the registry database is unreachable" in message
    assert "Connection refused" in message
    assert f"has no record of what {REF} resolved to" in message


def test_a_recorded_resolution_is_served_only_from_intact_objects(
        reg: Registry, pg_url: str, store: Path, proxy: FaultProxy) -> None:
    build_app(_settings(pg_url, store))
    obj = reg.store.object_path(reg.get("heart", "1.0.0").files["model.joblib"])
    obj.chmod(0o644)
    obj.write_bytes(obj.read_bytes()[:-10])
    proxy.cut()
    with pytest.raises(IntegrityError, match="the store was altered"):
        build_app(_settings(proxy.url(pg_url), store))


class Readiness:
    """A thread asking ``/ready`` every 50 ms; keeps every status it got."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.statuses: list[int | str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> Readiness:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _poll(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.wait(0.05):
                try:
                    self.statuses.append(client.get(f"{self.url}/ready").status_code)
                except httpx.HTTPError as exc:
                    self.statuses.append(type(exc).__name__)


def _serve(db: str, store: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``modelport serve heart@production --db DB --store STORE`` (stderr to ``log``: a
    database outage is logged at every poll, which would fill a pipe nobody reads)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
           "MODELPORT_REGISTRY_POLL_S": "0.2", "MODELPORT_SWAP_GRACE_S": "0.3"}
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelport", "serve", REF, "--db", db, "--store", str(store),
             "--port", str(port), "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=err, env=env)
    url = f"http://127.0.0.1:{port}"
    _until(lambda: proc.poll() is not None or _ready(url), 60)
    assert proc.poll() is None, log.read_text()
    return proc, url


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _until(probe: Callable[[], Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.e2e
def test_serving_survives_the_database_going_away_at_start_up_and_mid_run(
        reg: Registry, pg_url: str, proxy: FaultProxy, tmp_path: Path,
        records: list[dict[str, Any]]) -> None:
    """Starts from the recorded resolution with the database cut; 0 failed requests and
    /ready 200 throughout; the alias moves made during each outage land once it ends."""
    store = reg.store.root
    build_app(_settings(pg_url, store))  # a first start, with the database up, records it
    proxy.cut()
    proc, url = _serve(proxy.url(pg_url), store, tmp_path / "server.log")
    resumed: dict[str, float] = {}
    try:
        with Readiness(url) as ready, Load(url, {"instances": records[:2]}) as load:
            time.sleep(0.5)
            reg.set_alias("heart", "production", "1.1.0", actor="test")
            time.sleep(1.0)
            assert load.versions_between(0, time.monotonic()) == {"1.0.0"}
            restored = time.monotonic()
            proxy.restore()
            resumed["after a start-up outage"] = load.switch_delay("1.1.0", restored)
            switched = reg.store.recall(REF)
            assert switched is not None and switched.version == "1.1.0"  # the switch recorded

            proxy.cut()
            cut = time.monotonic()
            reg.set_alias("heart", "production", "1.0.0", actor="test")
            time.sleep(1.5)
            assert load.versions_between(cut, time.monotonic()) == {"1.1.0"}
            restored = time.monotonic()
            proxy.restore()
            resumed["after a mid-run outage"] = load.switch_delay("1.0.0", restored)
        replies, errors = load.replies, load.errors
        statuses = ready.statuses
    finally:
        code = stop(proc)
    failed = [r for r in replies if r.status != 200]
    print(f"\npostgres outage: {len(replies) + len(errors)} requests, "
          f"{len(failed) + len(errors)} failed; /ready asked {len(statuses)} times, "
          f"{sum(s != 200 for s in statuses)} not 200; following resumed "
          + ", ".join(f"{k} in {v:.2f} s" for k, v in resumed.items()))
    assert (failed, errors) == ([], [])
    assert set(statuses) == {200}
    assert code == 0
    log = (tmp_path / "server.log").read_text()
    assert f"serving {REF} as heart:1.0.0, what it resolved to" in log
    recorded = reg.store.recall(REF)
    assert recorded is not None and recorded.version == "1.0.0"
