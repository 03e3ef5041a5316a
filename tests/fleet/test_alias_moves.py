"""Alias moves through the registry reach every replica behind nginx, and a broken candidate
is refused by every replica, while load runs through the balancer without a failed request.
(How fast the move lands is measured by ``benchmarks/fleet.py``; here it must only land.)"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.fleet.conftest import admin_view, served_versions
from tests.fleet.load import WrkRun
from tests.fleet.topology import Fleet
from tests.registry.pkgs import broken_golden

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _until(check: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())


def test_an_alias_move_reaches_every_replica_with_no_failed_request(
        fleet: Fleet, wrk: str, one_row: dict[str, Any], heart_package: Path) -> None:
    fleet.push("1.1.0", heart_package)
    load = WrkRun(f"{fleet.lb_url}/predict", one_row, connections=32, duration_s=60)
    try:
        time.sleep(1)
        fleet.move_alias("1.1.0")
        moved = _until(lambda: served_versions(fleet) == ["1.1.0"] * 3, timeout_s=15)
        time.sleep(0.5)  # requests keep flowing after the switch
    finally:
        result = load.stop()
    assert moved, f"replicas serve {served_versions(fleet)}"
    assert result.requests > 0
    assert result.failed == 0, result


def test_a_broken_candidate_is_refused_on_every_replica(
        fleet: Fleet, wrk: str, one_row: dict[str, Any], heart_package: Path,
        tmp_path: Path) -> None:
    before = served_versions(fleet)
    fleet.push("9.0.0", broken_golden(heart_package, tmp_path / "broken"))
    load = WrkRun(f"{fleet.lb_url}/predict", one_row, connections=8, duration_s=60)
    try:
        fleet.move_alias("9.0.0")  # written straight to the catalog: no check on the way

        def refused() -> bool:
            views = [admin_view(fleet, i)["follow"] for i in range(3)]
            return all(v["failed_target"] == "9.0.0" for v in views)

        all_refused = _until(refused, timeout_s=15)
    finally:
        result = load.stop()
    assert all_refused, [admin_view(fleet, i) for i in range(3)]
    assert served_versions(fleet) == before
    assert "golden" in (admin_view(fleet, 0)["follow"]["last_error"] or "")
    assert result.failed == 0, result
