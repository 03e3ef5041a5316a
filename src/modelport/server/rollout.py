"""Following a registry alias, and routing by traffic policy.

An :class:`AliasFollower` polls ``Registry.alias_target`` every ``interval_s``. When the alias
moves it fetches the new version (every sha256 verified), loads it beside the old one, runs
the package's golden requests and compares the outputs with those recorded at pack time, and
only then switches the model's default version — one assignment on the event loop, so each
request sees either the old or the new version. The old version is unloaded after a grace
period, once requests that already picked it have finished. If anything fails the old version
keeps serving, the failure is logged, reported to ``on_event`` and kept in :meth:`status`, and
that target is not retried until the alias moves again (or :meth:`check` is called with
``retry=True``).

A :class:`TrafficRouter` holds one :class:`~modelport.traffic.TrafficPolicy` per model and
picks the version for each unversioned request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI

from modelport.batching import MicroBatcher
from modelport.errors import ModelLoadError, ModelportError, PredictionError, RequestTimeout
from modelport.package import LoadedModel, load_model
from modelport.registry import Registry
from modelport.server.models import ModelRepository, ServedModel
from modelport.server.state import AppState
from modelport.traffic import Assignment, TrafficPolicy
from modelport.types import Columns, Outputs

__all__ = ["AliasFollower", "FollowEvent", "FollowStatus", "TrafficRouter", "check_golden",
           "follow_extension", "load_ref", "retire"]

_log = logging.getLogger("modelport")
Loader = Callable[[Path], LoadedModel]


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
             "auto") -> LoadedModel:
    """Fetch ``ref`` (``heart@production``, ``heart:1.2.0``) verified, and load it."""
    record = registry.resolve(ref)
    path = registry.fetch(record.ref)
    return load_model(path, runtime=runtime, name=record.name)


def check_golden(loaded: LoadedModel, *, atol: float = 1e-6) -> int:
    """Predict the package's golden requests and compare with the recorded outputs; returns
    how many rows were checked (0 when the package has none: then one warm-up prediction)."""
    golden = loaded.package.golden() if loaded.package is not None else None
    sig = loaded.signature
    if not golden or not golden.get("inputs"):
        loaded.runtime.predict(sig.from_records([sig.example_record()], unseen="pass"))
        return 0
    outputs = loaded.runtime.predict(sig.from_records(golden["inputs"], unseen="pass"))
    got = np.asarray(outputs.predictions).tolist()
    recorded = golden["predictions"]
    differ = [i for i in range(max(len(got), len(recorded)))
              if i >= len(got) or i >= len(recorded) or got[i] != recorded[i]]
    if differ:
        raise ModelLoadError(f"golden check failed for {loaded.name}:{loaded.version}: "
                             f"{len(differ)} of {len(recorded)} golden rows (first: row "
                             f"{differ[0]}) predict differently from what was recorded at pack "
                             "time")
    expected = golden.get("probabilities")
    if expected is not None and outputs.probabilities is not None and not np.allclose(
            outputs.probabilities, np.asarray(expected), atol=atol, rtol=0):
        raise ModelLoadError(f"golden check failed for {loaded.name}:{loaded.version}: "
                             f"probabilities differ from the recorded ones by more than {atol}")
    return len(got)


class AliasFollower:
    """Keeps ``name`` served at the version ``name@alias`` points to (see the module doc)."""

    def __init__(self, registry: Registry, repo: ModelRepository, name: str, alias: str, *,
                 interval_s: float = 2.0, grace_s: float = 10.0, keep_previous: bool = False,
                 loader: Loader | None = None,
                 on_event: Callable[[FollowEvent], None] | None = None) -> None:
        self.registry, self.repo, self.name, self.alias = registry, repo, name, alias
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
        """Poll until cancelled; a failing poll is logged and retried at the next interval."""
        while True:
            try:
                await self.check()
            except Exception:  # the follower must outlive a database outage
                _log.exception("following %s@%s: poll failed", self.name, self.alias)
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
                loaded = await asyncio.to_thread(self._prepare, target)
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

    def _prepare(self, target: str) -> LoadedModel:
        """Fetch (sha256-verified), load and golden-check ``target``, off the event loop."""
        path = self.registry.fetch(f"{self.name}:{target}")
        loaded = self._load(path)
        check_golden(loaded)
        return loaded

    def _failed(self, serving: str | None, target: str, exc: BaseException,
                seconds: float) -> FollowEvent:
        message = getattr(exc, "message", None) or str(exc)
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


class TrafficRouter:
    """Traffic policies by model name; unversioned requests of a model with a policy are
    routed by it (others use the model's default version)."""

    def __init__(self, rng: Any = None) -> None:
        self._policies: dict[str, TrafficPolicy] = {}
        self._rng = rng or random.Random()  # routing, not security

    def get(self, name: str) -> TrafficPolicy | None:
        """The model's policy, if it has one."""
        return self._policies.get(name)

    def set(self, name: str, policy: TrafficPolicy | None) -> None:
        """Replace (or with None, remove) the model's policy: one assignment."""
        if policy is None:
            self._policies.pop(name, None)
        else:
            self._policies[name] = policy

    def route(self, name: str, headers: Mapping[str, str]) -> Assignment | None:
        """The assignment for one request to ``name`` (None: no policy, use the default)."""
        policy = self._policies.get(name)
        if policy is None:
            return None
        key = headers.get(policy.sticky_header) if policy.sticky_header else None
        return policy.choose(key, self._rng)


def follow_extension(registry: Registry, name: str, alias: str,
                     **options: Any) -> Callable[[FastAPI, AppState], AliasFollower]:
    """An ``extensions=`` hook for ``create_app`` that runs an :class:`AliasFollower` for
    the app's lifetime (started after the app's own startup, stopped before its shutdown)."""
    def extend(app: FastAPI, state: AppState) -> AliasFollower:
        follower = AliasFollower(registry, state.repo, name, alias, **options)
        followers: dict[str, AliasFollower] = getattr(app.state, "followers", {})
        followers[name] = follower
        app.state.followers = followers
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
