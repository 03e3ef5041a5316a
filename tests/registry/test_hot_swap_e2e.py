"""Hot swap under load on the real server: ``modelport serve heart@production`` in its own
process, continuous concurrent requests, the alias moved three times through the registry
(once to a broken version), then one rollback command. No request may fail."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from modelport.cli.rollout import register
from modelport.registry import Registry
from tests.registry.pkgs import broken_golden
from tests.server.test_e2e import start_server, stop

pytestmark = pytest.mark.e2e

WORKERS = 6
BROKEN = "1.1.0"


@dataclass(frozen=True)
class Reply:
    """One request as the client saw it (monotonic seconds)."""

    sent: float
    received: float
    status: int
    version: str


class Load:
    """``WORKERS`` threads posting predictions back to back until stopped (or 40 s)."""

    def __init__(self, url: str, body: dict[str, Any]) -> None:
        self.url, self.body = url, body
        self.replies: list[Reply] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._hammer, daemon=True)
                         for _ in range(WORKERS)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def _hammer(self) -> None:
        deadline = time.monotonic() + 40
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                sent = time.monotonic()
                try:
                    answer = client.post("/models/heart/predict", json=self.body)
                except httpx.HTTPError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                version = answer.headers.get("x-model-version", "?")
                if answer.status_code == 200 and answer.json()["version"] != version:
                    version = "header and body disagree"
                self.replies.append(Reply(sent, time.monotonic(), answer.status_code, version))

    def switch_delay(self, version: str, moved: float, timeout: float = 10.0) -> float:
        """Seconds from ``moved`` until the first answer from ``version`` arrived; then checks
        that every request sent after that answer was answered by ``version``."""
        first = _until(lambda: min((r.received for r in list(self.replies)
                                    if r.sent > moved and r.version == version), default=None),
                       timeout)
        time.sleep(0.6)
        later = {r.version for r in list(self.replies) if r.sent > first}
        assert later == {version}, f"after switching to {version}, answers came from {later}"
        return first - moved

    def versions_between(self, start: float, end: float) -> set[str]:
        """Versions that answered requests sent in [start, end]."""
        return {r.version for r in list(self.replies) if start <= r.sent <= end}


def _until(probe: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while (value := probe()) is None or value is False:
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
    return value


ADMIN = "admin-secret"
AUTH = {"authorization": f"Bearer {ADMIN}"}


@pytest.fixture
def registry_env(tmp_path: Path, heart_package: Path) -> Iterator[tuple[Registry, dict[str,
                                                                                      str]]]:
    """1.0.0, 1.2.0, 1.3.0 (good) and 1.1.0 (golden outputs that do not match); production
    -> 1.0.0; the server's environment pointing at that registry."""
    db = f"sqlite:///{tmp_path / 'registry.db'}"
    store = tmp_path / "store"
    with Registry.open(db, store) as reg:
        reg.push(heart_package, "heart", "1.0.0")
        reg.push(broken_golden(heart_package, tmp_path / "broken"), "heart", BROKEN)
        reg.push(heart_package, "heart", "1.2.0")
        reg.push(heart_package, "heart", "1.3.0")
        reg.set_alias("heart", "production", "1.0.0", actor="test")
        yield reg, {"MODELPORT_REGISTRY_DB": db, "MODELPORT_REGISTRY_STORE": str(store),
                    "MODELPORT_ADMIN_KEYS": ADMIN, "MODELPORT_REGISTRY_POLL_S": "0.2",
                    "MODELPORT_SWAP_GRACE_S": "0.3"}


@pytest.fixture
def server(registry_env: tuple[Registry, dict[str, str]]
           ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    proc, url = start_server("heart@production", "--log-level", "warning",
                             env=registry_env[1])
    yield url, proc
    assert stop(proc) == 0


def _follow(url: str) -> dict[str, Any]:
    status: dict[str, Any] = httpx.get(f"{url}/admin/models", headers=AUTH
                                       ).json()["heart"]["follow"]
    return status


def test_hot_swap_under_load_fails_no_request(
        registry_env: tuple[Registry, dict[str, str]],
        server: tuple[str, subprocess.Popen[bytes]],
        records: list[dict[str, Any]]) -> None:
    reg, (url, proc) = registry_env[0], server
    cli = typer.Typer()
    register(cli)
    delays: dict[str, float] = {}
    with Load(url, {"instances": records[:2]}) as load:
        time.sleep(0.5)
        moved = time.monotonic()
        reg.set_alias("heart", "production", BROKEN, actor="test")
        failed = _until(lambda: (f := _follow(url))["failed_target"] == BROKEN and f, 10)
        delays[f"{BROKEN} (broken) refused"] = time.monotonic() - moved
        assert "golden check failed" in failed["last_error"]
        time.sleep(0.5)
        assert httpx.get(f"{url}/ready").status_code == 200
        assert load.versions_between(moved, time.monotonic()) == {"1.0.0"}
        for version in ("1.2.0", "1.3.0"):
            moved = time.monotonic()
            reg.set_alias("heart", "production", version, actor="test")
            delays[version] = load.switch_delay(version, moved)
        moved = time.monotonic()
        rollback = CliRunner(env={"MODELPORT_ADMIN_KEY": ADMIN}).invoke(
                cli, ["rollout", "rollback", url, "heart", "production"])
        assert rollback.exit_code == 0, rollback.output
        delays["rollback to 1.2.0"] = load.switch_delay("1.2.0", moved)
    replies, errors = load.replies, load.errors
    failures = [r for r in replies if r.status != 200]
    span = max(r.received for r in replies) - min(r.sent for r in replies)
    print(f"\nhot swap e2e: {len(replies) + len(errors)} requests in {span:.1f} s from "
          f"{WORKERS} threads, {len(failures) + len(errors)} failed; switch delays (s): "
          + ", ".join(f"{k} {v:.3f}" for k, v in delays.items()))
    assert (failures, errors) == ([], [])
    assert {r.version for r in replies} == {"1.0.0", "1.2.0", "1.3.0"}
    follow = _follow(url)
    assert (follow["serving"], follow["switches"], follow["failures"]) == ("1.2.0", 3, 1)
    assert max(delays.values()) < 5
    assert f"moved to {BROKEN} but it cannot be served; still serving 1.0.0" in _log(proc)


def _log(proc: subprocess.Popen[bytes]) -> str:
    """The server's stderr once it stopped (at warning level it is a few lines)."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert proc.stderr is not None
    return proc.stderr.read().decode()
