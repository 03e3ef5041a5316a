"""The micro-batcher: merges concurrent requests, never holds a lone one, bounds its queue."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from modelport.batching import BatchStats, MicroBatcher
from modelport.errors import Overloaded, PredictionError, RequestTimeout
from modelport.types import Columns, Outputs


def _rows(*values: float) -> Columns:
    return Columns({"x": np.asarray(values, dtype=float)}, len(values))


def _doubler(calls: list[int], delay: float = 0.0):  # type: ignore[no-untyped-def]
    def predict(batch: Columns) -> Outputs:
        calls.append(batch.n_rows)
        if delay:
            time.sleep(delay)
        return Outputs(batch.data["x"] * 2)

    return predict


async def test_each_request_gets_its_own_rows_back() -> None:
    calls: list[int] = []
    b = MicroBatcher(_doubler(calls, 0.01), max_batch_size=64)
    results = await asyncio.gather(*(b.submit(_rows(i, i + 0.5)) for i in range(10)))
    for i, out in enumerate(results):
        assert out.predictions.tolist() == [2 * i, 2 * i + 1]
    await b.aclose()


async def test_concurrent_requests_share_model_calls() -> None:
    calls: list[int] = []
    b = MicroBatcher(_doubler(calls, 0.02), max_batch_size=64)
    await asyncio.gather(*(b.submit(_rows(i)) for i in range(20)))
    assert sum(calls) == 20
    assert len(calls) < 20  # merged: a busy model takes everything queued meanwhile
    assert max(calls) > 1
    await b.aclose()


async def test_batches_never_exceed_max_batch_size() -> None:
    calls: list[int] = []
    b = MicroBatcher(_doubler(calls, 0.005), max_batch_size=4)
    await asyncio.gather(*(b.submit(_rows(i)) for i in range(30)))
    assert max(calls) <= 4
    await b.aclose()


async def test_a_lone_request_is_not_held_for_the_batch_window() -> None:
    calls: list[int] = []
    b = MicroBatcher(_doubler(calls), max_batch_size=64, max_wait_s=0.5)
    started = time.perf_counter()
    for _ in range(3):
        await b.submit(_rows(1))
    assert time.perf_counter() - started < 0.25  # three sequential requests, no 0.5 s waits
    await b.aclose()


async def test_a_request_that_fills_a_call_by_itself_does_not_queue() -> None:
    """In one turn of the loop a second request normally queues (it could batch with later
    ones); one with ``max_batch_size`` rows or more cannot share a call, so it runs at once."""
    seen: list[BatchStats] = []
    b = MicroBatcher(_doubler([]), max_batch_size=4, on_batch=seen.append)
    await b.submit(_rows(0))  # the first call measures the model: cheap, so it runs inline
    await asyncio.gather(b.submit(_rows(1)), b.submit(_rows(1, 2, 3, 4)))
    assert [(s.rows, s.queue_delay_s) for s in seen[1:]] == [(1, 0.0), (4, 0.0)]
    await asyncio.gather(b.submit(_rows(1)), b.submit(_rows(2)))  # a small second one queues
    assert seen[3].queue_delay_s == 0.0 and seen[4].queue_delay_s > 0.0
    await b.aclose()


async def test_full_queue_is_overloaded_with_retry_after() -> None:
    gate = threading.Event()

    def blocked(batch: Columns) -> Outputs:
        gate.wait(5)
        return Outputs(batch.data["x"])

    b = MicroBatcher(blocked, max_batch_size=1, max_queue=2)
    first = asyncio.ensure_future(b.submit(_rows(0)))
    await asyncio.sleep(0.05)  # first is in the model now
    queued = [asyncio.ensure_future(b.submit(_rows(i))) for i in (1, 2)]
    await asyncio.sleep(0)
    with pytest.raises(Overloaded) as err:
        await b.submit(_rows(3))
    assert err.value.retry_after >= 1
    assert err.value.status == 503
    gate.set()
    await asyncio.gather(first, *queued)
    await b.aclose()


async def test_request_past_its_deadline_times_out_and_is_skipped() -> None:
    calls: list[int] = []
    b = MicroBatcher(_doubler(calls, 0.2), max_batch_size=1)
    slow = asyncio.ensure_future(b.submit(_rows(1)))
    await asyncio.sleep(0.01)
    with pytest.raises(RequestTimeout):
        await b.submit(_rows(2), timeout_s=0.05)
    await slow
    await asyncio.sleep(0.01)
    assert calls == [1]  # the timed-out request never reached the model
    await b.aclose()


async def test_one_watchdog_times_out_each_request_at_its_own_deadline() -> None:
    """Requests share one timer: a short deadline behind a long one still expires on time,
    while queued and while its batch is computed; the others are answered."""
    calls: list[int] = []
    b = MicroBatcher(_doubler(calls, 0.3), max_batch_size=1)
    started = time.perf_counter()
    computing = asyncio.ensure_future(b.submit(_rows(1), timeout_s=0.1))  # expires mid-call
    await asyncio.sleep(0.01)
    patient = asyncio.ensure_future(b.submit(_rows(2), timeout_s=10))
    hurried = asyncio.ensure_future(b.submit(_rows(3), timeout_s=0.05))
    with pytest.raises(RequestTimeout, match=r"no answer within 0\.05 s"):
        await hurried
    assert time.perf_counter() - started < 0.25  # not held until the long deadline
    with pytest.raises(RequestTimeout, match=r"no answer within 0\.1 s"):
        await computing
    assert (await patient).predictions.tolist() == [4]
    assert calls == [1, 1]  # the expired queued request never reached the model
    await b.aclose()


async def test_a_failing_request_does_not_fail_its_batch_neighbours() -> None:
    def picky(batch: Columns) -> Outputs:
        time.sleep(0.01)
        if (batch.data["x"] < 0).any():
            raise ValueError("negative")
        return Outputs(batch.data["x"])

    b = MicroBatcher(picky, max_batch_size=64)
    results = await asyncio.gather(*(b.submit(_rows(v)) for v in (1, 2, -1, 3, 4)),
                                   return_exceptions=True)
    assert isinstance(results[2], PredictionError)
    assert [r.predictions.tolist() for r in results if isinstance(r, Outputs)] == [
        [1.0], [2.0], [3.0], [4.0]]
    await b.aclose()


async def test_on_batch_reports_sizes_and_delays() -> None:
    seen: list[BatchStats] = []
    b = MicroBatcher(_doubler([], 0.01), on_batch=seen.append)
    await asyncio.gather(*(b.submit(_rows(i)) for i in range(5)))
    assert sum(s.rows for s in seen) == 5
    assert all(s.inference_s > 0 and s.queue_delay_s >= 0 for s in seen)
    await b.aclose()
