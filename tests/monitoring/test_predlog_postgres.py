"""The prediction log against the real PostgreSQL, through a TCP proxy this test cuts and
restores: every accepted row ends up in the database exactly once."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from modelport.monitoring.predlog import PredictionLog
from modelport.types import Columns, Outputs, PredictionEvent

PG = "postgresql+psycopg://postgres@127.0.0.1:{port}/test"
PG_PORT = 5432


def _pg_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", PG_PORT), timeout=1).close()
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _pg_up(), reason="no PostgreSQL on 127.0.0.1:5432")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TcpProxy:
    """127.0.0.1:<port> → 127.0.0.1:5432 while up; down refuses and cuts every connection."""

    def __init__(self) -> None:
        self.port = _free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def up(self) -> None:
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(5)

    def down(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(5)

    def close(self) -> None:
        self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", PG_PORT)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.transport.abort()


def event(i: int) -> PredictionEvent:
    inputs = Columns({"age": np.array([40.0 + i, 50.0]), "sex": np.array(["m", "f"])}, 2)
    outputs = Outputs(np.array([i % 2, 1]), np.array([[0.4, 0.6], [0.1, 0.9]]), [0, 1])
    return PredictionEvent(f"pg-{i}", time.time(), "heart", "1", inputs, outputs, 0.002)


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"t{uuid.uuid4().hex[:10]}_"
    yield name
    engine = sa.create_engine(PG.format(port=PG_PORT))
    with engine.begin() as conn:
        for table in ("predictions", "feedback"):
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{name}{table}"'))
    engine.dispose()


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    p = TcpProxy()
    yield p
    p.close()


def _wait(condition: object, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.05)


def test_every_accepted_row_lands_exactly_once_across_an_outage(
    proxy: TcpProxy, prefix: str, tmp_path: Path
) -> None:
    proxy.up()
    log = PredictionLog(
        PG.format(port=proxy.port),
        spool_dir=tmp_path,
        batch_size=50,
        flush_interval_s=0.05,
        retry_interval_s=0.2,
        table_prefix=prefix,
    )
    for i in range(150):  # database up
        log.on_prediction(event(i))
    assert log.flush()
    proxy.down()  # outage mid-load: pooled connections are cut too
    for i in range(150, 300):
        log.on_prediction(event(i))
    assert log.flush()
    during = log.stats()
    proxy.up()
    for i in range(300, 450):
        log.on_prediction(event(i))
    _wait(lambda: log.stats().replayed >= during.spooled)
    log.close()

    stats = log.stats()
    engine = sa.create_engine(PG.format(port=PG_PORT))
    with engine.connect() as conn:
        query = "SELECT count(*), count(DISTINCT (request_id, row_index)) FROM "
        total, distinct = conn.execute(sa.text(f'{query} "{prefix}predictions"')).one()
    engine.dispose()
    print(
        f"\nsent=900 rows, spooled={stats.spooled}, replayed={stats.replayed}, "
        f"written={stats.written}, dropped={stats.dropped}, failed={stats.failed}, "
        f"rows in PostgreSQL={total} (distinct {distinct})"
    )
    assert during.spooled >= 300  # the outage rows really went to the spool
    assert stats.replayed == stats.spooled
    assert (stats.dropped, stats.failed) == (0, 0)
    assert total == distinct == 900
    assert list(tmp_path.glob("*.jsonl")) == []


def test_rows_logged_while_the_database_never_answered_wait_in_the_spool(
    proxy: TcpProxy, prefix: str, tmp_path: Path
) -> None:
    """Closing while the database is down leaves the rows in the spool for the next start."""
    log = PredictionLog(
        PG.format(port=proxy.port),
        spool_dir=tmp_path,
        flush_interval_s=0.05,
        retry_interval_s=0.2,
        table_prefix=prefix,
    )
    for i in range(20):
        log.on_prediction(event(i))
    log.close()
    assert log.stats().spooled == 40 and log.stats().written == 0
    proxy.up()
    again = PredictionLog(
        PG.format(port=proxy.port), spool_dir=tmp_path, flush_interval_s=0.05, table_prefix=prefix
    )
    again.flush()
    again.close()
    assert again.stats().replayed == 40


def poisoned(i: int) -> PredictionEvent:
    """Two rows; the second carries a NUL character, which PostgreSQL's jsonb cannot store."""
    inputs = Columns(
        {"age": np.array([40.0, 50.0]), "sex": np.array(["m", "f\x00x"], dtype=object)}, 2
    )
    return PredictionEvent(f"bad-{i}", time.time(), "heart", "1", inputs, Outputs(np.zeros(2)), 0)


def _count_rows(prefix: str) -> int:
    engine = sa.create_engine(PG.format(port=PG_PORT))
    with engine.connect() as conn:
        n = conn.execute(sa.text(f'SELECT count(*) FROM "{prefix}predictions"')).scalar_one()
    engine.dispose()
    return int(n)


def test_a_row_the_database_refuses_fails_alone(prefix: str, tmp_path: Path) -> None:
    log = PredictionLog(
        PG.format(port=PG_PORT), spool_dir=tmp_path, flush_interval_s=0.05, table_prefix=prefix
    )
    log.on_prediction(event(1))
    log.on_prediction(poisoned(1))
    log.close()
    assert (log.stats().written, log.stats().failed, log.stats().spooled) == (3, 1, 0)
    assert _count_rows(prefix) == 3


def test_a_refused_row_in_the_spool_does_not_block_the_replay(
    proxy: TcpProxy, prefix: str, tmp_path: Path
) -> None:
    log = PredictionLog(
        PG.format(port=proxy.port),
        spool_dir=tmp_path,
        flush_interval_s=0.05,
        retry_interval_s=0.1,
        table_prefix=prefix,
    )
    log.on_prediction(poisoned(2))
    log.on_prediction(event(2))
    log.flush()
    proxy.up()
    _wait(lambda: log.stats().replayed + log.stats().failed >= 4)
    log.close()
    assert (log.stats().spooled, log.stats().replayed, log.stats().failed) == (4, 3, 1)
    assert _count_rows(prefix) == 3
