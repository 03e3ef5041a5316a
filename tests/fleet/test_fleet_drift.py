"""Fleet drift from Prometheus: ``modelport drift status --prometheus URL`` evaluates the sums
of every replica's drift counters, and its statistics and decision equal those of one process
fed the same rows — exactly."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from modelport.cli import app
from tests.fleet.conftest import start_fleet
from tests.fleet.load import send_exactly
from tests.fleet.topology import BIN, Fleet, free_port, prom_value, wait_http

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def prom_fleet(fleet_ready: None, heart_package: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """3 replicas behind nginx, and Prometheus scraping them every second."""
    running = start_fleet(tmp_path_factory.mktemp("fleet"), heart_package, prometheus=True)
    yield running
    running.down()


@pytest.fixture
def single(prom_fleet: Fleet, tmp_path: Path) -> Iterator[str]:
    """One more server of the same model from the same registry, alone (no balancer)."""
    port = free_port()
    argv = [str(BIN / "modelport"), "serve", f"{prom_fleet.spec.model}@production",
            "--host", "127.0.0.1", "--port", str(port), "--db", prom_fleet.registry_url,
            "--store", str(prom_fleet.store)]
    env = dict(os.environ, MODELPORT_LOG_LEVEL="warning")
    with open(tmp_path / "single.log", "wb") as log:
        proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/ready", 60, log=tmp_path / "single.log")
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


def _drifted_bodies(records: list[dict[str, Any]], n_rows: int) -> list[dict[str, Any]]:
    """Requests of 1-4 rows whose ages are 15 years older than the reference's."""
    rows = [dict(r, age=r["age"] + 15) for r in records[:n_rows]]
    bodies, start, k = [], 0, 0
    while start < len(rows):
        size = 1 + k % 4
        bodies.append({"instances": rows[start:start + size]})
        start, k = start + size, k + 1
    return bodies


def _status_json(*args: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(app, ["drift", "status", *args, "--json"])
    assert result.exit_code == 0, result.output
    reports: list[dict[str, Any]] = json.loads(result.stdout)
    return reports


def test_fleet_drift_from_prometheus_equals_one_process_fed_the_same_rows(
        prom_fleet: Fleet, single: str, records: list[dict[str, Any]]) -> None:
    bodies = _drifted_bodies(records, 600)
    for url in (f"{prom_fleet.lb_url}/predict", f"{single}/predict"):
        answers = send_exactly(url, bodies, concurrency=8)
        assert {a.status_code for a in answers} == {200}
    query = f'sum(modelport_drift_window_rows{{model="{prom_fleet.spec.model}"}})'
    deadline = time.monotonic() + 20
    while prom_value(prom_fleet.prom_url, query) != 600 and time.monotonic() < deadline:
        time.sleep(0.5)
    spread = f'count(modelport_drift_window_rows{{model="{prom_fleet.spec.model}"}} > 0)'
    assert prom_value(prom_fleet.prom_url, spread) == 3  # every replica counted a share

    fleet = _status_json(prom_fleet.lb_url, "--prometheus", prom_fleet.prom_url)
    alone = _status_json(single)
    # realized quality comes from the labels each process's prediction log holds, not from
    # Prometheus: the merged fleet view carries the drift part only
    assert [{k: v for k, v in r.items() if k != "quality"} for r in alone] == fleet
    assert fleet[0]["window_rows"] == 600
    assert fleet[0]["status"] in ("warn", "alert")  # the shifted ages are caught
    ages = next(f for f in fleet[0]["features"] if f["name"] == "age")
    assert ages["status"] == "alert"


def test_fleet_drift_with_a_package_needs_no_server(
        prom_fleet: Fleet, heart_package: Path) -> None:
    """The reference profile can come from the package instead of a server."""
    by_server = _status_json(prom_fleet.lb_url, "--prometheus", prom_fleet.prom_url)
    by_package = _status_json("--prometheus", prom_fleet.prom_url, "--package",
                              str(heart_package))
    assert by_package == by_server
