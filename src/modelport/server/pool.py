"""Many models per process: each loads on its first request, and past a budget the least
recently used idle one is unloaded.

With ``--max-models N`` and/or ``--max-memory SIZE`` every model named at start is
*registered*, not loaded: it is served (listed, routed, validated against the signature its
package recorded), V2 ``ready`` says false, and :class:`ModelPool` loads it when a request
needs it. Without a budget nothing here runs: every model loads at start and stays, as always.

Rules:

- **One load per model at a time.** Concurrent first requests wait on the same load; a load
  that fails fails each of them, and the next request tries again.
- **Loads run one after another**, on a thread (the event loop keeps answering loaded models),
  so that the memory a load adds is that model's and a burst of first requests cannot load many
  models past the budget at once.
- **Room is made before and after a load.** Before: for the model's last estimate (its
  artifact's size the first time); after: for what the load measured. The least recently used
  model goes first.
- **A model with requests in flight is never unloaded** (from the moment a request asks for it
  until its answer is computed, the wait for its load included). When every loaded model is
  busy the budget is exceeded for a while, logged once, and restored at the next load.
- **Each model keeps its own micro-batcher** while loaded: a load gives it a new one bound to
  the loaded runtime; an unload swaps in an idle one and closes the old one (empty by then).

Every load and unload is a log line (model, version, seconds, estimated bytes, models and bytes
loaded) and a metric (``modelport_model_loads_total``, ``modelport_model_evictions_total``,
``modelport_models_loaded``, ``modelport_models_loaded_bytes``), through :attr:`ModelPool.hooks`.

**The memory estimate of a model** is ``max(artifact bytes, largest RSS growth measured around
one of its loads)``. The process's resident set is what a budget protects, so a load is
measured there: the RSS before and after loading and warming the model, which counts what the
library allocates besides the file's contents (an ONNX Runtime session's buffers, a torch
module's copies, a DataFrame-fitted pipeline's caches). It cannot be trusted alone, and the
floor covers its two blind spots: the first load of a flavor also imports its library (tens of
MiB that are not the model's: that measurement is not kept), and a load that reuses memory an
unloaded model freed grows the RSS by little or nothing. An in-memory walk of the object graph
(``sys.getsizeof`` / tracemalloc) was not chosen: it misses native buffers and slows every
load. Where the RSS cannot be read (no ``/proc``), the artifact size is the estimate.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from modelport.batching import MicroBatcher
from modelport.config import Settings
from modelport.errors import Conflict, ModelNotFound, NotReady, RequestTimeout
from modelport.package import LoadedModel, Package
from modelport.server.models import ModelRepository, ServedModel, warm
from modelport.signature import Signature
from modelport.types import Columns, Outputs

__all__ = ["Budget", "Deferred", "LazyModel", "ModelPool", "PoolEvent", "artifact_bytes",
           "rss_bytes"]

_log = logging.getLogger("modelport")


@dataclass(frozen=True)
class Budget:
    """How many models, and how many (estimated) bytes of them, may be loaded at once."""

    max_models: int | None = None
    max_bytes: int | None = None

    @classmethod
    def of(cls, settings: Settings) -> Budget | None:
        """The budget ``settings`` set, or None (load everything at start)."""
        if settings.max_models is None and settings.max_memory is None:
            return None
        return cls(settings.max_models, settings.max_memory)

    def over(self, models: int, nbytes: int) -> str | None:
        """Which limit ``models`` loaded models of ``nbytes`` exceed (``max_models`` first)."""
        if self.max_models is not None and models > self.max_models:
            return "max_models"
        if self.max_bytes is not None and nbytes > self.max_bytes and models > 1:
            return "max_memory"
        return None

    def describe(self) -> str:
        """The budget in words, for the log."""
        parts = []
        if self.max_models is not None:
            parts.append(f"{self.max_models} models")
        if self.max_bytes is not None:
            parts.append(f"{self.max_bytes / 2**20:.0f} MiB")
        return " and ".join(parts)


@dataclass(frozen=True)
class Deferred:
    """The runtime of a registered model that is not loaded: its signature, never called (the
    pool loads the model before a request reaches its batcher)."""

    flavor: str
    signature: Signature

    def predict(self, batch: Columns) -> Outputs:
        """Never answers: the model is not loaded."""
        raise NotReady("the model is not loaded; it loads on its next request")


@dataclass(frozen=True)
class LazyModel:
    """A model named at start and registered without being loaded: what it takes, and how to
    load it (a call that returns a fresh :class:`~modelport.package.LoadedModel`)."""

    name: str
    version: str
    flavor: str
    signature: Signature
    load: Callable[[], LoadedModel]
    artifact_bytes: int
    package: Package | None = None
    source: str = ""

    def stub(self) -> LoadedModel:
        """The not-loaded stand-in the repository serves."""
        return LoadedModel(self.name, self.version, Deferred(self.flavor, self.signature),
                           self.package, self.source)


@dataclass(frozen=True)
class PoolEvent:
    """A load or an unload, for metrics and alerts."""

    kind: Literal["load", "evict"]
    model: str
    version: str
    seconds: float
    """Load: how long loading and warming took. Evict: how long the model had been idle."""
    bytes: int
    """The model's memory estimate (see the module doc)."""
    loaded_models: int
    loaded_bytes: int
    reason: str = ""
    """Evict: ``max_models``, ``max_memory`` or ``unload`` (an admin's call)."""


@dataclass
class _Slot:
    lazy: LazyModel
    served: ServedModel
    in_flight: int = 0
    last_used: float = 0.0
    resident: bool = False
    loading: asyncio.Task[None] | None = None
    measured: int = 0

    @property
    def estimate(self) -> int:
        return max(self.lazy.artifact_bytes, self.measured)


@dataclass
class ModelPool:
    """Loads registered models on demand within a :class:`Budget` (see the module doc)."""

    repo: ModelRepository
    budget: Budget
    hooks: list[Callable[[PoolEvent], None]] = field(default_factory=list)
    _slots: dict[tuple[str, str], _Slot] = field(default_factory=dict)
    _load_lock: asyncio.Lock | None = None
    _seen_flavors: set[str] = field(default_factory=set)
    _closing: set[asyncio.Task[None]] = field(default_factory=set)
    _warned_full: bool = False

    def register(self, lazy: LazyModel) -> ServedModel:
        """Serve ``lazy`` without loading it."""
        served = self.repo.register(lazy.stub())
        self._slots[(lazy.name, lazy.version)] = _Slot(lazy, served)
        return served

    def manages(self, served: ServedModel) -> bool:
        """Whether ``served`` is one of the pool's models."""
        slot = self._slots.get((served.name, served.version))
        return slot is not None and slot.served is served

    @property
    def loaded(self) -> list[str]:
        """``name:version`` of the loaded models, least recently used first."""
        slots = sorted((s for s in self._slots.values() if s.resident),
                       key=lambda s: s.last_used)
        return [f"{s.lazy.name}:{s.lazy.version}" for s in slots]

    def usage(self) -> tuple[int, int]:
        """Loaded models and their estimated bytes."""
        resident = [s for s in self._slots.values() if s.resident]
        return len(resident), sum(s.estimate for s in resident)

    @contextlib.asynccontextmanager
    async def holding(self, served: ServedModel, *,
                      timeout_s: float | None) -> AsyncIterator[None]:
        """``served`` loaded, and not unloaded until the block ends."""
        slot = self._slot(served)
        slot.in_flight += 1
        try:
            await self._ensure(slot, timeout_s)
            slot.last_used = time.monotonic()
            yield
        finally:
            slot.in_flight -= 1
            slot.last_used = time.monotonic()

    async def load(self, name: str, version: str | None = None) -> ServedModel:
        """Load ``name`` now (the V2 repository's load), as its first request would."""
        served = self._find(name, version)
        async with self.holding(served, timeout_s=None):
            return served

    async def unload(self, name: str, version: str | None = None) -> ServedModel:
        """Unload ``name`` now (it loads again on its next request); 409 while requests for
        it are in flight."""
        served = self._find(name, version)
        slot = self._slot(served)
        if slot.in_flight or slot.loading is not None:
            raise Conflict(f"model '{name}' has requests in flight; it is unloaded only when "
                           "idle (retry, or let the budget unload it)")
        if slot.resident:
            self._evict(slot, "unload")
        return served

    async def aclose(self) -> None:
        """Wait for the batchers of unloaded models to close."""
        await asyncio.gather(*self._closing, return_exceptions=True)

    # -- internals --------------------------------------------------------------------------

    def _find(self, name: str, version: str | None) -> ServedModel:
        served = self.repo.get(name, version)
        if not self.manages(served):
            raise ModelNotFound(f"model '{name}' is not loaded on demand by this server")
        return served

    def _slot(self, served: ServedModel) -> _Slot:
        return self._slots[(served.name, served.version)]

    async def _ensure(self, slot: _Slot, timeout_s: float | None) -> None:
        if slot.resident:
            return
        if slot.loading is None:
            task = asyncio.get_running_loop().create_task(self._load(slot))
            slot.loading = task
            task.add_done_callback(lambda t: _loaded(slot, t))
        try:
            await asyncio.wait_for(asyncio.shield(slot.loading), timeout_s)
        except asyncio.TimeoutError:
            raise RequestTimeout(f"model '{slot.lazy.name}' did not load within "
                                 f"{timeout_s:g} s; it goes on loading") from None

    async def _load(self, slot: _Slot) -> None:
        if self._load_lock is None:
            self._load_lock = asyncio.Lock()
        async with self._load_lock:
            self._make_room(extra=slot)
            started = time.perf_counter()
            loaded, grew = await asyncio.to_thread(self._load_measured, slot.lazy)
            seconds = time.perf_counter() - started
            flavor = loaded.runtime.flavor
            if flavor in self._seen_flavors and grew is not None:
                slot.measured = max(slot.measured, grew)  # the first also imported its library
            self._seen_flavors.add(flavor)
            self._close_later(self.repo.install(slot.served, loaded, warm_s=seconds))
            slot.resident, slot.last_used = True, time.monotonic()
            self._make_room(keep=slot)
        models, nbytes = self.usage()
        _log.info("loaded %s:%s on demand in %.3f s (~%.1f MiB; %d models, ~%.1f MiB loaded)",
                  slot.lazy.name, slot.lazy.version, seconds, slot.estimate / 2**20, models,
                  nbytes / 2**20, extra={"fields": {
                      "event": "model_load", "model": slot.lazy.name,
                      "version": slot.lazy.version, "seconds": round(seconds, 4),
                      "bytes": slot.estimate, "loaded_models": models,
                      "loaded_bytes": nbytes}})
        self._tell(PoolEvent("load", slot.lazy.name, slot.lazy.version, seconds,
                             slot.estimate, models, nbytes))

    @staticmethod
    def _load_measured(lazy: LazyModel) -> tuple[LoadedModel, int | None]:
        """Load and warm on this thread; the RSS growth it caused (None: unreadable)."""
        before = rss_bytes()
        loaded = lazy.load()
        warm(loaded)
        after = rss_bytes()
        return loaded, None if before is None or after is None else after - before

    def _make_room(self, *, extra: _Slot | None = None, keep: _Slot | None = None) -> None:
        """Unload least recently used idle models until the budget holds (counting ``extra``,
        about to load); ``keep`` (just loaded) stays."""
        while True:
            models, nbytes = self.usage()
            if extra is not None:
                models, nbytes = models + 1, nbytes + extra.estimate
            reason = self.budget.over(models, nbytes)
            if reason is None:
                self._warned_full = False
                return
            idle = [s for s in self._slots.values() if s.resident and not s.in_flight
                    and s is not keep and s is not extra]
            if not idle:
                if not self._warned_full:
                    _log.warning("over the model budget (%s: %d models, ~%.1f MiB): every "
                                 "loaded model has requests in flight; unloading waits",
                                 self.budget.describe(), models, nbytes / 2**20)
                    self._warned_full = True
                return
            self._evict(min(idle, key=lambda s: s.last_used), reason)

    def _evict(self, slot: _Slot, reason: str) -> None:
        idle_s = time.monotonic() - slot.last_used
        slot.resident = False
        self._close_later(self.repo.release(slot.served, slot.lazy.stub()), trim=True)
        models, nbytes = self.usage()
        _log.info("unloaded %s:%s (%s; idle %.1f s, ~%.1f MiB; %d models, ~%.1f MiB loaded)",
                  slot.lazy.name, slot.lazy.version, reason, idle_s, slot.estimate / 2**20,
                  models, nbytes / 2**20, extra={"fields": {
                      "event": "model_evict", "model": slot.lazy.name,
                      "version": slot.lazy.version, "reason": reason, "bytes": slot.estimate,
                      "loaded_models": models, "loaded_bytes": nbytes}})
        self._tell(PoolEvent("evict", slot.lazy.name, slot.lazy.version, idle_s,
                             slot.estimate, models, nbytes, reason))

    def _close_later(self, batcher: MicroBatcher, *, trim: bool = False) -> None:
        """Close a replaced batcher off the request's way; after an unload (``trim``), hand
        the freed memory back to the system."""
        async def close() -> None:
            await batcher.aclose()
            if trim:
                await asyncio.to_thread(release_freed_memory)

        task = asyncio.get_running_loop().create_task(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _tell(self, event: PoolEvent) -> None:
        for hook in self.hooks:
            try:
                hook(event)
            except Exception:  # monitoring must never fail a load
                _log.exception("pool hook %r failed", hook)


def _loaded(slot: _Slot, task: asyncio.Task[None]) -> None:
    """A load ended: the next request that finds the model unloaded starts a new one (a
    failure was raised to every request waiting; none left is no reason for a warning)."""
    slot.loading = None
    if not task.cancelled():
        task.exception()


def rss_bytes() -> int | None:
    """This process's resident set size (Linux ``/proc``), or None where it cannot be read."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def release_freed_memory() -> None:
    """Return the heap memory freed by an unloaded model to the system (glibc's
    ``malloc_trim``; elsewhere nothing). Without it the allocator keeps the freed pages for
    later and the resident set -- what a memory budget is about -- does not shrink: a model's
    arrays above the allocator's mmap threshold (which glibc raises as large blocks are freed)
    come from the heap, and several threads' arenas keep their free pages."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _libc() -> Any:
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):  # not glibc
        return None
    return libc


def artifact_bytes(path: Path) -> int:
    """Size of a model file, or of every file in a directory (0 if it cannot be read)."""
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0
