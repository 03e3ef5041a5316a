"""Losing replicas under load: ``kill -9`` of one, and a rolling restart of all three, cost no
prediction through nginx (it resends an idempotent prediction to another replica), and a
restarted replica takes traffic again."""

from __future__ import annotations

import signal
import time
from typing import Any

import httpx
import pytest

from tests.fleet.load import WrkRun
from tests.fleet.topology import Fleet

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _rejoined(fleet: Fleet, body: dict[str, Any], timeout_s: float = 15) -> set[str]:
    """Send predictions through nginx until every replica has answered one (nginx tries a
    replica it left out again after its 2 s fail_timeout); the ports that answered."""
    wanted, seen = {str(p) for p in fleet.state.ports}, set()
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=10) as client:
        while seen != wanted and time.monotonic() < deadline:
            resp = client.post(f"{fleet.lb_url}/predict", json=body)
            assert resp.status_code == 200, resp.text
            seen.add(resp.headers["X-Upstream"].rsplit(":", 1)[1])
            time.sleep(0.02)
    return seen


def test_kill_9_under_load_fails_no_prediction_and_the_replica_rejoins(
        fleet: Fleet, wrk: str, one_row: dict[str, Any]) -> None:
    load = WrkRun(f"{fleet.lb_url}/predict", one_row, connections=16, duration_s=60)
    try:
        time.sleep(1.5)
        fleet.signal("replica-1", signal.SIGKILL)
        assert fleet.wait_exit("replica-1", 5) == -signal.SIGKILL
        time.sleep(1.5)  # the fleet runs on two replicas
        fleet.start_replica(1)
        fleet.wait_ready(1, 60)
        time.sleep(1)
    finally:
        result = load.stop()
    assert result.requests > 0
    # no request answered with an error (nginx retries a prediction the dead replica dropped);
    # a socket error seen by the client stays within the 0.1 % bound (one run on a loaded
    # 2-core machine saw 1 read error in 14,322 requests)
    assert result.status == 0, result
    assert result.failed <= result.requests * 0.001, result
    assert _rejoined(fleet, one_row) == {str(p) for p in fleet.state.ports}


def test_a_rolling_restart_loses_no_request(fleet: Fleet, wrk: str,
                                            one_row: dict[str, Any]) -> None:
    """Each replica drains on SIGTERM (exit 0) and comes back before the next one goes."""
    load = WrkRun(f"{fleet.lb_url}/predict", one_row, connections=16, duration_s=90)
    codes = []
    try:
        time.sleep(1)
        for i in range(3):
            codes.append(fleet.stop(f"replica-{i}"))
            fleet.start_replica(i)
            fleet.wait_ready(i, 60)
    finally:
        result = load.stop()
    assert codes == [0, 0, 0]
    assert result.requests > 0
    assert result.failed == 0, result
    assert _rejoined(fleet, one_row) == {str(p) for p in fleet.state.ports}
