"""Shadow and sticky traffic on a real server (uvicorn on 127.0.0.1), set through the admin
API: heart 1.0.0 serves, 2.0.0 (trained on the flipped label) disagrees with it."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport.config import Settings
from modelport.registry import Registry
from modelport.server.admin import admin_extension
from modelport.server.app import create_app
from modelport.server.rollout import load_ref
from modelport.types import PredictionEvent
from tests.registry.live import serving
from tests.registry.pkgs import contrarian


class Records(logging.Handler):
    """Keeps the log records of the ``modelport`` logger."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def events() -> list[PredictionEvent]:
    return []


ADMIN = "admin-secret"
AUTH = {"authorization": f"Bearer {ADMIN}"}


@pytest.fixture
def server(sqlite_url: str, tmp_path: Path, heart_package: Path, heart_dir: Path,
           events: list[PredictionEvent]) -> Iterator[str]:
    """Serving heart@production (1.0.0) with 2.0.0 loaded beside it; events recorded."""
    with Registry.open(sqlite_url, tmp_path / "store") as reg:
        reg.push(heart_package, "heart", "1.0.0")
        reg.push(contrarian(heart_dir, tmp_path / "contrarian"), "heart", "2.0.0")
        reg.set_alias("heart", "production", "1.0.0")
        app = create_app([load_ref(reg, "heart@production")], Settings(admin_keys=[ADMIN]),
                         on_prediction=[events.append], extensions=[admin_extension(reg)])
        with serving(app) as url:
            assert httpx.post(f"{url}/admin/models/heart/versions/2.0.0/load",
                                   headers=AUTH).status_code == 200
            yield url


@pytest.fixture
def log() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("modelport")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def _until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_shadow_answers_with_the_primary_and_records_both(
        server: str, events: list[PredictionEvent], log: Records,
        records: list[dict[str, Any]]) -> None:
    policy = {"arms": [{"version": "1.0.0", "name": "primary"}], "shadow": ["2.0.0"]}
    answer = httpx.put(f"{server}/admin/models/heart/traffic", json=policy, headers=AUTH)
    assert answer.status_code == 200
    answer = httpx.post(f"{server}/models/heart/predict", json={"instances": records})
    rid = answer.headers["x-request-id"]
    assert answer.headers["x-model-version"] == "1.0.0"
    _until(lambda: any(e.arm == "shadow" for e in events))
    mine = {e.arm: e for e in events if e.request_id == rid}
    assert (mine["primary"].version, mine["shadow"].version) == ("1.0.0", "2.0.0")
    primary, shadow = (mine[a].outputs.predictions.tolist() for a in ("primary", "shadow"))
    assert answer.json()["predictions"] == primary != shadow
    line = next(r for r in log.records if r.getMessage() == "shadow")
    fields = line.fields  # type: ignore[attr-defined]
    assert fields["request_id"] == rid
    assert fields["disagreements"] == sum(p != s for p, s in zip(primary, shadow, strict=True))


def test_the_arm_that_answered_is_in_a_header(server: str,
                                              records: list[dict[str, Any]]) -> None:
    policy = {"arms": [{"version": "2.0.0", "name": "canary"}]}
    answer = httpx.put(f"{server}/admin/models/heart/traffic", json=policy, headers=AUTH)
    assert answer.status_code == 200
    answer = httpx.post(f"{server}/models/heart/predict", json={"features": records[0]})
    assert (answer.headers["x-model-version"], answer.headers.get("x-model-arm")) == (
        "2.0.0", "canary")


def test_a_sticky_key_always_gets_the_same_version(server: str,
                                                   records: list[dict[str, Any]]) -> None:
    policy = {"arms": [{"version": "1.0.0"}, {"version": "2.0.0"}], "sticky_header": "X-User"}
    answer = httpx.put(f"{server}/admin/models/heart/traffic", json=policy, headers=AUTH)
    assert answer.status_code == 200
    seen: dict[str, set[str]] = {}
    with httpx.Client(base_url=server) as client:
        for _ in range(4):
            for user in (f"user-{i}" for i in range(16)):
                answer = client.post("/models/heart/predict", json={"features": records[0]},
                                     headers={"X-User": user})
                seen.setdefault(user, set()).add(answer.headers["x-model-version"])
    assert all(len(versions) == 1 for versions in seen.values()), seen
    assert set().union(*seen.values()) == {"1.0.0", "2.0.0"}
