"""The retraining trigger: a webhook called once per episode of sustained drift or quality loss.

An *episode* of a model starts when its condition turns true (a drift alert on a feature or an
output, or a realized metric past its validation threshold) and ends when the condition is
false at a check. When an episode has lasted ``after_s``, :class:`RetrainTrigger` says "call
now", once; further checks of the same episode are suppressed; the next episode may call
again. The decision is pure logic with the time passed in, so it is tested without waiting.

:class:`RetrainWebhook` makes the call from its own thread (a slow receiver never holds up the
periodic check), with bounded retries: ``attempts`` in all, doubling the pause from
``backoff_s``, no retry after an answer that will not change (a 4xx other than 408 and 429).
Every call is logged (one line: model, episode, outcome, HTTP status, attempts) and kept in a
bounded history (:meth:`RetrainWebhook.calls`). Two body styles:

- ``generic``: the evidence itself, as JSON;
- ``github``: a ``repository_dispatch``, ``{"event_type": ..., "client_payload": evidence}``
  (GitHub takes at most 10 top-level keys in ``client_payload``: the evidence has 10).

A token, when set, goes in ``Authorization: Bearer ...`` and is never logged.

Several processes (``--workers``) or replicas each run the trigger; with ``claim`` and
``release`` (the prediction log's shared database) they call once per episode between them:
the first one due claims the episode, the others suppress theirs, and the claim ends when its
holder sees the condition clear (or stops renewing it, being gone).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from modelport.errors import ModelportError

__all__ = ["Call", "RetrainTrigger", "RetrainWebhook", "evidence"]

log = logging.getLogger("modelport.retrain")

Style = Literal["generic", "github"]


@dataclass
class _Episode:
    since: float
    number: int
    called: bool = False


class RetrainTrigger:
    """Per model: since when its condition holds, and whether this episode has called."""

    def __init__(self, after_s: float) -> None:
        self.after_s = after_s
        self._episodes: dict[str, _Episode] = {}
        self._count: dict[str, int] = {}
        self.suppressed = 0
        """Checks that found the condition still firing after this episode's call."""

    def observe(self, model: str, firing: bool, now: float) -> _Episode | None:
        """The episode to call for now, or None (not firing, not long enough, or called)."""
        episode = self._episodes.get(model)
        if not firing:
            self._episodes.pop(model, None)
            return None
        if episode is None:
            number = self._count[model] = self._count.get(model, 0) + 1
            episode = self._episodes[model] = _Episode(now, number)
        if episode.called:
            self.suppressed += 1
            return None
        if now - episode.since < self.after_s:
            return None
        episode.called = True
        return episode

    def firing_since(self, model: str) -> float | None:
        """When the model's current episode started (None when its condition is false)."""
        episode = self._episodes.get(model)
        return episode.since if episode is not None else None


def evidence(
    *,
    model: str,
    version: str,
    episode: int,
    since: float,
    now: float,
    drift: Mapping[str, Any] | None,
    breaches: Sequence[Mapping[str, Any]],
    estimated: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """What the receiver gets: which features drifted (scores, windows), which metrics fell
    (values, baselines, windows), the label-free estimates. 10 top-level keys at most."""
    reasons = []
    drifted: list[dict[str, Any]] = []
    if drift is not None:
        for f in (*drift.get("features", ()), *drift.get("predictions", ())):
            if f.get("status") in ("warn", "alert"):
                drifted.append({k: f.get(k) for k in ("name", "kind", "status", "method",
                                                      "score", "p_adjusted", "window")})
        if drift.get("status") == "alert":
            reasons.append("drift")
    if breaches:
        reasons.append("quality")
    return {
        "model": model,
        "version": version,
        "reason": "+".join(reasons) or "none",
        "episode": episode,
        "firing_since": round(since, 3),
        "firing_s": round(now - since, 3),
        "drift": {"status": (drift or {}).get("status"),
                  "window_rows": (drift or {}).get("window_rows"), "features": drifted},
        "quality": list(breaches),
        "estimated": list(estimated),
        "sent_at": round(time.time(), 3),
    }


@dataclass(frozen=True)
class Call:
    """One webhook call as logged: what, when, and how it went."""

    model: str
    episode: int
    outcome: str
    """``sent`` (2xx) or ``failed``."""
    status: int | None
    attempts: int
    at: float
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready)."""
        return dict(self.__dict__)


@dataclass
class RetrainWebhook:
    """Decides (:class:`RetrainTrigger`) and calls the webhook from a background thread."""

    url: str
    after_s: float = 3600.0
    style: Style = "generic"
    token: str | None = None
    event_type: str = "modelport-retrain"
    attempts: int = 3
    backoff_s: float = 0.5
    timeout_s: float = 5.0
    on_call: Callable[[Call], None] | None = None
    clock: Callable[[], float] = time.time
    history: int = 100
    claim: Callable[[str, float], bool] | None = None
    """``claim(model, now)``: whether this server holds (or now takes) the model's open
    episode among the servers that share it (``PredictionLog.claim_retrain``, bound to a
    holder); renewed at every check while the condition holds. None: this process alone."""
    release: Callable[[str], None] | None = None
    """``release(model)``: the condition cleared here; the claim is given up."""
    trigger: RetrainTrigger = field(init=False)

    def __post_init__(self) -> None:
        import httpx

        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.trigger = RetrainTrigger(self.after_s)
        self._held: set[str] = set()
        self._client = httpx.Client(timeout=self.timeout_s)
        self._queue: queue.Queue[tuple[str, int, dict[str, Any]] | threading.Event | None] = (
            queue.Queue(maxsize=100))
        self._calls: deque[Call] = deque(maxlen=self.history)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="modelport-retrain", daemon=True)
        self._thread.start()

    def check(self, model: str, version: str, *, drift: Mapping[str, Any] | None,
              breaches: Sequence[Mapping[str, Any]],
              estimated: Sequence[Mapping[str, Any]] = ()) -> bool:
        """One periodic observation of ``model``; True when it queued a call."""
        now = self.clock()
        firing = bool(breaches) or (drift is not None and drift.get("status") == "alert")
        self._shared(model, firing, now)
        episode = self.trigger.observe(model, firing, now)
        if episode is None:
            return False
        if not self._take(model, episode.number, now):
            return False
        body = evidence(model=model, version=version, episode=episode.number,
                        since=episode.since, now=now, drift=drift, breaches=breaches,
                        estimated=estimated)
        try:
            self._queue.put_nowait((model, episode.number, body))
        except queue.Full:
            log.error("retrain: queue full, call for %s episode %d not made", model,
                      episode.number)
            return False
        return True

    def _shared(self, model: str, firing: bool, now: float) -> None:
        """Renew the claim of a held episode, or give it up when the condition cleared."""
        if model not in self._held:
            return
        try:
            if firing and self.claim is not None:
                self.claim(model, now)
            elif not firing:
                self._held.discard(model)
                if self.release is not None:
                    self.release(model)
        except ModelportError as exc:
            log.warning("retrain: cannot update the shared episode of %s: %s", model,
                        exc.message)

    def _take(self, model: str, episode: int, now: float) -> bool:
        """Claim the episode among the servers sharing it; False: another one called."""
        if self.claim is None:
            return True
        try:
            held = self.claim(model, now)
        except ModelportError as exc:  # rather a second call than none
            log.warning("retrain: cannot claim the episode of %s (%s); calling anyway",
                        model, exc.message)
            return True
        if not held:
            self.trigger.suppressed += 1
            log.info("retrain: %s episode %d was called by another server; suppressed here",
                     model, episode)
            return False
        self._held.add(model)
        return True

    def calls(self) -> list[Call]:
        """The latest calls, oldest first."""
        with self._lock:
            return list(self._calls)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until the calls queued so far are made; False on timeout."""
        done = threading.Event()
        self._queue.put(done, timeout=timeout_s)
        return done.wait(timeout_s)

    def close(self, timeout_s: float = 30.0) -> None:
        """Make the queued calls, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(None, timeout=timeout_s)
            self._thread.join(timeout_s)
        self._client.close()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            self._call(*item)

    def _request(self, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        headers = {"User-Agent": "modelport-retrain"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.style == "github":
            headers["Accept"] = "application/vnd.github+json"
            headers["X-GitHub-Api-Version"] = "2022-11-28"
            return {"event_type": self.event_type, "client_payload": body}, headers
        return body, headers

    def _call(self, model: str, episode: int, body: dict[str, Any]) -> None:
        import httpx

        payload, headers = self._request(body)
        status: int | None = None
        error: str | None = None
        attempt = 0
        for attempt in range(1, self.attempts + 1):
            try:
                response = self._client.post(self.url, json=payload, headers=headers)
                status, error = response.status_code, None
                if response.is_success:
                    break
                error = f"HTTP {status}"
                if 400 <= status < 500 and status not in (408, 429):
                    break  # the same request will be refused again
            except httpx.HTTPError as exc:
                status, error = None, f"{exc.__class__.__name__}: {exc}"
            if attempt < self.attempts:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
        outcome = "sent" if error is None else "failed"
        call = Call(model, episode, outcome, status, attempt, self.clock(), error)
        with self._lock:
            self._calls.append(call)
        level = logging.INFO if outcome == "sent" else logging.ERROR
        log.log(level, "retrain webhook %s for %s episode %d: status %s after %d attempt(s)%s",
                outcome, model, episode, status, attempt, f" ({error})" if error else "")
        if self.on_call is not None:
            self.on_call(call)
