"""Adaptive micro-batching: concurrent requests for one model become one model call.

The batcher never holds a lone request: a request that finds the model idle is run on the
next turn of the event loop. Every request that arrives in the same turn (a burst, or a
loaded server's next wave) joins it, up to ``max_batch_size`` rows; a request of that many rows
or more shares no call, so it runs at once when nothing is queued. While the model is busy,
arriving requests queue up and the next call takes all of them. Under sustained load (the
previous call was a real batch) the batcher lets a few more turns pass, while new requests keep
arriving and for at most ``max_wait_s``, to fill the batch; it never idles waiting.

Not every front door delivers a wave of requests in one turn: grpc.aio hands the app one call
per turn, several turns apart, so a loaded gRPC server would answer every request alone (one
model call each; at c=64 that halved its throughput). So the batcher also watches the pace of
arrivals: in a stream of requests each back to back with the previous one (within
``max_wait_s``; more than ``PROBE_STREAK`` in a row) one is now and then queued as a *probe*,
and the drain waits, for at most ``max_wait_s``, while requests keep coming at their usual
pace. A probe that found company puts the batcher under sustained load, where every drain
waits that way; a probe that found none is answered alone (at most ``max_wait_s`` late) and
the next probe comes after twice as many requests, up to one in ``PROBE_EVERY_MAX``: a
closed-loop client at c=1 pays it on well under 1 % of its requests.

Calls that are known to be cheap (their moving average is under ``inline_below_s``) run on the
event loop itself, because a thread hop would cost more than the model; others run on one
model thread, timed there so that a busy event loop does not make a cheap model look slow.

The model is any callable ``Columns -> Outputs``; metrics plug in through ``on_batch``. There are
no tasks or locks per request: one future and one timer (the deadline) each.

States and transitions. The batcher is ``idle`` (no call running or scheduled), ``queued`` (a
drain is scheduled for the next turn of the loop), ``filling`` (a drain looks again two turns
later), ``computing`` (a call runs on the model thread) or ``closed``. Two facts learnt from the
last call steer it: its *cost* (a moving average of call times: ``unknown`` before the first
call, ``cheap`` below ``inline_below_s``, else ``costly``) and its *load* (``sustained`` when
the last call served more than one request, else ``light``). ``tests/test_batching_states.py``
has one test per row::

    #   state           event      condition                     action                    next
    1   any             submit     max_queue requests queued     Overloaded (503, Retry-   same
                                                                 After)
    2   idle            submit     cheap; max_batch_size rows    the model called on the   idle
                                   or more, or light load, none  loop for this request
                                   answered alone this turn and  alone
                                   no probe due
    3   idle            submit     otherwise                     queue it; drain on the    queued
                                                                 next turn
    4   not idle        submit     -                             queue it (it joins the    same
                                                                 next call)
    5   queued          drain      sustained load or a probe;    look again two turns      filling
                                   the queue grew, or (no two    later
                                   queued in one turn) the last
                                   came within twice the usual
                                   gap; its oldest waited <
                                   max_wait_s; < max_batch_size
                                   rows queued
    6   queued/filling  drain      every queued request expired  nothing                   idle
    7   queued/filling  drain      cheap                         one call on the loop for  as row 9
                                                                 up to max_batch_size
                                                                 queued rows
    8   queued/filling  drain      unknown or costly             that call on the model    computing
                                                                 thread
    9   computing       call done  -                             each request its slice;   queued if
                                                                 cost and load updated     any wait,
                                                                                           else idle
    10  queued          deadline   the request is still queued   RequestTimeout (504); the same
                                                                 drain skips it
    11  computing       model      the call held several         each retried alone; only  as row 9
                        raises     requests                      the failing one fails
    12  any             aclose     -                             wait until idle; stop the closed
                                                                 model thread
    13  idle            submit     cheap; light load; the last   queue it as a probe;      queued
                                   PROBE_STREAK arrivals back    drain on the next turn
                                   to back; the backoff of the
                                   last failed probe is over
    14  computing       call done  the call was a probe          it served several:        as row 9
                                                                 sustained load; one: the
                                                                 next probe waits for twice
                                                                 as many requests (at most
                                                                 PROBE_EVERY_MAX)
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from modelport.errors import Overloaded, PredictionError, RequestTimeout
from modelport.types import Columns, Outputs

__all__ = ["PROBE_EVERY_MAX", "PROBE_STREAK", "BatchStats", "MicroBatcher"]

PredictFn = Callable[[Columns], Outputs]
PROBE_EVERY_MAX = 256
"""After failed probes, at most one request in this many is queued to look for company."""
PROBE_STREAK = 8
"""Back-to-back arrivals in a row before a probe (a few quick requests are not load)."""
_Result = Outputs | Exception


@dataclass(frozen=True)
class BatchStats:
    """What one model call did, for metrics."""

    requests: int
    rows: int
    queue_delay_s: float
    """How long the oldest request of the batch waited before the call started."""
    inference_s: float


@dataclass(frozen=True)
class _Pending:
    batch: Columns
    future: asyncio.Future[Outputs]
    enqueued: float
    timeout_s: float | None = None
    deadline: float = math.inf
    """``loop.time()`` past which the request gets :class:`RequestTimeout` (queued or while
    its batch is computed)."""


class MicroBatcher:
    """Merge concurrent ``submit`` calls into batched calls of ``predict``."""

    def __init__(
        self,
        predict: PredictFn,
        *,
        max_batch_size: int = 64,
        max_wait_s: float = 0.002,
        max_queue: int = 2048,
        inline_below_s: float = 0.001,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        self._predict = predict
        self.max_batch_size = max(1, max_batch_size)
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.inline_below_s = inline_below_s
        self._on_batch = on_batch
        self._queue: deque[_Pending] = deque()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelport-model")
        self._call_ewma_s: float | None = None  # unknown until measured: start on the thread
        self._last_batch_requests = 0
        self._busy = False  # a model call is running (or a drain is scheduled)
        self._seen = 0  # queue length at the last look, to tell whether requests still arrive
        self._turn_taken = False  # a request was answered alone in this turn of the loop
        self._queued_this_turn = False  # a request was queued in this turn of the loop
        self._wave = False  # two requests queued in one turn since the last call was taken
        self._last_arrival = 0.0  # when the last request was submitted (perf_counter)
        self._gap_ewma_s = 0.0  # the usual gap between back-to-back arrivals
        self._streak = 0  # back-to-back arrivals in a row
        self._probing = False  # the queued batch is a probe (row 3a)
        self._probe_skip = 0  # requests to answer alone before the next probe
        self._probe_backoff = 1
        self._running: list[_Pending] = []  # the batch being computed
        self._watchdog: asyncio.TimerHandle | None = None
        self._watch_at = math.inf  # when the watchdog fires

    @property
    def queued(self) -> int:
        """Requests waiting for the model."""
        return len(self._queue)

    async def submit(self, batch: Columns, *, timeout_s: float | None = None) -> Outputs:
        """Outputs for ``batch``, computed in a shared model call."""
        if len(self._queue) >= self.max_queue:
            raise Overloaded(f"{len(self._queue)} requests are waiting for the model; retry "
                             "shortly", retry_after=1.0)
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        gap, self._last_arrival = now - self._last_arrival, now
        if gap < self.max_wait_s:
            ewma = self._gap_ewma_s
            self._gap_ewma_s = gap if ewma == 0.0 else 0.9 * ewma + 0.1 * gap
            self._streak += 1
        else:
            self._streak = 0
        if self._alone(batch.n_rows):
            return self._run_alone(loop, batch)
        future: asyncio.Future[Outputs] = loop.create_future()
        if timeout_s is None:
            self._queue.append(_Pending(batch, future, now))
        else:
            deadline = loop.time() + timeout_s
            self._queue.append(_Pending(batch, future, now, timeout_s, deadline))
            if deadline < self._watch_at:  # one timer for all: usually set by an earlier one
                self._watch(loop, deadline)
        if self._queued_this_turn:
            self._wave = True  # arrivals come in waves (REST): the queue's growth tells load
        else:
            self._queued_this_turn = True
            loop.call_soon(self._new_turn)
        if not self._busy:
            self._busy = True
            loop.call_soon(self._drain, loop)
        return await future

    def _watch(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Make the watchdog fire at ``deadline`` (one timer for every waiting request, not
        one each: a request's deadline is almost always later than the one already set)."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watch_at = deadline
        self._watchdog = loop.call_at(deadline, self._expire_due, loop)

    def _expire_due(self, loop: asyncio.AbstractEventLoop) -> None:
        """Fail the requests whose deadline passed (queued or being computed) with
        :class:`RequestTimeout`; set the watchdog for the next deadline."""
        self._watchdog, self._watch_at = None, math.inf
        now = loop.time()
        upcoming = math.inf
        for pending in (*self._queue, *self._running):
            if pending.future.done():
                continue
            if pending.deadline <= now:
                _expire(pending.future, pending.timeout_s or 0.0)
            else:
                upcoming = min(upcoming, pending.deadline)
        if upcoming < math.inf:
            self._watch(loop, upcoming)

    def _alone(self, rows: int) -> bool:
        """Whether this request can be answered right here: the model is idle and cheap, and
        either the request fills a call by itself or (a batch could still form) the last call
        was not a batch (no sustained load), no other request came this turn and no probe is
        due (row 3a)."""
        ewma = self._call_ewma_s
        if self._busy or ewma is None or ewma >= self.inline_below_s:
            return False
        if rows >= self.max_batch_size:
            return True
        if self._turn_taken or self._last_batch_requests > 1:
            return False
        if self._streak > PROBE_STREAK:
            if self._probe_skip <= 0:
                self._probing = True
                return False
            self._probe_skip -= 1
        return True

    def _run_alone(self, loop: asyncio.AbstractEventLoop, batch: Columns) -> Outputs:
        """One request, one call, no queue: the idle server's path (no batching penalty)."""
        self._turn_taken = True  # requests arriving in this same turn queue and batch up
        loop.call_soon(self._new_turn)
        (result,), inference = self._compute([batch])
        self._record(1, batch.n_rows, 0.0, inference)
        if isinstance(result, Exception):
            raise _prediction_error(result)
        return result

    def _new_turn(self) -> None:
        self._turn_taken = self._queued_this_turn = False

    async def aclose(self) -> None:
        """Stop after the queue drained (used on shutdown and hot swap)."""
        while self._queue or self._busy:
            await asyncio.sleep(0.005)
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._executor.shutdown(wait=True)

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the next model call, or hold on while a loaded server's next wave arrives."""
        if self._should_fill():
            # two turns: requests read in this turn's I/O phase reach submit() in the next one
            loop.call_soon(loop.call_soon, self._drain, loop)
            return
        taken = self._take()
        if not taken:
            self._busy = False
            return
        batches = [p.batch for p in taken]
        self._running = taken
        started = time.perf_counter()
        ewma = self._call_ewma_s
        if ewma is not None and ewma < self.inline_below_s:
            results, inference = self._compute(batches)
            self._finish(loop, taken, started, results, inference)
            return
        try:
            work = loop.run_in_executor(self._executor, self._compute, batches)
        except RuntimeError as exc:  # the executor was shut down (closed batcher)
            self._finish(loop, taken, started, [exc] * len(taken), 0.0)
            return
        work.add_done_callback(lambda done: self._finish(loop, taken, started, *_outcome(done,
                                                                                    taken)))

    def _should_fill(self) -> bool:
        """Under sustained load or for a probe, wait one more turn while the queue still grows
        or requests keep coming at their usual pace (row 5)."""
        if self.max_wait_s <= 0 or not self._queue or not (
                self._probing or self._last_batch_requests > 1):
            return False
        growing, self._seen = len(self._queue) > self._seen, len(self._queue)
        now = time.perf_counter()
        if now - self._queue[0].enqueued >= self.max_wait_s:
            return False
        if self._rows_queued() >= self.max_batch_size:
            return False
        if growing:
            return True
        # one request per turn (gRPC): wait while they keep their pace; waves (REST) were all
        # read in their turn, so a queue that stopped growing has all it will get
        return not self._wave and now - self._last_arrival < 2 * self._gap_ewma_s

    def _rows_queued(self) -> int:
        return sum(p.batch.n_rows for p in self._queue)

    def _take(self) -> list[_Pending]:
        taken: list[_Pending] = []
        rows = 0
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # timed out or cancelled while queued
                self._queue.popleft()
                continue
            if taken and rows + head.batch.n_rows > self.max_batch_size:
                break
            taken.append(self._queue.popleft())
            rows += head.batch.n_rows
        self._seen = 0
        self._wave = False
        return taken

    def _compute(self, batches: list[Columns]) -> tuple[list[_Result], float]:
        """One model call for all ``batches`` (on the loop or the model thread), each request's
        slice of the outputs, and how long the model took. A failing batch is retried request
        by request, so that one bad request does not fail its neighbours."""
        started = time.perf_counter()
        try:
            outputs = self._predict(Columns.concat(batches))
        except Exception as exc:
            if len(batches) == 1:
                return [exc], time.perf_counter() - started
            return [self._compute([b])[0][0] for b in batches], time.perf_counter() - started
        results: list[_Result] = []
        offset = 0
        for b in batches:
            results.append(outputs if len(batches) == 1 else
                           outputs.take(offset, offset + b.n_rows))
            offset += b.n_rows
        return results, time.perf_counter() - started

    def _finish(self, loop: asyncio.AbstractEventLoop, taken: list[_Pending], started: float,
                results: list[_Result], inference: float) -> None:
        self._running = []
        for pending, result in zip(taken, results, strict=True):
            if pending.future.done():
                continue
            if isinstance(result, Exception):
                pending.future.set_exception(_prediction_error(result))
            else:
                pending.future.set_result(result)
        rows = sum(p.batch.n_rows for p in taken)
        self._record(len(taken), rows, started - taken[0].enqueued, inference)
        if self._queue:
            loop.call_soon(self._drain, loop)
        else:
            self._busy = False


    def _record(self, requests: int, rows: int, delay: float, inference: float) -> None:
        ewma = self._call_ewma_s
        self._call_ewma_s = inference if ewma is None else 0.8 * ewma + 0.2 * inference
        self._last_batch_requests = requests
        if self._probing:
            self._probing = False
            if requests > 1:  # company came: sustained load from now on
                self._probe_backoff = 1
            else:
                self._probe_backoff = min(2 * self._probe_backoff, PROBE_EVERY_MAX)
                self._probe_skip = self._probe_backoff
        if self._on_batch is not None:
            self._on_batch(BatchStats(requests, rows, delay, inference))


def _outcome(done: asyncio.Future[tuple[list[_Result], float]],
             taken: list[_Pending]) -> tuple[list[_Result], float]:
    exc = done.exception()
    if exc is None:
        return done.result()
    err = exc if isinstance(exc, Exception) else RuntimeError(repr(exc))
    return [err] * len(taken), 0.0


def _expire(future: asyncio.Future[Outputs], timeout_s: float) -> None:
    if not future.done():
        future.set_exception(RequestTimeout(f"no answer within {timeout_s:g} s; the model is "
                                            "overloaded or slow"))


def _prediction_error(exc: Exception) -> Exception:
    if isinstance(exc, PredictionError):
        return exc
    err = PredictionError(f"the model failed on this input ({type(exc).__name__})")
    err.__cause__ = exc
    return err
