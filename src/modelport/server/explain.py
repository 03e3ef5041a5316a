"""``POST /models/{m}/explain`` and ``POST /v2/models/{m}/explain``: SHAP explanations.

The routes take the bodies of their protocol's prediction route and validate them with the
same decoders (a bad body gets the same 4xx), then answer the contributions of each original
feature to the model's output (see :mod:`modelport.explain`).

An explanation costs hundreds of model calls (kernel) or a tree walk per row, so it never
shares anything with predictions that could make them wait:

- its own **rate limit**: a token bucket (``explain_rate`` per second, ``explain_burst`` at
  once) checked before the body is read; past it, 429 with ``Retry-After``;
- its own **micro-batcher and thread**: requests for one model version that arrive while the
  explainer is busy are merged into its next call (up to ``explain_max_rows`` rows); calls run
  on one ``modelport-explain`` thread, never on the event loop nor on a model's prediction
  thread, and call the model directly, not through its prediction batcher; at most
  ``explain_max_queue`` requests wait (503 past it);
- explainers are built on that thread too, on a version's first explanation, and kept while
  the version is served.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import orjson
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel
from starlette.responses import Response

from modelport.config import Settings
from modelport.errors import NotReady, Overloaded, RateLimited, RequestTimeout
from modelport.explain import (
    Explainer,
    ExplainUnavailable,
    Explanation,
    background_from_profile,
    build_explainer,
    shap_available,
)
from modelport.server import tracing
from modelport.server.edge import request_context
from modelport.server.fastlane import RouteTable
from modelport.server.models import ServedModel
from modelport.server.native import native_batch, read_native
from modelport.server.schemas import answers
from modelport.server.state import AppState, app_state
from modelport.server.v2codec import check_outputs, decode_request, to_columns
from modelport.types import Columns

__all__ = ["ExplainAnswer", "ExplainService", "TokenBucket", "V2ExplainAnswer",
           "install_explain", "router", "table"]

router = APIRouter(tags=["explanations"])
table = RouteTable(router)
"""The explanation routes: documented once per served model (the request schema of the
protocol's prediction route) and answered by the fast lane, as predictions are."""
_HEADER = "inference-header-content-length"
_OPTS = orjson.OPT_SERIALIZE_NUMPY


class ExplainAnswer(BaseModel):
    """An explanation (``…/explain``): contributions of each feature to each output."""

    model: str
    version: str
    request_id: str
    method: Literal["tree", "kernel"]
    output: Literal["margin", "probability", "value"]
    """What is explained: log-odds, probability or the regressor's value."""
    outputs: list[str]
    """What each explained output is: a class label, or ``prediction``."""
    features: list[str]
    """Original features (``a+b`` for a group a preprocessor mixed)."""
    base_values: list[float]
    """Per output: its expected value."""
    contributions: list[list[list[float]]]
    """``[row][output][feature]``."""
    values: list[list[float]]
    """``[row][output]``: base value plus the row's contributions."""


class V2ExplainTensor(BaseModel):
    """One output tensor of a V2 explanation (FP64)."""

    name: Literal["contributions", "base_values", "values"]
    datatype: Literal["FP64"]
    shape: list[int]
    data: list[float]


class V2ExplainParameters(BaseModel):
    """What the tensors' axes are."""

    method: Literal["tree", "kernel"]
    output: Literal["margin", "probability", "value"]
    outputs: list[str]
    features: list[str]


class V2ExplainAnswer(BaseModel):
    """A V2 explanation: ``contributions`` ``[rows, outputs, features]``, ``base_values``
    ``[outputs]``, ``values`` ``[rows, outputs]``."""

    model_name: str
    model_version: str
    id: str
    parameters: V2ExplainParameters
    outputs: list[V2ExplainTensor]


_ANSWERS = answers(ExplainAnswer, 404, 422, 429, 501, 503, 504)
_V2_ANSWERS = answers(V2ExplainAnswer, 400, 404, 429, 501, 503, 504)


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; :meth:`take` raises
    :class:`~modelport.errors.RateLimited` when none is left (``rate`` 0: no limit)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self._tokens, self._at = float(burst), time.monotonic()

    def take(self) -> None:
        """Spend one token, or refuse with the seconds until the next one."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1.0:
            wait = (1.0 - self._tokens) / self.rate
            raise RateLimited(f"more than {self.rate:g} explanation requests a second; retry "
                              f"in {wait:.1f} s", retry_after=wait)
        self._tokens -= 1.0


@dataclass(frozen=True)
class _Pending:
    batch: Columns
    future: asyncio.Future[Explanation]


class _Lane:
    """One model version's explanation queue: requests that wait while its explainer is busy
    become one call."""

    def __init__(self, service: ExplainService, served: ServedModel) -> None:
        self.service, self.served = service, served
        self.queue: deque[_Pending] = deque()
        self.busy = False
        self.explainer: Explainer | None = None

    async def submit(self, batch: Columns, timeout_s: float) -> Explanation:
        if self.service.queued() >= self.service.settings.explain_max_queue:
            raise Overloaded(f"{self.service.queued()} explanation requests are waiting; retry "
                             "shortly", retry_after=1.0)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Explanation] = loop.create_future()
        self.queue.append(_Pending(batch, future))
        if not self.busy:
            self.busy = True
            loop.call_soon(self._drain, loop)
        try:
            return await asyncio.wait_for(future, timeout_s)
        except asyncio.TimeoutError:
            raise RequestTimeout(f"no explanation within {timeout_s:g} s; the explainer is "
                                 "busy") from None

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        taken: list[_Pending] = []
        rows = 0
        limit = self.service.settings.explain_max_rows
        while self.queue:
            head = self.queue[0]
            if head.future.done():  # timed out while queued
                self.queue.popleft()
                continue
            if taken and rows + head.batch.n_rows > limit:
                break
            taken.append(self.queue.popleft())
            rows += head.batch.n_rows
        if not taken:
            self.busy = False
            return
        work = loop.run_in_executor(self.service.executor, self._compute,
                                    [p.batch for p in taken])
        work.add_done_callback(lambda done: self._finish(loop, taken, done))

    def _compute(self, batches: list[Columns]) -> Explanation:
        """On the explain thread: build the explainer once, then one call for all."""
        if self.explainer is None:
            self.explainer = self.service.explainer_for(self.served)
        return self.explainer.explain(Columns.concat(batches))

    def _finish(self, loop: asyncio.AbstractEventLoop, taken: list[_Pending],
                done: asyncio.Future[Explanation]) -> None:
        exc: BaseException | None = (NotReady("the server is shutting down") if done.cancelled()
                                     else done.exception())
        offset = 0
        for pending in taken:
            n = pending.batch.n_rows
            if not pending.future.done():
                if exc is not None:
                    pending.future.set_exception(exc)
                else:
                    pending.future.set_result(done.result().take(offset, offset + n))
            offset += n
        if self.queue:
            loop.call_soon(self._drain, loop)
        else:
            self.busy = False


class ExplainService:
    """The explanation routes' state: rate limit, one lane per version, the explain thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bucket = TokenBucket(settings.explain_rate, settings.explain_burst)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelport-explain")
        self._lanes: dict[tuple[str, str], _Lane] = {}

    def queued(self) -> int:
        """Explanation requests waiting, over every version."""
        return sum(len(lane.queue) for lane in self._lanes.values())

    def lane(self, served: ServedModel) -> _Lane:
        """The lane of ``served`` (a new one when the version was replaced)."""
        key = (served.name, served.version)
        lane = self._lanes.get(key)
        if lane is None or lane.served is not served:
            lane = self._lanes[key] = _Lane(self, served)
        return lane

    def explainer_for(self, served: ServedModel) -> Explainer:
        """A new explainer for ``served``, its kernel background drawn from the package's
        reference profile, else its golden rows (runs on the explain thread)."""
        settings = self.settings
        return build_explainer(served.loaded.runtime, background=_background(served, settings),
                               samples=settings.explain_samples)

    def close(self) -> None:
        """Stop the explain thread (after the calls running on it)."""
        self.executor.shutdown(wait=True, cancel_futures=True)


def _background(served: ServedModel, settings: Settings) -> Columns | None:
    from modelport.monitoring.profile import ReferenceProfile

    sig, pkg = served.signature, served.loaded.package
    ref = None if pkg is None else pkg.reference_path
    if ref is not None and ref.is_file():
        profile = ReferenceProfile.from_json(ref.read_text(encoding="utf-8"))
        found = background_from_profile(profile, sig, rows=settings.explain_background_rows)
        if found is not None:
            return found
    golden = None if pkg is None else pkg.golden()
    records = [r for r in (golden or {}).get("inputs", []) if isinstance(r, dict)]
    if records:
        try:
            return sig.from_records(records, unseen="pass")
        except Exception:  # golden rows of another shape: the example row will do
            return None
    return None


def install_explain(app: FastAPI, state: AppState) -> ExplainService:
    """Mount the explanation routes on ``app`` with their own service (closed at shutdown)."""
    service = ExplainService(state.settings)
    app.state.explain = service
    state.closers.append(service.close)
    app.include_router(router)
    return service


def _service(request: Request) -> ExplainService:
    service: ExplainService = request.app.state.explain
    return service


def _admit(request: Request) -> ExplainService:
    if not shap_available():
        raise ExplainUnavailable()
    service = _service(request)
    service.bucket.take()
    return service


def _served(request: Request, protocol: str, name: str | None,
            version: str | None) -> ServedModel:
    ctx = request_context(request)
    ctx.protocol, ctx.route = protocol, "explain"
    served = app_state(request).dataplane.get(name, version)
    ctx.model, ctx.version = served.name, served.version
    return served


async def _explain_native(request: Request, name: str | None, version: str | None) -> Response:
    service = _admit(request)
    served = _served(request, "native", name, version)
    settings = service.settings
    with tracing.span("modelport.validate") if tracing.ON else tracing.NOOP:
        body, plain = await read_native(request)
        batch = native_batch(body, served.signature, unseen=settings.unseen_categories,
                             max_rows=settings.explain_max_rows, plain=plain)
    with tracing.span("modelport.explain") if tracing.ON else tracing.NOOP:
        found = await service.lane(served).submit(batch, settings.request_timeout_s)
    payload: dict[str, Any] = {
        "model": served.name, "version": served.version,
        "request_id": request_context(request).request_id, "method": found.method,
        "output": found.output, "outputs": list(found.outputs),
        "features": list(found.features), "base_values": found.base_values,
        "contributions": found.contributions, "values": found.values,
    }
    return Response(orjson.dumps(payload, option=_OPTS), media_type="application/json")


async def _explain_v2(request: Request, name: str, version: str | None) -> Response:
    service = _admit(request)
    served = _served(request, "v2", name, version)
    settings = service.settings
    header = request.headers.get(_HEADER)
    with tracing.span("modelport.validate") if tracing.ON else tracing.NOOP:
        head, tensors = decode_request(await request.body(), int(header) if header and
                                       header.isdigit() else None)
        check_outputs([o["name"] for o in head.get("outputs", [])], served.signature)
        batch = to_columns(tensors, served.signature, unseen=settings.unseen_categories,
                           max_rows=settings.explain_max_rows)
    with tracing.span("modelport.explain") if tracing.ON else tracing.NOOP:
        found = await service.lane(served).submit(batch, settings.request_timeout_s)
    tensors_out = [("contributions", found.contributions), ("base_values", found.base_values),
                   ("values", found.values)]
    payload = {
        "model_name": served.name, "model_version": served.version,
        "id": request_context(request).request_id,
        "parameters": {"method": found.method, "output": found.output,
                       "outputs": list(found.outputs), "features": list(found.features)},
        "outputs": [{"name": n, "datatype": "FP64", "shape": list(a.shape),
                     "data": np.ravel(a)} for n, a in tensors_out],
    }
    return Response(orjson.dumps(payload, option=_OPTS), media_type="application/json")


@table.post("/explain", kind="explain", summary="Explain predictions of the primary model",
            responses=_ANSWERS)
async def explain_primary(request: Request) -> Response:
    """The body of ``/predict``; contributions of each feature to each row's output."""
    return await _explain_native(request, None, None)


@table.post("/models/{name}/explain", kind="explain", summary="Explain predictions of a model",
            responses=_ANSWERS)
async def explain_model(request: Request, name: str) -> Response:
    """The body of ``/models/{name}/predict``, explained with the default version."""
    return await _explain_native(request, name, None)


@table.post("/models/{name}/versions/{version}/explain", kind="explain",
            summary="Explain predictions of a version", responses=_ANSWERS)
async def explain_version(request: Request, name: str, version: str) -> Response:
    """The body of ``/models/{name}/versions/{version}/predict``."""
    return await _explain_native(request, name, version)


@table.post("/v2/models/{name}/explain", kind="v2explain",
            summary="Explain an inference request (V2)", responses=_V2_ANSWERS)
async def explain_v2(request: Request, name: str) -> Response:
    """The body of ``/v2/models/{name}/infer`` (JSON or binary tensors); outputs
    ``contributions`` ``[rows, outputs, features]``, ``base_values`` and ``values``, named in
    ``parameters``."""
    return await _explain_v2(request, name, None)


@table.post("/v2/models/{name}/versions/{version}/explain", kind="v2explain",
            summary="Explain an inference request with a version (V2)", responses=_V2_ANSWERS)
async def explain_v2_version(request: Request, name: str, version: str) -> Response:
    """The body of ``/v2/models/{name}/versions/{version}/infer``."""
    return await _explain_v2(request, name, version)
