"""The models a server holds: each one behind its own micro-batcher, looked up by name/version.

Swapping a version is one dict assignment on the event loop, so a request either sees the old
version or the new one, never a half-installed model; requests already queued on the old
batcher finish there before it is closed.

A served model's runtime is wrapped in :func:`~modelport.runtimes.checked` when it is served:
every way it is called (its batcher, the bulk route, a retired version's late requests, the
warm-up) refuses an answer with NaN or infinity in it, so none reaches a client as a 200, and
turns what the model raises into a ``PredictionError`` (a 500 with the request id).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from typing import Protocol

from modelport.batching import BatchStats, MicroBatcher
from modelport.config import Settings
from modelport.errors import (
    ModelLoadError,
    ModelNotFound,
    ModelportError,
    NotReady,
    PredictionError,
    RequestTimeout,
)
from modelport.package import LoadedModel
from modelport.runtimes import CheckedRuntime, checked
from modelport.signature import Signature
from modelport.types import Columns, Outputs

__all__ = ["ModelRepository", "Residency", "ServedModel", "retire", "warm"]

_log = logging.getLogger("modelport")
BatchHook = Callable[["ServedModel", BatchStats], None]
ChangeHook = Callable[["ServedModel", bool], None]
"""Told when a version starts (True, with its load time in ``loaded_at``) or stops serving."""


@dataclass
class ServedModel:
    """One loaded version of a model, with its batcher and readiness."""

    loaded: LoadedModel
    batcher: MicroBatcher
    ready: bool = False
    loaded_at: float = field(default_factory=time.time)
    warm_s: float = 0.0

    def __post_init__(self) -> None:
        self.loaded = _answers_checked(self.loaded)

    @property
    def name(self) -> str:
        """Model name."""
        return self.loaded.name

    @property
    def version(self) -> str:
        """Model version."""
        return self.loaded.version

    @property
    def signature(self) -> Signature:
        """What the model takes and returns."""
        return self.loaded.signature

    def warm_up(self) -> None:
        """One prediction on the signature's example record (loads lazy state, JIT, caches); a
        model that raises or answers NaN/inf on it does not become ready."""
        warm(self.loaded)
        self.ready = True


def warm(loaded: LoadedModel) -> None:
    """:meth:`ServedModel.warm_up` for a model not served yet (a lazy load warms it on a
    thread before it is installed)."""
    sig = loaded.signature
    record = sig.example_record()
    try:
        loaded.runtime.predict(sig.from_records([record], unseen="pass"))
    except Exception as exc:
        raise ModelLoadError(f"{loaded.name}:{loaded.version} is not served: it fails on its "
                             f"example row {record}: {_in_one_line(exc.__cause__ or exc)}"
                             ) from exc


class Residency(Protocol):
    """Who loads and unloads models on demand (:class:`~modelport.server.pool.ModelPool`):
    the repository asks it about the models registered with :meth:`ModelRepository.register`."""

    def manages(self, served: ServedModel) -> bool:
        """Whether ``served`` loads on demand."""
        ...

    def holding(self, served: ServedModel, *,
                timeout_s: float | None) -> AbstractAsyncContextManager[None]:
        """``served`` loaded and kept loaded while the block runs (one request in flight)."""
        ...


def _in_one_line(exc: BaseException) -> str:
    """What an error says, on one line (scikit-learn's messages run on for a paragraph)."""
    if isinstance(exc, ModelportError):
        return exc.message
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _answers_checked(loaded: LoadedModel) -> LoadedModel:
    """``loaded`` with its runtime behind :func:`~modelport.runtimes.checked` (NaN/inf
    answers refused); itself when it already is."""
    if isinstance(loaded.runtime, CheckedRuntime):
        return loaded
    return replace(loaded, runtime=checked(loaded.runtime))


class ModelRepository:
    """Served models by name, each with one default version and any number of others."""

    def __init__(self, settings: Settings, *, on_batch: BatchHook | None = None) -> None:
        self._settings = settings
        self._on_batch = on_batch
        self._versions: dict[str, dict[str, ServedModel]] = {}
        self._default: dict[str, str] = {}
        self._sources: dict[str, LoadedModel] = {}
        self.primary: str | None = None
        self.on_change: list[ChangeHook] = []
        self.pool: Residency | None = None
        """Loads and unloads the models added with :meth:`register` (a memory budget)."""

    def serve(self, loaded: LoadedModel, *, default: bool = True) -> ServedModel:
        """Add (and warm) a loaded model; make it the name's default version unless told not."""
        loaded = _answers_checked(loaded)
        holder: list[ServedModel] = []
        served = ServedModel(loaded, self._batcher(loaded, holder))
        holder.append(served)
        started = time.perf_counter()
        served.warm_up()
        served.warm_s = time.perf_counter() - started
        versions = self._versions.setdefault(loaded.name, {})
        old = versions.get(loaded.version)
        versions[loaded.version] = served
        if default or loaded.name not in self._default:
            self._default[loaded.name] = loaded.version
        self._sources[loaded.name] = loaded
        if self.primary is None:
            self.primary = loaded.name
        if old is not None:
            _log.info("replaced %s:%s", loaded.name, loaded.version)
        self._notify(served, True)
        return served

    def register(self, stub: LoadedModel) -> ServedModel:
        """Add a model that is not loaded (``stub`` has its signature and a runtime that is
        never called, :class:`~modelport.server.pool.Deferred`): it is served, not ready, and
        :attr:`pool` loads it on its first request. The name's default version."""
        served = ServedModel(stub, MicroBatcher(stub.runtime.predict))
        self._versions.setdefault(stub.name, {})[stub.version] = served
        self._default[stub.name] = stub.version
        self._sources[stub.name] = stub
        if self.primary is None:
            self.primary = stub.name
        self._notify(served, True)
        return served

    def install(self, served: ServedModel, loaded: LoadedModel, *, warm_s: float) -> MicroBatcher:
        """Put a freshly loaded (and warmed) model behind a registered one, with a batcher of
        its own; returns the batcher it replaced (idle: close it)."""
        loaded = _answers_checked(loaded)
        holder = [served]
        old, served.batcher = served.batcher, self._batcher(loaded, holder)
        served.loaded, served.warm_s, served.loaded_at = loaded, warm_s, time.time()
        served.ready = True
        return old

    def release(self, served: ServedModel, stub: LoadedModel) -> MicroBatcher:
        """Drop a registered model's loaded copy (it loads again on demand); returns its
        batcher, to close."""
        old, served.batcher = served.batcher, MicroBatcher(stub.runtime.predict)
        served.loaded, served.ready = _answers_checked(stub), False
        return old

    def _notify(self, served: ServedModel, serving: bool) -> None:
        for hook in self.on_change:
            try:
                hook(served, serving)
            except Exception:
                _log.exception("model change hook %r failed", hook)

    def unload(self, name: str, version: str | None = None) -> list[ServedModel]:
        """Stop serving a model (all versions when ``version`` is None); returns what left."""
        versions = self._versions.get(name)
        if not versions:
            raise ModelNotFound(f"model '{name}' is not loaded")
        gone = list(versions.values()) if version is None else [self.get(name, version)]
        for served in gone:
            versions.pop(served.version, None)
            self._notify(served, False)
        if not versions:
            self._versions.pop(name, None)
            self._default.pop(name, None)
        elif self._default.get(name) not in versions:
            self._default[name] = next(iter(versions))
        return gone

    def set_default(self, name: str, version: str) -> None:
        """Route the unversioned routes of ``name`` to ``version``."""
        self.get(name, version)
        self._default[name] = version

    def get(self, name: str | None = None, version: str | None = None) -> ServedModel:
        """The served model; the primary model when ``name`` is None, the default version when
        ``version`` is None."""
        name = name or self.primary
        versions = self._versions.get(name or "")
        if name is None or not versions:
            known = ", ".join(sorted(self._versions)) or "none"
            raise ModelNotFound(f"model '{name}' is not served (served: {known})")
        version = version or self._default[name]
        served = versions.get(version)
        if served is None:
            raise ModelNotFound(f"model '{name}' has no version '{version}' "
                                f"(served: {', '.join(versions)})")
        if not served.ready and not (self.pool is not None and self.pool.manages(served)):
            raise NotReady(f"model '{name}' version '{version}' is still loading")
        return served

    def names(self) -> list[str]:
        """Names of the served models."""
        return sorted(self._versions)

    def versions(self, name: str) -> list[ServedModel]:
        """Every served version of ``name``."""
        return list(self._versions.get(name, {}).values())

    def all(self) -> list[ServedModel]:
        """Every served version of every model."""
        return [s for v in self._versions.values() for s in v.values()]

    def known_unloaded(self) -> list[str]:
        """Models this server loaded once and that are unloaded now."""
        return sorted(n for n in self._sources if n not in self._versions)

    def default_version(self, name: str) -> str | None:
        """The version the unversioned routes of ``name`` use."""
        return self._default.get(name)

    def source(self, name: str) -> LoadedModel | None:
        """The last model loaded under ``name`` (used to reload after an unload)."""
        return self._sources.get(name)

    def ready(self) -> bool:
        """Whether every served model is loaded and warmed (one that loads on demand counts:
        it answers its first request)."""
        pool = self.pool
        return bool(self._versions) and all(
            s.ready or (pool is not None and pool.manages(s)) for s in self.all())

    async def aclose(self) -> None:
        """Drain and stop every batcher."""
        for served in self.all():
            await served.batcher.aclose()

    def _batcher(self, loaded: LoadedModel, served_ref: list[ServedModel]) -> MicroBatcher:
        s = self._settings

        def on_batch(stats: BatchStats) -> None:
            if self._on_batch is not None and served_ref:
                self._on_batch(served_ref[0], stats)

        batcher = MicroBatcher(loaded.runtime.predict, max_batch_size=s.max_batch_size,
                               max_wait_s=s.max_batch_wait_ms / 1000, max_queue=s.max_queue,
                               on_batch=on_batch)
        return batcher

    async def predict(self, served: ServedModel, batch: Columns, *,
                      timeout_s: float | None = None) -> Outputs:
        """Outputs for ``batch`` through the model's batcher, bounded by ``timeout_s`` (by
        default the request timeout)."""
        limit = self._settings.request_timeout_s if timeout_s is None else timeout_s
        pool = self.pool
        if pool is not None and pool.manages(served):
            async with pool.holding(served, timeout_s=limit):
                return await served.batcher.submit(batch, timeout_s=limit)
        return await served.batcher.submit(batch, timeout_s=limit)


async def retire(served: ServedModel) -> None:
    """Stop the batcher of a version that was just unloaded without failing any request that
    picked the version before: the queue and the batch being computed finish on it, and a
    request that still holds the version afterwards is answered by its model directly."""
    old = served.batcher
    served.batcher = _Retired(served.loaded.runtime.predict)  # before the close: no gap
    await old.aclose()


class _Retired(MicroBatcher):
    """Stands in for a retired version's batcher: each late request runs on its own in a
    thread (no worker task, no thread of its own left behind once the last one is done)."""

    def __init__(self, predict: Callable[[Columns], Outputs]) -> None:
        super().__init__(predict)
        self._direct = predict

    async def submit(self, batch: Columns, *, timeout_s: float | None = None) -> Outputs:
        """Outputs for ``batch``, computed alone."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._direct, batch), timeout_s)
        except asyncio.TimeoutError:
            raise RequestTimeout(f"no answer within {timeout_s:g} s") from None
        except ModelportError:
            raise
        except Exception as exc:
            raise PredictionError(f"the model failed on this input ({type(exc).__name__})"
                                  ) from exc

    async def aclose(self) -> None:
        """Nothing to stop."""
