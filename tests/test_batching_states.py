"""The micro-batcher's state table (``batching.py``'s docstring), one test per row.

Where a call ran tells the states apart: on the event loop's thread (cheap calls, rows 2 and 7)
or on the model thread (row 8); how requests were grouped into calls tells queued from alone
and filling from not.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from typing import Any

import numpy as np
import pytest

from modelport import batching
from modelport.batching import BatchStats, MicroBatcher
from modelport.errors import Overloaded, PredictionError, RequestTimeout
from modelport.types import Columns, Outputs


def rows(*values: float) -> Columns:
    return Columns({"x": np.asarray(values, dtype=float)}, len(values))


class Model:
    """A model that records each call: its rows, its thread, and when it ran."""

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        self.calls: list[int] = []
        self.threads: list[str] = []
        self.delay, self.gate = delay, gate

    def __call__(self, batch: Columns) -> Outputs:
        self.calls.append(batch.n_rows)
        self.threads.append(threading.current_thread().name)
        if self.gate is not None:
            self.gate.wait(5)
        if self.delay:
            time.sleep(self.delay)
        if (batch.data["x"] < 0).any():
            raise ValueError("negative")
        return Outputs(batch.data["x"] * 2)


async def cheap(model: Model, **options: Any) -> MicroBatcher:
    """A batcher whose first call has measured the model as cheap (calls run on the loop)."""
    b = MicroBatcher(model, **options)
    await b.submit(rows(0))
    model.calls.clear()
    model.threads.clear()
    return b


LOOP = threading.current_thread().name


async def test_row_1_a_full_queue_refuses_with_retry_after() -> None:
    gate = threading.Event()
    b = MicroBatcher(Model(gate=gate), max_batch_size=1, max_queue=1)
    running = asyncio.ensure_future(b.submit(rows(1)))
    await asyncio.sleep(0.05)  # in the model now (unknown cost: on the model thread)
    waiting = asyncio.ensure_future(b.submit(rows(2)))
    await asyncio.sleep(0)
    with pytest.raises(Overloaded) as refused:
        await b.submit(rows(3))
    assert refused.value.status == 503 and refused.value.retry_after >= 1
    gate.set()
    await asyncio.gather(running, waiting)
    await b.aclose()


async def test_row_2_idle_and_cheap_a_lone_request_is_answered_on_the_loop() -> None:
    model = Model()
    b = await cheap(model)
    answer = await b.submit(rows(3))
    assert answer.predictions.tolist() == [6.0]
    assert model.threads == [LOOP] and b.queued == 0
    await b.aclose()


async def test_row_2_a_request_that_fills_a_call_runs_alone_even_after_another() -> None:
    model = Model()
    seen: list[BatchStats] = []
    b = await cheap(model, max_batch_size=4, on_batch=seen.append)
    seen.clear()
    first = asyncio.ensure_future(b.submit(rows(1)))
    full = asyncio.ensure_future(b.submit(rows(1, 2, 3, 4)))
    await asyncio.sleep(0)  # both ran their first step in the same turn
    assert first.done() and full.done()  # neither queued
    assert [(s.requests, s.queue_delay_s) for s in seen] == [(1, 0.0), (1, 0.0)]
    await b.aclose()


async def test_row_3_idle_but_unknown_cost_queues_the_request() -> None:
    model = Model()
    b = MicroBatcher(model)
    task = asyncio.ensure_future(b.submit(rows(1)))
    await asyncio.sleep(0)
    assert not task.done() and b.queued == 1
    assert (await task).predictions.tolist() == [2.0]
    assert model.threads[0] != LOOP  # row 8: the first call measures the model on its thread
    await b.aclose()


async def test_row_3_a_second_small_request_in_the_same_turn_queues() -> None:
    model = Model()
    b = await cheap(model)
    first = asyncio.ensure_future(b.submit(rows(1)))
    second = asyncio.ensure_future(b.submit(rows(2)))
    await asyncio.sleep(0)
    assert first.done() and not second.done() and b.queued == 1
    assert (await second).predictions.tolist() == [4.0]
    await b.aclose()


async def test_row_4_requests_arriving_during_a_call_join_the_next_call() -> None:
    gate = threading.Event()
    model = Model(gate=gate)
    b = MicroBatcher(model, max_batch_size=64)
    running = asyncio.ensure_future(b.submit(rows(1)))
    await asyncio.sleep(0.05)
    later = [asyncio.ensure_future(b.submit(rows(v))) for v in (2, 3, 4)]
    await asyncio.sleep(0.01)
    assert b.queued == 3
    gate.set()
    answers = await asyncio.gather(running, *later)
    assert model.calls == [1, 3]  # row 9: the queue is drained by the next call, all at once
    assert [a.predictions.tolist() for a in answers] == [[2.0], [4.0], [6.0], [8.0]]
    await b.aclose()


async def _sustained(model: Model, max_wait_s: float) -> MicroBatcher:
    """A cheap batcher whose last call served two requests (sustained load)."""
    b = await cheap(model, max_wait_s=max_wait_s)
    await asyncio.gather(b.submit(rows(1)), b.submit(rows(2)), b.submit(rows(3)))
    model.calls.clear()
    return b


async def _trickle(b: MicroBatcher, n: int) -> list[Outputs]:
    """``n`` requests, one per turn of the loop."""
    tasks = []
    for i in range(n):
        tasks.append(asyncio.ensure_future(b.submit(rows(i))))
        await asyncio.sleep(0)
    return list(await asyncio.gather(*tasks))


async def test_row_5_under_sustained_load_the_drain_waits_while_requests_keep_coming() -> None:
    model = Model()
    b = await _sustained(model, max_wait_s=1.0)
    answers = await _trickle(b, 4)
    assert model.calls == [4]  # one call: the drain waited for the trickle
    assert [a.predictions.tolist() for a in answers] == [[0.0], [2.0], [4.0], [6.0]]
    await b.aclose()


async def test_row_5_without_a_batch_window_the_drain_does_not_wait() -> None:
    model = Model()
    b = await _sustained(model, max_wait_s=0.0)
    await _trickle(b, 4)
    assert len(model.calls) > 1
    await b.aclose()


async def test_rows_6_and_10_a_request_past_its_deadline_fails_and_is_skipped() -> None:
    model = Model(delay=0.2)
    b = MicroBatcher(model, max_batch_size=1)
    running = asyncio.ensure_future(b.submit(rows(1)))
    await asyncio.sleep(0.01)
    with pytest.raises(RequestTimeout):  # row 10
        await b.submit(rows(2), timeout_s=0.05)
    await running
    await asyncio.sleep(0.01)  # row 6: the drain found only the expired request
    assert model.calls == [1] and b.queued == 0
    assert (await b.submit(rows(5))).predictions.tolist() == [10.0]  # idle again
    await b.aclose()


async def test_row_7_a_cheap_model_answers_the_queue_on_the_loop() -> None:
    model = Model()
    b = await cheap(model)
    await asyncio.gather(b.submit(rows(1)), b.submit(rows(2)), b.submit(rows(3)))
    assert model.threads and set(model.threads) == {LOOP}
    assert sum(model.calls) == 3
    await b.aclose()


async def test_row_8_a_costly_model_runs_on_the_model_thread() -> None:
    model = Model()
    b = MicroBatcher(model, inline_below_s=0.0)  # every call is costly
    for value in (1, 2):
        await b.submit(rows(value))
    assert model.threads and all(t.startswith("modelport-model") for t in model.threads)
    await b.aclose()


async def test_row_9_after_a_call_the_next_waits_its_turn_and_load_is_learnt() -> None:
    model = Model(delay=0.01)
    seen: list[BatchStats] = []
    b = MicroBatcher(model, on_batch=seen.append)
    await asyncio.gather(*(b.submit(rows(i)) for i in range(6)))
    assert sum(s.rows for s in seen) == 6
    assert seen[-1].requests > 1  # a batch: the load is sustained now
    assert all(s.inference_s > 0 for s in seen)
    await b.aclose()


async def test_row_11_one_failing_request_does_not_fail_its_neighbours() -> None:
    model = Model(delay=0.01)
    b = MicroBatcher(model)
    answers = await asyncio.gather(*(b.submit(rows(v)) for v in (1, 2, -1, 3)),
                                   return_exceptions=True)
    assert isinstance(answers[2], PredictionError)
    assert [a.predictions.tolist() for a in answers if isinstance(a, Outputs)] == [
        [2.0], [4.0], [6.0]]
    await b.aclose()


async def test_row_12_aclose_lets_queued_requests_finish_then_closes() -> None:
    model = Model(delay=0.05)
    b = MicroBatcher(model)
    pending = [asyncio.ensure_future(b.submit(rows(v))) for v in (1, 2)]
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(b.aclose())
    answers = await asyncio.gather(*pending)
    await closing
    assert [a.predictions.tolist() for a in answers] == [[2.0], [4.0]]
    with pytest.raises(PredictionError):  # closed: no model thread to run a call on
        await b.submit(rows(3))


async def _stream(b: MicroBatcher, n: int, gap_s: float = 0.0) -> None:
    """``n`` requests back to back, each awaited before the next (a closed-loop client)."""
    for i in range(n):
        await b.submit(rows(i))
        await asyncio.sleep(gap_s)  # its next request comes in a later turn of the loop


async def test_row_13_a_stream_of_back_to_back_requests_gets_a_probe_queued() -> None:
    model = Model()
    b = await cheap(model, max_wait_s=1.0)
    await _stream(b, batching.PROBE_STREAK)
    assert b.queued == 0 and model.threads == [LOOP] * batching.PROBE_STREAK  # each alone
    probe = asyncio.ensure_future(b.submit(rows(5)))
    await asyncio.sleep(0)
    assert b.queued == 1  # queued, not answered alone: it looks for company
    assert (await probe).predictions.tolist() == [10.0]
    await b.aclose()


async def test_row_14_a_probe_that_finds_company_makes_the_load_sustained() -> None:
    model = Model()
    seen: list[BatchStats] = []
    b = await cheap(model, max_wait_s=1.0, on_batch=seen.append)
    await _stream(b, batching.PROBE_STREAK)
    answers = await _trickle(b, 4)  # one per turn, as grpc.aio hands calls over
    assert [a.predictions.tolist() for a in answers] == [[0.0], [2.0], [4.0], [6.0]]
    assert seen[-1].requests > 1  # the probe waited for the trickle: sustained from now on
    await b.aclose()


async def test_row_14_a_lonely_probe_backs_off_doubling_up_to_the_cap() -> None:
    model = Model()
    seen: list[BatchStats] = []
    b = await cheap(model, max_wait_s=0.5, on_batch=seen.append)
    await _stream(b, 700)  # a closed-loop client: no company ever comes
    queued = [i for i, s in enumerate(seen[1:]) if s.queue_delay_s > 0]  # the probes
    gaps = [later - earlier - 1 for earlier, later in itertools.pairwise(queued)]
    assert gaps[:5] == [2, 4, 8, 16, 32]  # requests answered alone between probes
    assert max(gaps) == batching.PROBE_EVERY_MAX and len(queued) < 0.03 * len(seen)
    assert all(s.requests == 1 for s in seen)  # nothing was held back for company
    await b.aclose()


async def test_row_5_requests_one_per_turn_and_spaced_are_batched_at_their_pace() -> None:
    model = Model()
    seen: list[BatchStats] = []
    b = await _sustained(model, max_wait_s=1.0)
    b._on_batch = seen.append
    tasks = []
    for i in range(30):  # far more than two turns apart, at a steady pace
        tasks.append(asyncio.ensure_future(b.submit(rows(i))))
        await asyncio.sleep(0.002)
    await asyncio.gather(*tasks)
    assert sum(s.requests for s in seen) == 30
    assert max(s.requests for s in seen) > 1  # the drain waited for the next ones
    await b.aclose()


async def test_row_5_a_wave_read_in_one_turn_is_not_held_for_the_pace() -> None:
    model = Model()
    b = await _sustained(model, max_wait_s=1.0)
    for i in range(20):  # a steady pace of 5 ms: twice that is the window for one-per-turn
        await asyncio.gather(b.submit(rows(i)), asyncio.sleep(0.005))
    await asyncio.gather(*(b.submit(rows(v)) for v in (1, 2, 3)))  # a batch: sustained load
    model.calls.clear()
    wave = [asyncio.ensure_future(b.submit(rows(v))) for v in (1, 2, 3)]  # one turn (REST)
    await asyncio.sleep(0.001)
    late = asyncio.ensure_future(b.submit(rows(4)))
    await asyncio.gather(*wave, late)
    assert model.calls == [3, 1]  # the wave went without waiting out the pace window
    await b.aclose()


def test_the_docstring_table_has_a_test_per_row() -> None:
    doc = batching.__doc__ or ""
    table = [line.split()[0] for line in doc.splitlines()
             if line[:6].strip().isdigit() and line.startswith("    ")]
    tested = {part for name in globals() if name.startswith("test_row")
              for part in name.removeprefix("test_row").split("_")[:4] if part.isdigit()}
    assert table == [str(n) for n in range(1, 15)]
    assert tested == set(table), sorted(set(table) - tested, key=int)

