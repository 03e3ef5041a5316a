"""The access log: the line its fast writer makes is the one logging's JSON formatter makes,
``--access-log-level`` keeps the failed requests only, ``--access-log-sample`` keeps a share of
the successful ones (marked with ``sample_rate``), and every line is written whole."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelport.server.accesslog import access_log
from modelport.server.logs import configure_logging
from tests.server.test_e2e import start_server, stop

ROW = {"age": 63, "sex": 1, "cp": 3, "trestbps": 145, "chol": 233, "fbs": 1, "restecg": 0,
       "thalach": 150, "exang": 0, "oldpeak": 2.3, "slope": 0, "ca": 0, "thal": "fixed"}


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    """modelport's logging into a file, as ``--log-file`` sets it; restored afterwards."""
    path = tmp_path / "access.log"
    configure_logging("info", log_file=path)
    yield path
    access_log.configure()
    for name in ("modelport", "modelport.access"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        logger.filters.clear()


def _write(*statuses: int) -> None:
    """One access line per status, from inside a running event loop (as the server writes
    them), flushed at the end of the loop turn."""
    async def answer() -> None:
        for i, status in enumerate(statuses):
            access_log.request("POST", "/predict", status, 0.0012, request_id=f"r{i}",
                               model="heart", version="1.0.0")
        await asyncio.sleep(0)  # the turn ends: the held lines are written

    asyncio.run(answer())


def _lines(path: Path) -> list[dict[str, object]]:
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_fast_line_is_the_formatters_line(log_file: Path) -> None:
    _write(200)
    logging.getLogger("modelport.access").addFilter(lambda record: True)  # now: as records
    _write(200)
    fast, record = _lines(log_file)
    assert list(fast) == list(record)  # same keys in the same order
    assert {k: v for k, v in fast.items() if k != "ts"} == {
        k: v for k, v in record.items() if k != "ts"}
    assert fast["level"] == "info" and fast["logger"] == "modelport.access"
    assert fast["latency_ms"] == 1.2 and fast["status"] == 200


def test_level_follows_the_status_and_filters(log_file: Path) -> None:
    _write(200, 404, 503)
    assert [(r["status"], r["level"]) for r in _lines(log_file)] == [
        (200, "info"), (404, "warning"), (503, "error")]
    log_file.write_text("")
    access_log.configure("warning")
    _write(200, 422, 500)
    assert [r["status"] for r in _lines(log_file)] == [422, 500]
    log_file.write_text("")
    access_log.configure("error")
    _write(200, 422, 500)
    assert [r["status"] for r in _lines(log_file)] == [500]
    log_file.write_text("")
    access_log.configure("off")
    _write(200, 422, 500)
    assert _lines(log_file) == []


def test_sampling_keeps_a_share_of_successes_and_every_failure(log_file: Path) -> None:
    access_log.configure(sample=0.25)
    _write(*([200] * 4000), *([400] * 50))
    lines = _lines(log_file)
    ok = [r for r in lines if r["status"] == 200]
    assert 800 <= len(ok) <= 1200  # 1,000 expected; 6 standard deviations either side
    assert all(r["sample_rate"] == 0.25 for r in ok)
    failed = [r for r in lines if r["status"] == 400]
    assert len(failed) == 50 and all("sample_rate" not in r for r in failed)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="one of info, warning, error, off"):
        access_log.configure("verbose")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="between 0 and 1"):
        access_log.configure(sample=1.5)


@pytest.mark.e2e
def test_server_logs_only_failed_requests_at_warning(heart_package: Path,
                                                      tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    proc, url = start_server(str(heart_package), "--log-file", str(log),
                             "--access-log-level", "warning")
    try:
        ok = httpx.post(f"{url}/predict", json={"features": ROW},
                        headers={"X-Request-ID": "fine"})
        bad = httpx.post(f"{url}/predict", json={"features": {**ROW, "age": "old"}},
                         headers={"X-Request-ID": "wrong"})
        assert (ok.status_code, bad.status_code) == (200, 422)
    finally:
        assert stop(proc) == 0
    access = [r for r in _lines(log) if r.get("logger") == "modelport.access"]
    assert [(r["request_id"], r["status"], r["level"]) for r in access] == [
        ("wrong", 422, "warning")]


@pytest.mark.e2e
def test_server_sample_zero_logs_no_success(heart_package: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    proc, url = start_server(str(heart_package), "--log-file", str(log),
                             "--access-log-sample", "0")
    try:
        for _ in range(20):
            assert httpx.post(f"{url}/predict", json={"features": ROW}).status_code == 200
        assert httpx.post(f"{url}/predict", json={"features": {}}).status_code == 422
    finally:
        assert stop(proc) == 0
    access = [r for r in _lines(log) if r.get("logger") == "modelport.access"]
    assert [r["status"] for r in access] == [422]
