"""The gate every version passes on a running server before it can answer a request.

Moving an alias, rolling back, loading a version (admin API or V2 repository), changing the
traffic policy, and an alias follower's switch all call :func:`admit`: the candidate must
answer its own golden rows as recorded, and the golden inputs of the version serving now
(when both take the same features) without raising or answering NaN/inf
(:func:`~modelport.registry.gate.check_candidate`). A candidate that fails is refused
(:class:`~modelport.errors.GoldenCheckFailed`, 409); the refusal is kept as the model's last
(``GET /admin/models``, ``modelport rollout status``) and told to every hook of
:class:`Refusals` (the ``modelport_rollout_refusals_total`` counter). Nothing changes on a
refusal: the live version keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from modelport.errors import GoldenCheckFailed
from modelport.monitoring.metrics import ROLLOUT_ACTIONS
from modelport.package import LoadedModel, Package
from modelport.registry.gate import check_candidate
from modelport.server.models import ModelRepository

__all__ = ["Refusal", "Refusals", "admit", "live_of"]

_log = logging.getLogger("modelport")


@dataclass(frozen=True)
class Refusal:
    """One candidate refused: which version, on what action, why, when."""

    name: str
    version: str
    action: str
    """One of :data:`~modelport.monitoring.metrics.ROLLOUT_ACTIONS`."""
    reason: str
    at: float


@dataclass
class Refusals:
    """The last refusal per model, and the callables told of each one (metrics); one per
    app, as ``AppState.refusals``."""

    hooks: list[Callable[[Refusal], None]] = field(default_factory=list)
    _last: dict[str, Refusal] = field(default_factory=dict)

    def record(self, refusal: Refusal) -> None:
        """Keep ``refusal`` as its model's last one and tell every hook."""
        self._last[refusal.name] = refusal
        _log.error("refused %s:%s (%s): %s", refusal.name, refusal.version,
                   refusal.action.replace("_", " "), refusal.reason)
        for hook in self.hooks:
            try:
                hook(refusal)
            except Exception:  # monitoring must never turn a refusal into a 500
                _log.exception("refusal hook %r failed", hook)

    def last(self, name: str) -> Refusal | None:
        """The model's most recent refusal, if any."""
        return self._last.get(name)


def live_of(repo: ModelRepository, name: str) -> LoadedModel | None:
    """The version of ``name`` that unversioned requests get now (None: none is served)."""
    version = repo.default_version(name)
    served = next((s for s in repo.versions(name) if s.version == version), None)
    return None if served is None else served.loaded


async def admit(candidate: LoadedModel, live: LoadedModel | Package | None, *, action: str,
                refusals: Refusals) -> int:
    """Check ``candidate`` against its golden rows and ``live``'s, off the event loop; a
    refusal is recorded, then raised. Returns how many rows were answered."""
    if action not in ROLLOUT_ACTIONS:
        raise ValueError(f"action must be one of {ROLLOUT_ACTIONS}, got {action!r}")
    try:
        return await asyncio.to_thread(check_candidate, candidate, live)
    except GoldenCheckFailed as exc:
        refusals.record(Refusal(candidate.name, candidate.version, action, exc.message,
                                time.time()))
        raise
