"""Adaptive micro-batching: concurrent requests for one model become one model call.

The batcher never holds a lone request: when the model is idle a request is run at once.
While the model is busy, arriving requests queue up and the next call takes all of them (up to
``max_batch_size`` rows). Only under sustained load (the previous call was a real batch) does it
wait up to ``max_wait_s`` for more rows to fill a batch. Calls that are known to be cheap run
inline on the event loop, because a thread hop would cost more than the model.

The model is any callable ``Columns -> Outputs``; metrics plug in through ``on_batch``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from modelport.errors import Overloaded, PredictionError, RequestTimeout
from modelport.types import Columns, Outputs

__all__ = ["BatchStats", "MicroBatcher"]

PredictFn = Callable[[Columns], Outputs]


@dataclass(frozen=True)
class BatchStats:
    """What one model call did, for metrics."""

    requests: int
    rows: int
    queue_delay_s: float
    """How long the oldest request of the batch waited before the call started."""
    inference_s: float


@dataclass
class _Pending:
    batch: Columns
    future: asyncio.Future[Outputs]
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Merge concurrent ``submit`` calls into batched calls of ``predict``."""

    def __init__(
        self,
        predict: PredictFn,
        *,
        max_batch_size: int = 64,
        max_wait_s: float = 0.002,
        max_queue: int = 2048,
        inline_below_s: float = 0.0002,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        self._predict = predict
        self.max_batch_size = max(1, max_batch_size)
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.inline_below_s = inline_below_s
        self._on_batch = on_batch
        self._queue: deque[_Pending] = deque()
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelport-model")
        self._call_ewma_s = 1.0  # pessimistic until measured: start on the thread
        self._last_batch_requests = 0

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
        pending = _Pending(batch, loop.create_future())
        self._queue.append(pending)
        self._ensure_worker()
        assert self._wakeup is not None
        self._wakeup.set()
        try:
            return await asyncio.wait_for(asyncio.shield(pending.future), timeout_s)
        except asyncio.TimeoutError:
            pending.future.cancel()
            raise RequestTimeout(f"no answer within {timeout_s:g} s; the model is overloaded "
                                 "or slow") from None

    async def aclose(self) -> None:
        """Stop the worker after the queue drained (used on shutdown and hot swap)."""
        while self._queue:
            await asyncio.sleep(0.005)
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        self._executor.shutdown(wait=True)

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._wakeup = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            if self._last_batch_requests > 1 and self.max_wait_s > 0:
                await self._fill(self.max_wait_s)
            taken = self._take()
            if taken:
                await self._call(taken)

    async def _fill(self, wait_s: float) -> None:
        deadline = time.perf_counter() + wait_s
        while self._rows_queued() < self.max_batch_size and time.perf_counter() < deadline:
            await asyncio.sleep(0)
            if self._rows_queued() < self.max_batch_size:
                await asyncio.sleep(min(0.0005, max(0.0, deadline - time.perf_counter())))

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
        return taken

    async def _call(self, taken: list[_Pending]) -> None:
        started = time.perf_counter()
        batch = Columns.concat([p.batch for p in taken])
        try:
            outputs = await self._invoke(batch)
        except Exception as exc:
            if len(taken) > 1:  # isolate the failing request; the others still get answers
                for p in taken:
                    await self._call([p])
                return
            _set_exception(taken[0], exc)
            return
        inference = time.perf_counter() - started
        self._call_ewma_s = 0.8 * self._call_ewma_s + 0.2 * inference
        self._last_batch_requests = len(taken)
        offset = 0
        for p in taken:
            if not p.future.done():
                p.future.set_result(outputs.take(offset, offset + p.batch.n_rows))
            offset += p.batch.n_rows
        if self._on_batch is not None:
            self._on_batch(BatchStats(len(taken), batch.n_rows, started - taken[0].enqueued,
                                      inference))

    async def _invoke(self, batch: Columns) -> Outputs:
        if self._call_ewma_s < self.inline_below_s:
            return self._predict(batch)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._predict, batch)


def _set_exception(pending: _Pending, exc: Exception) -> None:
    if pending.future.done():
        return
    err = exc if isinstance(exc, PredictionError) else PredictionError(
        f"the model failed on this input ({type(exc).__name__})")
    err.__cause__ = exc
    pending.future.set_exception(err)
