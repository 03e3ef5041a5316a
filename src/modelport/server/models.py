"""The models a server holds: each one behind its own micro-batcher, looked up by name/version.

Swapping a version is one dict assignment on the event loop, so a request either sees the old
version or the new one, never a half-installed model; requests already queued on the old
batcher finish there before it is closed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from modelport.batching import BatchStats, MicroBatcher
from modelport.config import Settings
from modelport.errors import ModelNotFound, NotReady
from modelport.package import LoadedModel
from modelport.signature import Signature
from modelport.types import Columns, Outputs

__all__ = ["ModelRepository", "ServedModel"]

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
        """One prediction on the signature's example record (loads lazy state, JIT, caches)."""
        sig = self.signature
        self.loaded.runtime.predict(sig.from_records([sig.example_record()], unseen="pass"))
        self.ready = True


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

    def serve(self, loaded: LoadedModel, *, default: bool = True) -> ServedModel:
        """Add (and warm) a loaded model; make it the name's default version unless told not."""
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
        if not served.ready:
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
        """Whether every served model is loaded and warmed."""
        return bool(self._versions) and all(s.ready for s in self.all())

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

    async def predict(self, served: ServedModel, batch: Columns) -> Outputs:
        """Outputs for ``batch`` through the model's batcher, bounded by the request timeout."""
        return await served.batcher.submit(batch, timeout_s=self._settings.request_timeout_s)
