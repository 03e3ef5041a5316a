"""``/monitoring/drift`` served for real by uvicorn on 127.0.0.1, and ``modelport drift``."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from typer.testing import CliRunner

from modelport.cli import app as cli
from modelport.monitoring.drift import (
    CountsSnapshot,
    DriftMonitor,
    evaluate_snapshot,
    merge_counts,
)
from modelport.monitoring.profile import ReferenceProfile, build_profile
from modelport.server.drift_routes import drift_router
from modelport.server.errors import install_error_handlers
from tests.monitoring.fixtures.drift_samples import SIGNATURE, columns, frame, predict


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serve(monitors: dict[str, DriftMonitor]) -> tuple[str, uvicorn.Server, threading.Thread]:
    app = FastAPI()
    app.include_router(drift_router(lambda: monitors))
    install_error_handlers(app)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", server, thread


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    ref = frame(2000, seed=41)
    return build_profile(ref, SIGNATURE, predict(columns(ref)))


@pytest.fixture(scope="module")
def fleet(profile: ReferenceProfile) -> Iterator[list[str]]:
    """Two replicas serving model ``credit``, each fed its half of a drifted stream."""
    batch = columns(frame(600, seed=42, shift=1.5))
    replicas = []
    for i in range(2):
        monitor = DriftMonitor(profile, "credit", "3")
        part = batch.take(i * 300, (i + 1) * 300)
        monitor.counters.observe(part, predict(part), latency_s=0.004)
        replicas.append(_serve({"credit": monitor}))
    yield [url for url, _, _ in replicas]
    for _, server, thread in replicas:
        server.should_exit = True
        thread.join(timeout=10)


def test_drift_of_every_model_is_served_as_json(fleet: list[str]) -> None:
    body = httpx.get(f"{fleet[0]}/monitoring/drift").json()
    credit = body["models"]["credit"]
    assert credit["status"] == "alert" and credit["window_rows"] == 300
    income = next(f for f in credit["features"] if f["name"] == "income")
    assert {"method", "score", "p_value", "status", "window"} <= income.keys()


def test_an_unknown_model_is_a_404_naming_the_monitored_ones(fleet: list[str]) -> None:
    response = httpx.get(f"{fleet[0]}/monitoring/drift/nope")
    assert response.status_code == 404
    assert "credit" in response.json()["error"]


def test_counts_from_the_replicas_merge_into_the_fleet_decision(
        fleet: list[str], profile: ReferenceProfile) -> None:
    snaps = [CountsSnapshot.from_dict(httpx.get(f"{u}/monitoring/drift/credit/counts").json())
             for u in fleet]
    merged = merge_counts(snaps)
    assert merged.rows == 600
    reference = ReferenceProfile.from_dict(
        httpx.get(f"{fleet[0]}/monitoring/drift/credit/reference").json())
    assert reference.digest() == merged.digest == profile.digest()
    assert evaluate_snapshot(reference, merged).status == "alert"


def test_drift_status_prints_a_table_and_fails_on_alert_when_asked(fleet: list[str]) -> None:
    result = CliRunner().invoke(cli, ["drift", "status", fleet[0]])
    assert result.exit_code == 0, result.output
    assert "credit" in result.output and "alert" in result.output
    failing = CliRunner().invoke(cli, ["drift", "status", fleet[0], "--fail-on", "alert"])
    assert failing.exit_code == 1


def test_drift_status_of_several_replicas_merges_their_counts(fleet: list[str]) -> None:
    result = CliRunner().invoke(cli, ["drift", "status", *fleet, "--json"])
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.output)
    assert report["window_rows"] == 600 and report["total_rows"] == 600


def test_drift_report_writes_one_offline_html_file(fleet: list[str], tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["drift", "report", *fleet, "--out", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert 'id="drift-table"' in html and "credit" in html
    assert "http://" not in html and "https://" not in html


def test_an_unreachable_server_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    result = CliRunner().invoke(cli, ["drift", "status", url])
    assert result.exit_code != 0
    assert "cannot reach" in str(result.exception)


class _SlowMonitor(DriftMonitor):
    """A drift monitor whose evaluation takes 0.3 s, as a model with hundreds of features."""

    checks = 0

    def status(self):  # type: ignore[no-untyped-def]
        type(self).checks += 1
        time.sleep(0.3)
        return super().status()


async def test_periodic_drift_checks_leave_the_event_loop_free(profile: ReferenceProfile) -> None:
    import asyncio

    from modelport.monitoring.metrics import Metrics
    from modelport.server.monitoring import Monitoring

    monitoring = Monitoring(Metrics(), drift_check_s=0.01)
    monitoring.drift["credit"] = _SlowMonitor(profile, "credit", "3")
    checks = asyncio.create_task(monitoring._check_drift_forever())
    longest, last = 0.0, time.perf_counter()
    end = last + 0.8
    while time.perf_counter() < end:  # the loop's turns while checks run
        await asyncio.sleep(0.005)
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    checks.cancel()
    await asyncio.gather(checks, return_exceptions=True)
    assert _SlowMonitor.checks >= 2
    assert longest < 0.15  # on the loop, each check would have stalled it for 0.3 s
