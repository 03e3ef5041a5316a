"""AliasFollower: a server serving heart@production follows the alias safely."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from modelport.config import Settings
from modelport.registry import Registry
from modelport.server.app import create_app
from modelport.server.models import ModelRepository
from modelport.server.rollout import AliasFollower, follow_extension, load_ref
from tests.registry.pkgs import broken_golden, unloadable


@pytest.fixture
def reg(sqlite_url: str, tmp_path: Path, heart_package: Path) -> Iterator[Registry]:
    """heart 1.0.0 and 1.1.0 (the real example model), production -> 1.0.0."""
    with Registry.open(sqlite_url, tmp_path / "store") as registry:
        registry.push(heart_package, "heart", "1.0.0")
        registry.push(heart_package, "heart", "1.1.0")
        registry.set_alias("heart", "production", "1.0.0")
        yield registry


def _follow(reg: Registry, **options: Any) -> tuple[ModelRepository, AliasFollower]:
    repo = ModelRepository(Settings())
    repo.serve(load_ref(reg, "heart@production"))
    return repo, AliasFollower(reg, repo, "heart", "production", **options)


async def test_follower_switches_when_the_alias_moves(reg: Registry) -> None:
    repo, follower = _follow(reg, grace_s=0)
    reg.set_alias("heart", "production", "1.1.0")
    event = await follower.check()
    assert event is not None and (event.outcome, event.to_version) == ("switched", "1.1.0")
    assert repo.get("heart").version == "1.1.0"
    await follower.aclose()
    await repo.aclose()


async def test_follower_does_nothing_while_the_alias_stays(reg: Registry) -> None:
    repo, follower = _follow(reg)
    assert await follower.check() is None
    assert follower.status().serving == "1.0.0"
    await repo.aclose()


async def test_a_version_failing_its_golden_check_is_not_served(
        reg: Registry, heart_package: Path, tmp_path: Path) -> None:
    reg.push(broken_golden(heart_package, tmp_path / "bad"), "heart", "1.2.0")
    repo, follower = _follow(reg)
    reg.set_alias("heart", "production", "1.2.0")
    event = await follower.check()
    assert event is not None and event.outcome == "failed"
    assert "golden check failed" in (event.error or "")
    assert repo.get("heart").version == "1.0.0"
    assert [s.version for s in repo.versions("heart")] == ["1.0.0"]
    await repo.aclose()


async def test_a_failed_target_is_not_retried_until_asked(
        reg: Registry, heart_package: Path, tmp_path: Path) -> None:
    reg.push(unloadable(heart_package, tmp_path / "bad"), "heart", "1.2.0")
    repo, follower = _follow(reg)
    reg.set_alias("heart", "production", "1.2.0")
    await follower.check()
    assert await follower.check() is None
    retried = await follower.check(retry=True)
    assert retried is not None and retried.outcome == "failed"
    status = follower.status()
    assert (status.failures, status.failed_target, status.serving) == (2, "1.2.0", "1.0.0")
    await repo.aclose()


async def test_a_corrupted_artifact_is_refused_and_the_old_version_kept(reg: Registry) -> None:
    repo, follower = _follow(reg)
    record = reg.get("heart", "1.1.0")
    obj = reg.store.object_path(record.files["model.joblib"])
    obj.chmod(0o644)
    obj.write_bytes(obj.read_bytes()[:-10])
    reg.set_alias("heart", "production", "1.1.0")
    event = await follower.check()
    assert event is not None and "the store was altered" in (event.error or "")
    assert repo.get("heart").version == "1.0.0"
    await repo.aclose()


async def test_the_old_version_is_unloaded_after_the_grace_period(reg: Registry) -> None:
    repo, follower = _follow(reg, grace_s=0.01)
    reg.set_alias("heart", "production", "1.1.0")
    await follower.check()
    await asyncio.sleep(0.2)
    assert [s.version for s in repo.versions("heart")] == ["1.1.0"]
    await repo.aclose()


class _Outage:
    """The registry, with its catalog unreachable while ``down`` is set."""

    def __init__(self, registry: Registry) -> None:
        self.registry, self.down = registry, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.registry, name)

    def alias_target(self, name: str, alias: str) -> str | None:
        if self.down:
            raise ConnectionRefusedError("connection refused")
        return self.registry.alias_target(name, alias)


async def test_an_outage_is_logged_once_and_its_cause_kept_in_the_status(
        reg: Registry, caplog: pytest.LogCaptureFixture) -> None:
    outage = _Outage(reg)
    repo = ModelRepository(Settings())
    repo.serve(load_ref(reg, "heart@production"))
    follower = AliasFollower(outage, repo, "heart", "production",  # type: ignore[arg-type]
                             interval_s=0.01)
    outage.down = True
    task = asyncio.create_task(follower.run())
    await asyncio.sleep(0.2)
    status = follower.status()
    assert "registry poll failed" in (status.last_error or "")
    assert status.serving == "1.0.0"
    outage.down = False
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    failed = [r for r in caplog.records if "poll failed" in r.getMessage()]
    back = [r for r in caplog.records if "answers again" in r.getMessage()]
    assert (len(failed), len(back)) == (1, 1)
    assert follower.status().last_error is None
    await repo.aclose()


@pytest.mark.slow
def test_hot_swap_under_load_fails_no_request(reg: Registry, heart_package: Path,
                                              tmp_path: Path, records: list[Any]) -> None:
    """Continuous requests from 4 threads while the alias moves 3 times, once to a broken
    version: zero failures, only expected versions answer, each good move lands quickly."""
    reg.push(unloadable(heart_package, tmp_path / "bad"), "heart", "1.2.0")
    reg.push(heart_package, "heart", "1.3.0")
    app = create_app([load_ref(reg, "heart@production")], Settings(), extensions=[
        follow_extension(reg, "heart", "production", interval_s=0.05, grace_s=0.5)])
    follower: AliasFollower = app.state.followers["heart"]
    seen: list[tuple[float, int, str, float]] = []  # sent, status, version, answered
    stop = threading.Event()
    with TestClient(app) as client:
        def hammer() -> None:
            while not stop.is_set():
                sent = time.monotonic()
                r = client.post("/models/heart/predict", json={"instances": records[:2]})
                seen.append((sent, r.status_code,
                             r.json().get("version", "?") if r.status_code == 200 else "?",
                             time.monotonic()))
        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        delays = [_move_and_wait(reg, seen, "1.1.0")]
        reg.set_alias("heart", "production", "1.2.0")
        _until(lambda: follower.status().failed_target == "1.2.0")
        refused_at = time.monotonic()
        delays.append(_move_and_wait(reg, seen, "1.3.0"))
        stop.set()
        for t in threads:
            t.join(timeout=10)
    failures = [s for s in seen if s[1] != 200]
    print(f"\nhot swap: {len(seen)} requests, {len(failures)} failed, "
          f"switch delays {[round(d, 3) for d in delays]} s")
    assert failures == []
    assert {v for _, _, v, _ in seen} <= {"1.0.0", "1.1.0", "1.3.0"}
    assert {v for t, _, v, _ in seen if refused_at < t < refused_at + delays[1]} <= {
        "1.1.0", "1.3.0"}
    assert max(delays) < 5


def _until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _move_and_wait(reg: Registry, seen: list[tuple[float, int, str, float]],
                   version: str) -> float:
    """Seconds from the move until a request (by send time) is answered by ``version``; every
    request sent after the first such answer came back is answered by it too. (Sent after it
    was *answered*, not after it was sent: of two threads' requests, the later sent can still
    reach the server first.)"""
    moved = time.monotonic()
    reg.set_alias("heart", "production", version)
    _until(lambda: any(t > moved and v == version for t, _, v, _ in list(seen)))
    first = min(t for t, _, v, _ in list(seen) if t > moved and v == version)
    switched = min(done for t, _, v, done in list(seen) if t > moved and v == version)
    time.sleep(0.3)
    assert {v for t, _, v, _ in list(seen) if t > switched} == {version}
    return first - moved
