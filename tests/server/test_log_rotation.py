"""``--log-file``: the real server under concurrent load writes every access line exactly once,
whole, whether it rotates the file by size or logrotate moves it and sends SIGHUP."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.server.test_e2e import start_server, stop

pytestmark = pytest.mark.e2e
REQUESTS = 600
ROW = {"age": 63, "sex": 1, "cp": 3, "trestbps": 145, "chol": 233, "fbs": 1, "restecg": 0,
       "thalach": 150, "exang": 0, "oldpeak": 2.3, "slope": 0, "ca": 0, "thal": "fixed"}


def _load(url: str, tag: str, until: threading.Event | None = None) -> list[str]:
    """Predictions from 16 threads, each with its own request id, in rounds of 100: at least
    ``REQUESTS``, and on until ``until`` is set (the rotations are done)."""
    ids: list[str] = []
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    with httpx.Client(timeout=30, limits=limits) as client, cf.ThreadPoolExecutor(16) as pool:
        while len(ids) < REQUESTS or (until is not None and not until.is_set()):
            batch = [f"{tag}-{len(ids) + i:05d}" for i in range(100)]
            statuses = list(pool.map(lambda rid: client.post(
                f"{url}/predict", json={"features": ROW}, headers={"X-Request-ID": rid}
            ).status_code, batch))
            assert statuses == [200] * len(batch)
            ids += batch
    return ids


def _lines(files: list[Path]) -> list[dict[str, object]]:
    """Every line of every file, each of which must be one whole JSON object."""
    records = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert text == "" or text.endswith("\n"), f"{path.name} ends mid-line"
        for line in text.splitlines():
            records.append(json.loads(line))  # a split or interleaved line fails here
    return records


def _each_once(records: list[dict[str, object]], ids: list[str]) -> None:
    seen = Counter(r.get("request_id") for r in records if r.get("path") == "/predict")
    assert {rid: seen[rid] for rid in ids} == dict.fromkeys(ids, 1)


def test_size_rotation_keeps_every_line_whole_and_once(heart_package: Path,
                                                       tmp_path: Path) -> None:
    log = tmp_path / "logs" / "app.log"
    proc, url = start_server(str(heart_package), "--log-file", str(log),
                             "--log-max-bytes", "8192", "--log-backups", "500")
    try:
        ids = _load(url, "size")
    finally:
        assert stop(proc) == 0
    files = sorted(log.parent.iterdir())
    assert 10 <= len(files) < 500, [f.name for f in files]
    assert all(f.stat().st_size <= 8192 for f in files)
    _each_once(_lines(files), ids)


def _rotations(rotate: Callable[[], None], times: int, done: threading.Event) -> None:
    """``rotate()`` ``times`` times, 40 ms apart, while the load runs; then ``done``."""
    try:
        for _ in range(times):
            time.sleep(0.04)
            rotate()
    finally:
        done.set()


def test_moved_file_and_sighup_lose_no_line(heart_package: Path, tmp_path: Path) -> None:
    """What logrotate does (create mode): move the file away, then SIGHUP."""
    log = tmp_path / "app.log"
    proc, url = start_server(str(heart_package), "--log-file", str(log))
    moved: list[Path] = []

    def rotate() -> None:
        deadline = time.monotonic() + 10
        while not log.exists():  # reopened at the first record after the last SIGHUP
            assert time.monotonic() < deadline, "the server did not reopen its log file"
            time.sleep(0.005)
        moved.append(log.with_name(f"app.log.{len(moved) + 1}"))
        os.rename(log, moved[-1])
        proc.send_signal(signal.SIGHUP)

    done = threading.Event()
    try:
        with cf.ThreadPoolExecutor(1) as side:
            rotations = side.submit(_rotations, rotate, 5, done)
            ids = _load(url, "hup", done)
            rotations.result()
        assert proc.poll() is None, "SIGHUP ended the server"
        httpx.post(f"{url}/predict", json={"features": ROW}, headers={"X-Request-ID": "last"})
    finally:
        assert stop(proc) == 0
    assert len(moved) == 5 and log.exists()
    records = _lines([*moved, log])
    _each_once(records, ids)
    assert all(_lines([m]) for m in moved)  # requests were answered between the rotations
    assert any(r.get("request_id") == "last" for r in _lines([log]))


def test_logrotate_itself_loses_no_line(heart_package: Path, tmp_path: Path) -> None:
    logrotate = shutil.which("logrotate") or "/usr/sbin/logrotate"
    if not Path(logrotate).is_file():
        pytest.skip("logrotate is not installed (Debian package logrotate)")
    log = tmp_path / "app.log"
    proc, url = start_server(str(heart_package), "--log-file", str(log))
    conf = tmp_path / "logrotate.conf"
    conf.write_text(f"{log} {{\n  rotate 100\n  create\n  missingok\n  nocompress\n"
                    f"  postrotate\n    kill -HUP {proc.pid}\n  endscript\n}}\n")
    state = tmp_path / "state"

    def rotate() -> None:
        subprocess.run([logrotate, "-f", "-s", str(state), str(conf)], check=True,
                       capture_output=True, timeout=30)

    done = threading.Event()
    try:
        with cf.ThreadPoolExecutor(1) as side:
            rotations = side.submit(_rotations, rotate, 3, done)
            ids = _load(url, "logrotate", done)
            rotations.result()
    finally:
        assert stop(proc) == 0
    files = sorted(tmp_path.glob("app.log*"))
    assert len(files) == 4
    _each_once(_lines(files), ids)


def test_size_rotation_with_several_workers_is_refused(heart_package: Path,
                                                       tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "modelport", "serve", str(heart_package),
                           "--workers", "2", "--log-file", str(tmp_path / "app.log"),
                           "--log-max-bytes", "1000", "--port", "1"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert "--log-max-bytes rotates the log in one process" in proc.stderr
