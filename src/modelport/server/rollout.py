"""Following a registry alias.

An :class:`AliasFollower` polls ``Registry.alias_target`` every ``interval_s``. When the alias
moves it fetches the new version (every sha256 verified), loads it beside the old one, checks
it (its own golden rows as recorded at pack time, and the serving version's golden inputs:
see :mod:`modelport.server.gate`), and only then switches the model's default version — one
assignment on the event loop, so each request sees either the old or the new version. The old
version is unloaded after a grace period, once requests that already picked it have finished.
If anything fails the old version keeps serving, the failure is logged, reported to
``on_event`` and kept in :meth:`status` (a failed check also as a refusal), and that target is
not retried until the alias moves again (or :meth:`check` is called with ``retry=True``).

:class:`~modelport.server.traffic.TrafficRouter` and :func:`~modelport.server.models.retire`
are re-exported here for callers of earlier releases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from fastapi import FastAPI

from modelport.errors import GoldenCheckFailed, ModelportError
from modelport.package import LoadedModel, load_model
from modelport.registry import Registry
from modelport.registry.gate import check_candidate
from modelport.runtimes.devices import Placement
from modelport.server.gate import Refusal, Refusals, live_of
from modelport.server.models import ModelRepository, retire
from modelport.server.traffic import TrafficRouter

if TYPE_CHECKING:  # the state holds the followers: it imports this module
    from modelport.server.state import AppState

__all__ = ["AliasFollower", "AliasSource", "FollowEvent", "FollowStatus", "TrafficRouter",
           "follow_extension", "load_ref", "retire"]

_log = logging.getLogger("modelport")
Loader = Callable[[Path], LoadedModel]


class AliasSource(Protocol):
    """What an :class:`AliasFollower` polls and fetches from: modelport's
    :class:`~modelport.registry.Registry`, or an MLflow tracking server
    (:class:`~modelport.registry.mlflow_source.MlflowRegistry`)."""

    def alias_target(self, name: str, alias: str) -> str | None:
        """The version ``name@alias`` points at now (None: unset)."""
        ...

    def fetch(self, ref: str) -> Path:
        """A directory holding version ``name:version`` (``ref``), ready to load."""
        ...


@dataclass(frozen=True)
class FollowEvent:
    """One attempt to switch to the alias's new target."""

    name: str
    alias: str
    from_version: str | None
    to_version: str
    outcome: Literal["switched", "failed"]
    seconds: float
    """From noticing the move to serving the new version (or giving up)."""
    error: str | None = None


@dataclass(frozen=True)
class FollowStatus:
    """What a follower knows now (served by the admin API)."""

    name: str
    alias: str
    serving: str | None
    target: str | None
    last_checked: float | None
    last_error: str | None
    failed_target: str | None
    switches: int
    failures: int


def load_ref(registry: Registry, ref: str, *, runtime: Literal["auto", "native", "onnx"] =
             "auto", placement: Placement | None = None,
             trusted: Sequence[str] = ()) -> LoadedModel:
    """Fetch ``ref`` (``heart@production``, ``heart:1.2.0``) verified, and load it (on the
    device ``placement`` allows; ``trusted``: types of a ``.skops`` file trusted beyond
    skops' own)."""
    record = registry.resolve(ref)
    path = registry.fetch(record.ref)
    return load_model(path, runtime=runtime, name=record.name, placement=placement,
                      trusted=trusted)


class AliasFollower:
    """Keeps ``name`` served at the version ``name@alias`` points to (see the module doc)."""

    def __init__(self, registry: AliasSource, repo: ModelRepository, name: str, alias: str, *,
                 interval_s: float = 2.0, grace_s: float = 10.0, keep_previous: bool = False,
                 loader: Loader | None = None,
                 on_event: Callable[[FollowEvent], None] | None = None,
                 refusals: Refusals | None = None) -> None:
        self.registry, self.repo, self.name, self.alias = registry, repo, name, alias
        self.refusals = refusals or Refusals()
        self.interval_s, self.grace_s, self.keep_previous = interval_s, grace_s, keep_previous
        self._load: Loader = loader or (lambda path: load_model(path, name=name))
        self._on_event = on_event
        self._lock = asyncio.Lock()
        self._status = FollowStatus(name, alias, repo.default_version(name), None, None, None,
                                    None, 0, 0)
        self._retiring: set[asyncio.Task[None]] = set()

    def status(self) -> FollowStatus:
        """A snapshot of what the follower knows."""
        return replace(self._status, serving=self.repo.default_version(self.name))

    async def run(self) -> None:
        """Poll until cancelled; a failing poll is retried at the next interval. An outage is
        logged when polls start failing (with the traceback) and when they work again, not at
        every poll; its cause is in :meth:`status` meanwhile."""
        failing = False
        while True:
            try:
                await self.check()
            except Exception as exc:  # the follower must outlive a database outage
                cause = f"registry poll failed: {type(exc).__name__}: {exc}"
                self._status = replace(self._status, last_error=cause[:500],
                                       last_checked=time.time())
                if not failing:
                    _log.exception("following %s@%s: poll failed; still serving %s, retrying "
                                   "every %gs", self.name, self.alias,
                                   self.repo.default_version(self.name), self.interval_s)
                failing = True
            else:
                if failing:
                    _log.warning("following %s@%s: the registry answers again",
                                 self.name, self.alias)
                    if self._status.last_error and self._status.last_error.startswith(
                            "registry poll failed"):
                        self._status = replace(self._status, last_error=None)
                failing = False
            await asyncio.sleep(self.interval_s)

    async def check(self, *, retry: bool = False) -> FollowEvent | None:
        """Poll once; switch when the alias points somewhere new. ``retry`` tries a target
        that failed before again."""
        async with self._lock:
            target = await asyncio.to_thread(self.registry.alias_target, self.name, self.alias)
            self._status = replace(self._status, target=target, last_checked=time.time())
            serving = self.repo.default_version(self.name)
            skip = target == self._status.failed_target and not retry
            if target is None or target == serving or skip:
                return None
            event = await self._switch(serving, target)
        if self._on_event is not None:
            self._on_event(event)
        return event

    async def aclose(self) -> None:
        """Stop waiting to retire old versions (on shutdown every batcher drains anyway)."""
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)

    async def _switch(self, serving: str | None, target: str) -> FollowEvent:
        started = time.perf_counter()
        try:
            if target not in {s.version for s in self.repo.versions(self.name)}:
                loaded = await asyncio.to_thread(self._prepare, target,
                                                 live_of(self.repo, self.name))
                self.repo.serve(loaded, default=False)
            self.repo.set_default(self.name, target)
        except Exception as exc:  # any failure of the new version leaves the old one serving
            return self._failed(serving, target, exc, time.perf_counter() - started)
        if serving is not None and serving != target and not self.keep_previous:
            task = asyncio.create_task(self._retire(serving))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        seconds = time.perf_counter() - started
        s = self._status
        self._status = replace(s, failed_target=None, last_error=None, switches=s.switches + 1)
        _log.info("%s@%s moved: now serving %s (was %s, switched in %.2fs)", self.name,
                  self.alias, target, serving, seconds)
        return FollowEvent(self.name, self.alias, serving, target, "switched", seconds)

    def _prepare(self, target: str, live: LoadedModel | None) -> LoadedModel:
        """Fetch (sha256-verified), load and check ``target`` against its golden rows and
        ``live``'s (the version serving now), off the event loop."""
        path = self.registry.fetch(f"{self.name}:{target}")
        loaded = self._load(path)
        check_candidate(loaded, live)
        return loaded

    def _failed(self, serving: str | None, target: str, exc: BaseException,
                seconds: float) -> FollowEvent:
        message = getattr(exc, "message", None) or str(exc)
        if isinstance(exc, GoldenCheckFailed):
            self.refusals.record(Refusal(self.name, target, "follow", message, time.time()))
        s = self._status
        self._status = replace(s, failed_target=target, last_error=message,
                               failures=s.failures + 1)
        _log.error("%s@%s moved to %s but it cannot be served; still serving %s: %s",
                   self.name, self.alias, target, serving, message)
        return FollowEvent(self.name, self.alias, serving, target, "failed", seconds, message)

    async def _retire(self, version: str) -> None:
        await asyncio.sleep(self.grace_s)
        if self.repo.default_version(self.name) == version:
            return  # moved back meanwhile
        try:
            gone = self.repo.unload(self.name, version)
        except ModelportError:  # unloaded meanwhile (admin API)
            return
        for served in gone:
            await retire(served)


def follow_extension(registry: AliasSource, name: str, alias: str,
                     **options: Any) -> Callable[[FastAPI, AppState], AliasFollower]:
    """An ``extensions=`` hook for ``create_app`` that runs an :class:`AliasFollower` for
    the app's lifetime (started after the app's own startup, stopped before its shutdown)."""
    def extend(app: FastAPI, state: AppState) -> AliasFollower:
        follower = AliasFollower(registry, state.repo, name, alias, refusals=state.refusals,
                                 **options)
        state.followers[name] = follower
        inner = app.router.lifespan_context

        @contextlib.asynccontextmanager
        async def lifespan(a: Any) -> AsyncIterator[Any]:
            async with inner(a) as value:
                task = asyncio.create_task(follower.run())
                try:
                    yield value
                finally:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    await follower.aclose()

        app.router.lifespan_context = lifespan
        return follower

    return extend
