"""The retraining webhook against a real HTTP receiver on 127.0.0.1: once per episode, bounded
retries, both body styles, every call logged."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from modelport.monitoring.predlog_store import Store
from modelport.monitoring.retrain import RetrainTrigger, RetrainWebhook
from tests.monitoring.receiver import Receiver, receiving

DRIFT = {"status": "alert", "window_rows": 1000, "features": [
    {"name": "age", "kind": "numeric", "status": "alert", "method": "psi", "score": 0.41,
     "p_adjusted": 1e-9, "window": 1000},
    {"name": "sex", "kind": "categorical", "status": "ok", "method": "psi", "score": 0.01,
     "p_adjusted": 0.7, "window": 1000}], "predictions": []}
BREACH = {"version": "1", "arm": "none", "window": "1000", "metric": "accuracy", "value": 0.61,
          "baseline": 0.9, "threshold": 0.85, "labeled": 1000}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as r:
        yield r


def hook(url: str, clock: Clock, **kwargs: object) -> RetrainWebhook:
    return RetrainWebhook(url, after_s=60.0, clock=clock, backoff_s=0.01, timeout_s=2.0,
                          **kwargs)  # type: ignore[arg-type]


def test_trigger_calls_once_per_episode() -> None:
    trigger = RetrainTrigger(after_s=10)
    seen = [trigger.observe("m", True, t) for t in (0, 5, 9.9)]
    assert seen == [None, None, None]  # firing, but not long enough
    first = trigger.observe("m", True, 10)
    assert first is not None and first.number == 1
    assert all(trigger.observe("m", True, t) is None for t in range(11, 100))
    assert trigger.suppressed == 89
    assert trigger.observe("m", False, 100) is None  # cleared: the episode ends
    assert trigger.observe("m", True, 101) is None
    second = trigger.observe("m", True, 111)
    assert second is not None and second.number == 2
    # a blip shorter than after_s never calls
    trigger.observe("m", False, 200)
    assert [trigger.observe("m", True, t) for t in (201, 205)] == [None, None]
    assert trigger.observe("m", False, 209) is None
    assert trigger.observe("other", True, 0) is None


def test_generic_webhook_fires_once_per_episode_with_the_evidence(
        receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    web = hook(receiver.url, clock, token="s3cret")
    caplog.set_level(logging.INFO, logger="modelport.retrain")
    try:
        per_episode = []
        for _episode in range(2):
            before = len(receiver.posts)
            for _ in range(30):  # 30 checks, 15 s apart: firing for 7.5 minutes
                web.check("heart", "1", drift=DRIFT, breaches=[BREACH])
                clock.now += 15
            web.check("heart", "1", drift={**DRIFT, "status": "ok"}, breaches=[])  # clears
            clock.now += 15
            assert web.flush()
            per_episode.append(len(receiver.posts) - before)
    finally:
        web.close()
    assert per_episode == [1, 1]
    first, second = receiver.bodies()
    assert first["episode"] == 1 and second["episode"] == 2
    assert first["model"] == "heart" and first["reason"] == "drift+quality"
    assert first["firing_s"] == 60.0
    assert first["drift"]["features"] == [{k: v for k, v in DRIFT["features"][0].items()
                                           if k != "kind"} | {"kind": "numeric"}]
    assert first["quality"] == [BREACH]
    assert len(first) <= 10  # what GitHub accepts as client_payload
    headers = receiver.posts[0]["headers"]
    assert headers["Authorization"] == "Bearer s3cret"
    assert [c.outcome for c in web.calls()] == ["sent", "sent"]
    assert web.trigger.suppressed == 2 * (30 - 5)
    lines = [r.getMessage() for r in caplog.records if r.name == "modelport.retrain"]
    assert len(lines) == 2 and all("sent for heart" in line for line in lines)
    assert not any("s3cret" in line for line in lines)


def test_github_style_is_a_repository_dispatch(receiver: Receiver) -> None:
    clock = Clock()
    web = hook(receiver.url, clock, style="github", token="ghp_x", event_type="retrain-heart")
    try:
        web.check("heart", "1", drift=None, breaches=[BREACH])
        clock.now += 61
        assert web.check("heart", "1", drift=None, breaches=[BREACH])
        assert web.flush()
    finally:
        web.close()
    (post,) = receiver.posts
    assert set(post["body"]) == {"event_type", "client_payload"}
    assert post["body"]["event_type"] == "retrain-heart"
    assert post["body"]["client_payload"]["reason"] == "quality"
    assert post["headers"]["Accept"] == "application/vnd.github+json"
    assert post["headers"]["Authorization"] == "Bearer ghp_x"


@pytest.mark.parametrize(("statuses", "posts", "outcome"), [
    ([500, 503], 3, "sent"),          # retried, third attempt answers 200
    ([500, 500, 500, 500], 3, "failed"),  # bounded: 3 attempts, then given up
    ([422], 1, "failed"),             # refused for good: not retried
    ([429], 2, "sent"),               # too many requests: retried
])
def test_retries_are_bounded(receiver: Receiver, statuses: list[int], posts: int,
                             outcome: str) -> None:
    receiver.statuses = list(statuses)
    clock = Clock()
    outcomes: list[str] = []
    web = hook(receiver.url, clock, on_call=lambda call: outcomes.append(call.outcome))
    try:
        web.check("m", "1", drift=DRIFT, breaches=[])
        clock.now += 60
        web.check("m", "1", drift=DRIFT, breaches=[])
        assert web.flush()
    finally:
        web.close()
    assert len(receiver.posts) == posts
    assert outcomes == [outcome]
    (call,) = web.calls()
    assert call.attempts == posts and call.episode == 1


def test_an_unreachable_receiver_is_given_up_after_the_attempts(
        caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    clock = Clock()
    web = hook(f"http://127.0.0.1:{port}/hook", clock)
    try:
        web.check("m", "1", drift=DRIFT, breaches=[])
        clock.now += 60
        web.check("m", "1", drift=DRIFT, breaches=[])
        assert web.flush()
    finally:
        web.close()
    (call,) = web.calls()
    assert call.outcome == "failed" and call.attempts == 3 and call.status is None
    assert "ConnectError" in (call.error or "")
    assert any("retrain webhook failed for m" in r.getMessage() for r in caplog.records)


def test_servers_sharing_a_log_database_call_once_per_episode_between_them(
        receiver: Receiver, tmp_path: Path) -> None:
    """Two workers (or replicas) that see the same condition, one SQLite file: one call per
    episode between them; a holder that is gone stops renewing, and its claim goes stale."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    stores = [Store(url), Store(url)]
    clock = Clock()
    hooks = []
    for i, store in enumerate(stores):
        web = hook(receiver.url, clock)
        web.claim = partial(lambda s, h, model, now: s.claim_retrain(model, h, now, 120),
                            store, f"w{i}")
        web.release = partial(lambda s, h, model: s.release_retrain(model, h), store, f"w{i}")
        hooks.append(web)

    def episode(webs: list[RetrainWebhook], checks: int = 20) -> None:
        for _ in range(checks):
            for web in webs:
                web.check("heart", "1", drift=DRIFT, breaches=[])
            clock.now += 15
        for web in webs:  # the condition clears
            web.check("heart", "1", drift={**DRIFT, "status": "ok"}, breaches=[])
        clock.now += 15

    try:
        for _ in range(3):
            episode(hooks)
        assert [len(w.calls()) for w in hooks] == [3, 0]
        assert hooks[1].trigger.suppressed == 3 * (20 - 4)  # every check after its turn
        # worker 0 calls a fourth episode and is gone (no release); worker 1 still fires
        for _ in range(5):
            for web in hooks:
                web.check("heart", "1", drift=DRIFT, breaches=[])
            clock.now += 15
        episode(hooks[1:], checks=5)  # worker 1's episode was worker 0's call: it ends
        clock.now += 300  # worker 0's unreleased claim is now past the stale time
        episode(hooks[1:], checks=5)  # so worker 1 may take the next episode
        for web in hooks:
            assert web.flush()
    finally:
        for web in hooks:
            web.close()
        for store in stores:
            store.dispose()
    assert [len(w.calls()) for w in hooks] == [4, 1]
    assert len(receiver.posts) == 5
