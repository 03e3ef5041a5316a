"""The data plane: one prediction request from resolution to emission, under every protocol.

A front door (native REST, V2 JSON and binary, V1, gRPC) decodes its wire format and makes a
:class:`RequestContext`; the data plane does the rest, the same way for all of them::

    front door: decode, make RequestContext(request_id, protocol, headers)
      -> DataPlane.resolve(ctx, name, version)   model, version or default, traffic arm, shadow
      -> codec + signature: bytes/tensors -> Columns (validation, 4xx naming the field)
      -> DataPlane.infer(ctx, served, batch)     cache -> micro-batcher -> model
                                                 -> emit: metrics, drift, prediction log,
                                                    shadow copies (off the hot path)
    front door: encode Outputs, map a ModelportError to its wire status once

The data plane knows no protocol: errors are :class:`~modelport.errors.ModelportError` with an
HTTP ``status``, which each front door translates (REST: JSON bodies; gRPC: status codes).
Reach it as ``AppState.dataplane``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from modelport.cache import FallbackHook, LookupHook, PredictionCache, cached_predict
from modelport.config import Settings
from modelport.errors import ModelNotFound, RequestTimeout
from modelport.server import tracing
from modelport.server.gate import Refusals, admit, live_of
from modelport.server.models import ModelRepository, ServedModel, retire
from modelport.server.pool import ModelPool as LazyPool
from modelport.server.traffic import TrafficRouter
from modelport.types import Columns, Outputs, PredictionEvent

__all__ = ["MAX_SHADOW_TASKS", "DataPlane", "PlaneState", "RequestContext"]

MAX_SHADOW_TASKS = 256
"""Shadow copies running at once; more are dropped (they never slow the answer)."""
_log = logging.getLogger("modelport")


@dataclass(slots=True)
class RequestContext:
    """One request's facts, typed; made by a front door, filled by the data plane."""

    request_id: str
    protocol: str
    """``"native"``, ``"v2"``, ``"v1"`` or ``"grpc"``: the metrics label."""
    headers: Mapping[str, str]
    """Request headers (gRPC: metadata) by lower-case name: sticky traffic keys."""
    route: str = ""
    """What the prediction event's ``route`` says (the REST protocol, or ``"grpc"``)."""
    model: str | None = None
    """The model asked (set by :meth:`DataPlane.infer`: a request refused before, say for
    bad input, names no version in its answer headers and metrics)."""
    version: str | None = None
    """Its version (set by :meth:`DataPlane.infer`)."""
    arm: str | None = None
    """The traffic policy's arm, when a policy picked the version (set by
    :meth:`DataPlane.resolve`)."""
    shadow: tuple[str, ...] = ()
    """Versions that get a copy of the request, their answers recorded, never sent (set by
    :meth:`DataPlane.resolve`)."""
    deadline: float | None = None
    """A ``time.monotonic()`` instant after which the answer is useless (gRPC deadline)."""


class PlaneState(Protocol):
    """What the data plane reads and counts in the server's state
    (:class:`~modelport.server.state.AppState` is one; the data plane does not import it,
    which keeps every web framework out of this module)."""

    settings: Settings
    repo: ModelRepository
    traffic: TrafficRouter
    refusals: Refusals
    on_prediction: list[Callable[[PredictionEvent], None]]
    cache: PredictionCache | None
    on_cache_lookup: LookupHook | None
    on_cache_fallback: FallbackHook | None
    in_flight: int
    shutting_down: bool
    shadow_tasks: set[asyncio.Task[None]]


class DataPlane:
    """Resolve, predict and emit for every front door (see the module doc)."""

    def __init__(self, state: PlaneState) -> None:
        self._state = state

    def resolve(self, ctx: RequestContext, name: str | None,
                version: str | None) -> ServedModel:
        """The version that answers: the one asked for, else the traffic policy's choice (A/B,
        canary, sticky on ``ctx.headers``), else the model's default version. Fills
        ``ctx.arm`` and ``ctx.shadow``; raises ``ModelNotFound`` (404) or ``NotReady`` (503)."""
        state = self._state
        if version is None:
            assignment = state.traffic.route(name or state.repo.primary or "", ctx.headers)
            if assignment is not None:
                ctx.arm = assignment.arm
                ctx.shadow = assignment.shadow_versions
                version = assignment.version
        return state.repo.get(name, version)

    def get(self, name: str | None, version: str | None = None) -> ServedModel:
        """The version asked for, else the model's default; no traffic policy (metadata,
        bulk). ``name`` None: the primary model."""
        return self._state.repo.get(name, version)

    async def infer_bulk(self, ctx: RequestContext, served: ServedModel,
                         batch: Columns) -> Outputs:
        """Outputs for a large ``batch``: computed on its own in a thread, off the
        micro-batcher (whose batches it would hold up) and without prediction hooks."""
        ctx.model, ctx.version = served.name, served.version
        pool = self._state.repo.pool
        if pool is not None and pool.manages(served):  # loaded on demand: held while it runs
            async with pool.holding(served, timeout_s=self._timeout(ctx)):
                return await asyncio.to_thread(served.loaded.runtime.predict, batch)
        return await asyncio.to_thread(served.loaded.runtime.predict, batch)

    async def infer(self, ctx: RequestContext, served: ServedModel, batch: Columns) -> Outputs:
        """Outputs for a validated ``batch``: the cache, else the model's micro-batcher; then
        the prediction hooks (metrics, drift, prediction log) and the shadow copies."""
        state = self._state
        ctx.model, ctx.version = served.name, served.version
        started = time.perf_counter()
        timeout = self._timeout(ctx)
        state.in_flight += 1
        try:
            if state.cache is None:
                outputs = await state.repo.predict(served, batch, timeout_s=timeout)
            else:
                outputs = await cached_predict(
                    state.cache, served.name, served.version, batch,
                    lambda b: state.repo.predict(served, b, timeout_s=timeout),
                    on_lookup=state.on_cache_lookup, on_fallback=state.on_cache_fallback)
        finally:
            state.in_flight -= 1
        if tracing.ON:  # queue and model spans, from the batcher's timing
            tracing.infer_spans(served, ctx.request_id, started)
        self.emit(PredictionEvent(
            request_id=ctx.request_id, timestamp=time.time(), model=served.name,
            version=served.version, inputs=batch, outputs=outputs,
            latency_s=time.perf_counter() - started, route=ctx.route or ctx.protocol,
            arm=ctx.arm))
        for version in ctx.shadow:
            self._mirror(served, version, batch, outputs, ctx.request_id)
        return outputs

    def _timeout(self, ctx: RequestContext) -> float:
        limit = self._state.settings.request_timeout_s
        if ctx.deadline is None:
            return limit
        left = ctx.deadline - time.monotonic()
        if left <= 0:
            raise RequestTimeout("the request's deadline passed before it was computed")
        return min(limit, left)

    def emit(self, event: PredictionEvent) -> None:
        """Tell every prediction hook; a failing hook is logged, never raised."""
        for hook in self._state.on_prediction:
            try:
                hook(event)
            except Exception:  # monitoring must never fail a prediction
                _log.exception("prediction callback %r failed", hook)

    def _mirror(self, primary: ServedModel, version: str, batch: Columns, answer: Outputs,
                request_id: str) -> None:
        tasks = self._state.shadow_tasks
        if len(tasks) >= MAX_SHADOW_TASKS:
            return
        task = asyncio.get_running_loop().create_task(
            self._shadow(primary, version, batch=batch, answer=answer, request_id=request_id))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _shadow(self, primary: ServedModel, version: str, *, batch: Columns,
                      answer: Outputs, request_id: str) -> None:
        """Mirror a request to a candidate version; record both answers and their
        disagreement."""
        repo = self._state.repo
        started = time.perf_counter()
        try:
            candidate = repo.get(primary.name, version)
            outputs = await repo.predict(candidate, batch)
        except Exception as exc:
            _log.warning("shadow %s:%s failed for request %s: %s", primary.name, version,
                         request_id, exc)
            return
        differ = int((np.asarray(outputs.predictions) != np.asarray(answer.predictions)).sum())
        _log.info("shadow", extra={"fields": {
            "request_id": request_id, "model": primary.name, "primary": primary.version,
            "shadow": version, "rows": batch.n_rows, "disagreements": differ}})
        self.emit(PredictionEvent(
            request_id=request_id, timestamp=time.time(), model=primary.name, version=version,
            inputs=batch, outputs=outputs, latency_s=time.perf_counter() - started,
            route="shadow", arm="shadow"))

    def live(self) -> bool:
        """Whether the process answers (always, while it runs)."""
        return True

    def ready(self) -> bool:
        """Whether every served model is loaded and warmed and the server is not draining."""
        return self._state.repo.ready() and not self._state.shutting_down

    def model_ready(self, name: str, version: str | None) -> bool:
        """Whether ``name`` (``version``, else its default) answers now; raises
        ``ModelNotFound`` when it is not served at all."""
        repo = self._state.repo
        versions = {s.version: s for s in repo.versions(name)}
        if not versions:
            raise ModelNotFound(f"model '{name}' is not served (served: "
                                f"{', '.join(repo.names()) or 'none'})")
        served = versions.get(version or repo.default_version(name) or "")
        if served is None:
            raise ModelNotFound(f"model '{name}' has no version '{version}' "
                                f"(served: {', '.join(versions)})")
        return served.ready and not self._state.shutting_down

    def models(self) -> list[ServedModel]:
        """Every served version of every model (the repository index)."""
        return self._state.repo.all()

    def unloaded(self) -> list[str]:
        """Models this server served once and that are unloaded now."""
        return self._state.repo.known_unloaded()

    async def load(self, name: str, version: str | None = None) -> ServedModel:
        """(Re)load ``name`` from the source it was served from, after it passes its golden
        rows (``GoldenCheckFailed``, 409, if not); as the V2 repository's load."""
        repo = self._state.repo
        pool = self._lazy_pool(name)
        if pool is not None:  # a model loaded on demand: load it now, as a request would
            return await pool.load(name, version)
        source = repo.source(name)
        if source is None or (version is not None and version != source.version):
            which = name if version is None else f"{name}:{version}"
            raise ModelNotFound(f"model '{which}' is not in this server's repository")
        await admit(source, live_of(repo, name), action="repository_load",
                    refusals=self._state.refusals)
        return repo.serve(source)

    async def unload(self, name: str, version: str | None = None) -> list[ServedModel]:
        """Stop serving ``name`` (every version, or ``version``); requests that already hold
        it finish. It stays in the index and can be loaded again."""
        pool = self._lazy_pool(name)
        if pool is not None:  # loaded on demand: unloaded when idle, still registered
            return [await pool.unload(name, version)]
        gone = self._state.repo.unload(name, version)
        for served in gone:
            await retire(served)
        return gone

    def _lazy_pool(self, name: str) -> LazyPool | None:
        """The pool that loads ``name`` on demand, when one does."""
        repo = self._state.repo
        pool = repo.pool
        if pool is None or not isinstance(pool, LazyPool):
            return None
        return pool if any(pool.manages(s) for s in repo.versions(name)) else None
