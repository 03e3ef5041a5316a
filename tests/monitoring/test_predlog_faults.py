"""The prediction log's spool fills its disk while the log database is unreachable.

A real server (``modelport serve``) logs to the real PostgreSQL through a proxy the test cuts;
its spool can hold only a few kilobytes: a file-size limit on the server process (anywhere), or
a tiny tmpfs (where the test may mount one). Every request must still be answered, the log must
say clearly what happened, the rows that could not be spooled are counted, and every row
written before — to the database or to the spool — reaches the database intact once it is back.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from tests.faultproxy import FaultProxy
from tests.registry.live import free_port
from tests.server.test_e2e import stop

pytestmark = pytest.mark.e2e

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
LIMIT = 64 * 1024
"""Bytes the spool can hold (about 130 rows of the example model)."""
LAUNCH = ("import os, resource, sys; "
          "limit = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)); "
          "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])")
"""Runs the rest of its arguments with a file-size limit (``setrlimit`` in the child only)."""


@pytest.fixture
def schema() -> Iterator[str]:
    """A PostgreSQL schema of its own (dropped afterwards)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(PG)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    except sa.exc.OperationalError as exc:  # pragma: no cover - only where no PostgreSQL runs
        engine.dispose()
        pytest.skip(f"PostgreSQL is not reachable: {exc.orig}")
    yield name
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
    engine.dispose()


@pytest.fixture(params=["file-size limit", "tmpfs"])
def small_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """A spool directory that fills after about LIMIT bytes, and the argv prefix to run the
    server with."""
    spool = tmp_path / "spool"
    spool.mkdir()
    if request.param == "file-size limit":
        yield spool, [sys.executable, "-c", LAUNCH, str(LIMIT)]
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={LIMIT}", "tmpfs",
                              str(spool)], capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield spool, [sys.executable]
    finally:
        subprocess.run(["umount", str(spool)], check=True)


class Server:
    """``modelport serve PACKAGE`` logging predictions to ``db``; stderr is read by a thread
    (a file would be under the size limit too, and an unread pipe would fill)."""

    def __init__(self, argv: list[str], package: Path, db: str, spool: Path) -> None:
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
               "MODELPORT_LOG_DB": db, "MODELPORT_LOG_SPOOL_DIR": str(spool)}
        self.proc = subprocess.Popen(
            [*argv, "-m", "modelport", "serve", str(package), "--port", str(self.port),
             "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)
        _until(lambda: self.proc.poll() is not None or self._ready(), 60)
        assert self.proc.poll() is None, "\n".join(self.lines)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.decode(errors="replace"))

    def _ready(self) -> bool:
        with contextlib.suppress(httpx.TransportError):
            return self.client.get("/ready").status_code == 200
        return False

    def predict(self, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.client.post("/predict", json=body)
        assert answer.status_code == 200, answer.text
        doc: dict[str, Any] = answer.json()
        return doc

    def counts(self) -> dict[str, float]:
        families = text_string_to_metric_families(self.client.get("/metrics").text)
        return {s.labels["outcome"]: s.value for f in families
                if f.name == "modelport_predlog_records" for s in f.samples
                if s.name == "modelport_predlog_records_total"}

    def close(self) -> int:
        self.client.close()
        code = stop(self.proc)
        self._reader.join(timeout=10)
        return code


def _until(probe: Callable[[], Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _logged(engine: sa.Engine) -> dict[tuple[str, int], Any]:
    """(request id, row) -> outputs of every prediction in the log database."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("modelport_predictions"):
            return {}
        rows = conn.execute(sa.text("SELECT request_id, row_index, outputs "
                                    "FROM modelport_predictions"))
        return {(r[0], r[1]): r[2] for r in rows}


def _spooled_lines(spool: Path) -> list[dict[str, Any]]:
    """Every line of every spool file; a half-written line fails the test here."""
    return [orjson.loads(line) for path in sorted(spool.glob("predlog-*.spool.jsonl"))
            for line in path.read_bytes().splitlines()]


def test_a_full_spool_loses_only_what_it_could_not_take_and_serving_goes_on(
        schema: str, small_disk: tuple[Path, list[str]], heart_package: Path,
        heart_features: Any) -> None:
    spool, argv = small_disk
    rows = heart_features.head(3).to_dict("records")
    body = {"instances": rows}
    direct = f"{PG}?options=-csearch_path%3D{schema}"
    engine = sa.create_engine(direct)
    with FaultProxy(5432) as proxy:
        server = Server(argv, heart_package, proxy.url(direct), spool)
        try:
            answers = {}
            for _ in range(5):
                doc = server.predict(body)
                answers[doc["request_id"]] = doc
            _until(lambda: len(_logged(engine)) == 15, 15)
            proxy.cut()
            during = 0
            while server.counts()["unspooled"] == 0:
                assert during < 2000, "the spool never filled"
                for _ in range(10):
                    doc = server.predict(body)
                    answers[doc["request_id"]] = doc
                during += 10
            for _ in range(10):
                doc = server.predict(body)
                answers[doc["request_id"]] = doc
            during += 10
            _until(lambda: sum(server.counts()[k] for k in ("spooled", "unspooled"))
                   == during * 3, 15)
            spooled = _spooled_lines(spool)
            counts = server.counts()
            assert len(spooled) == counts["spooled"]
            proxy.restore()
            _until(lambda: len(_logged(engine)) == 15 + len(spooled), 15)
            after = server.counts()
        finally:
            code = server.close()
    logged = _logged(engine)
    engine.dispose()
    how = "tmpfs" if argv == [sys.executable] else "file-size limit"
    print(f"\nfull spool ({LIMIT // 1024} KiB, {how}): "
          f"{5 + during} requests all 200; {int(counts['spooled'])} rows spooled and replayed, "
          f"{int(counts['unspooled'])} could not be spooled; {len(logged)} rows in the database")
    assert code == 0
    assert counts["unspooled"] == counts["failed"] == during * 3 - len(spooled)
    assert after["replayed"] == len(spooled)
    assert {(line["request_id"], line["row_index"]) for line in spooled} <= logged.keys()
    for (request_id, row), outputs in logged.items():
        assert outputs["probabilities"] == dict(zip(
            map(str, answers[request_id]["classes"]),
            answers[request_id]["probabilities"][row], strict=True))
    errors = [line for line in server.lines if "cannot be written" in line]
    assert len(errors) == 1, server.lines
    assert str(spool) in errors[0] and "records spooled before are kept" in errors[0]
