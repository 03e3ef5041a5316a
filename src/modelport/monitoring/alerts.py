"""Webhook alerts (Slack-compatible) on drift changes, error rate and p99 latency.

The server feeds two plain callbacks, both O(1) and non-blocking on the event loop:
:meth:`WebhookAlerter.observe` after every request and :meth:`WebhookAlerter.on_drift` when a
drift decision is made. A background thread evaluates the request windows every
``check_interval_s`` and posts ``{"text": ..., "modelport": {...}}`` with httpx.

What gets sent is decided by :class:`Notifier`, pure logic with the time passed in:

- *de-duplication*: an alert in the state last sent for its key is not sent again, except as a
  reminder every ``repeat_s`` while it stays bad; a first ``ok``/``resolved`` is never sent;
- *cooldown*: after a send, a change of the same key waits ``cooldown_s``; only the latest state
  then goes out, and nothing does if it flapped back to the state last sent.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modelport.monitoring.metrics import LATENCY_BUCKETS

__all__ = ["Alert", "AlertRules", "Notifier", "RequestWindow", "WebhookAlerter"]

log = logging.getLogger("modelport.alerts")

QUIET = frozenset({"ok", "resolved"})
_SEVERITY = {"alert": "critical", "warn": "warning", "firing": "critical"}


@dataclass(frozen=True)
class Alert:
    """One notification: ``key`` identifies what it is about, ``state`` how that thing is."""

    name: str
    """``drift``, ``error_rate`` or ``latency_p99``."""
    key: str
    state: str
    """``ok``/``warn``/``alert`` for drift, ``firing``/``resolved`` for thresholds."""
    text: str
    labels: dict[str, str] = field(default_factory=dict)
    value: float | None = None
    threshold: float | None = None

    @property
    def severity(self) -> str:
        """``critical``, ``warning`` or ``info`` (what a resolved state reports)."""
        return _SEVERITY.get(self.state, "info")

    def payload(self) -> dict[str, Any]:
        """Slack-compatible body: ``text`` for humans, ``modelport`` for machines."""
        data: dict[str, Any] = {"alert": self.name, "key": self.key, "state": self.state}
        value = self.value if self.value is None or math.isfinite(self.value) else None
        data |= {"severity": self.severity, "value": value, "threshold": self.threshold}
        return {"text": self.text, "modelport": {**data, "labels": self.labels}}


@dataclass(frozen=True)
class AlertRules:
    """Thresholds and timing (defaults suit a service answering in milliseconds)."""

    error_rate: float = 0.05
    """Share of 5xx responses in the window above which the error-rate alert fires."""
    p99_latency_s: float = 1.0
    """p99 request latency above which the latency alert fires (use a bucket bound)."""
    min_requests: int = 20
    """Fewer requests than this in the window decide nothing (avoids alarms on 1 of 2)."""
    window_s: float = 60.0
    cooldown_s: float = 300.0
    repeat_s: float = 3600.0
    """Reminder interval while an alert stays bad; 0 sends it once."""


@dataclass
class _Track:
    sent: Alert
    sent_at: float
    pending: Alert | None = None


class Notifier:
    """Decides which alerts to send now (de-duplication and cooldown, see module docstring)."""

    def __init__(self, *, cooldown_s: float, repeat_s: float) -> None:
        self.cooldown_s, self.repeat_s = cooldown_s, repeat_s
        self._tracks: dict[str, _Track] = {}

    def offer(self, alert: Alert, now: float) -> Alert | None:
        """The alert to send now for this observation, or None."""
        track = self._tracks.get(alert.key)
        if track is None:
            if alert.state in QUIET:
                return None
            self._tracks[alert.key] = _Track(alert, now)
            return alert
        if alert.state == track.sent.state:
            track.pending = None  # flapped back, or still the same
            remind = self.repeat_s > 0 and alert.state not in QUIET
            if remind and now - track.sent_at >= self.repeat_s:
                return self._send(track, alert, now)
            return None
        if now - track.sent_at < self.cooldown_s:
            track.pending = alert
            return None
        return self._send(track, alert, now)

    def due(self, now: float) -> list[Alert]:
        """Changes held back by the cooldown whose cooldown has now ended."""
        out = []
        for track in self._tracks.values():
            if track.pending is not None and now - track.sent_at >= self.cooldown_s:
                out.append(self._send(track, track.pending, now))
        return out

    @staticmethod
    def _send(track: _Track, alert: Alert, now: float) -> Alert:
        track.sent, track.sent_at, track.pending = alert, now, None
        return alert


class RequestWindow:
    """Requests of the last ``window_s`` seconds in one-second slots: count, 5xx, latency
    buckets. Memory is bounded by the window length, not by the request rate."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._slots: dict[int, list[int]] = {}  # second -> [n, errors, *bucket counts]

    def add(self, now: float, status: int, seconds: float) -> None:
        """Record one request."""
        slot = self._slots.get(int(now))
        if slot is None:
            slot = self._slots[int(now)] = [0] * (3 + len(LATENCY_BUCKETS))
        slot[0] += 1
        slot[1] += status >= 500
        slot[2 + _bucket(seconds)] += 1

    def summary(self, now: float) -> tuple[int, float, float]:
        """``(requests, error_rate, p99_upper_bound_s)`` over the window; drops older slots."""
        oldest = int(now - self.window_s)
        for second in [s for s in self._slots if s <= oldest]:
            del self._slots[second]
        total = [sum(column) for column in zip(*self._slots.values(), strict=True)]
        if not total or total[0] == 0:
            return 0, 0.0, 0.0
        return total[0], total[1] / total[0], _quantile(total[2:], 0.99)


def _seconds(value: float) -> str:
    return f"> {LATENCY_BUCKETS[-1]:g} s" if math.isinf(value) else f"{value:g} s"


def _bucket(seconds: float) -> int:
    for i, bound in enumerate(LATENCY_BUCKETS):
        if seconds <= bound:
            return i
    return len(LATENCY_BUCKETS)


def _quantile(counts: list[int], q: float) -> float:
    need, seen = q * sum(counts), 0
    for i, count in enumerate(counts):
        seen += count
        if seen >= need and count:
            return LATENCY_BUCKETS[i] if i < len(LATENCY_BUCKETS) else float("inf")
    return float("inf")


class WebhookAlerter:
    """Posts alerts to a webhook URL from a background thread."""

    def __init__(
        self,
        url: str,
        *,
        rules: AlertRules | None = None,
        check_interval_s: float = 5.0,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import httpx

        self.url, self.rules, self._clock = url, rules or AlertRules(), clock
        self._notifier = Notifier(cooldown_s=self.rules.cooldown_s, repeat_s=self.rules.repeat_s)
        self._windows: dict[str, RequestWindow] = {}
        self._drift: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[Alert | threading.Event | None] = queue.Queue(maxsize=1000)
        self._client = httpx.Client(timeout=timeout_s)
        self._interval = check_interval_s
        self.sent = self.failed = 0
        self._thread = threading.Thread(target=self._run, name="modelport-alerts", daemon=True)
        self._thread.start()

    # -- callbacks on the event loop ------------------------------------------------------

    def observe(self, model: str, version: str, status: int, seconds: float) -> None:
        """After each request (``install_observability(on_request=...)``)."""
        with self._lock:
            window = self._windows.get(model)
            if window is None:
                window = self._windows[model] = RequestWindow(self.rules.window_s)
            window.add(self._clock(), status, seconds)

    def on_drift(self, model: str, feature: str, status: str, score: float | None = None) -> None:
        """A drift decision for one feature (``ok``, ``warn`` or ``alert``); changes alert.
        ``insufficient`` (too few rows to decide) is no decision and changes nothing."""
        if status == "insufficient":
            return
        with self._lock:
            if self._drift.get((model, feature), "ok") == status:
                return
            self._drift[(model, feature)] = status
        text = f"[modelport] drift {status.upper()} on {model}/{feature}"
        text += "" if score is None else f" (score {score:.4g})"
        alert = Alert("drift", f"drift:{model}:{feature}", status, text,
                      {"model": model, "feature": feature}, score)  # fmt: skip
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            log.warning("alerts: queue full, drift change of %s/%s not sent", model, feature)

    # -- control ----------------------------------------------------------------------------

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Evaluate now and wait until what is due has been sent; False on timeout."""
        done = threading.Event()
        self._queue.put(done, timeout=timeout_s)
        return done.wait(timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        """Send what is due, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(None, timeout=timeout_s)
            self._thread.join(timeout_s)
        self._client.close()

    # -- the background thread ----------------------------------------------------------------

    def _run(self) -> None:
        next_check = self._clock() + self._interval
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, next_check - self._clock()))
            except queue.Empty:
                self._check()
                next_check = self._clock() + self._interval
                continue
            if isinstance(item, Alert):
                self._post(self._notifier.offer(item, self._clock()))
                continue
            self._check()
            if item is None:
                return
            item.set()

    def _check(self) -> None:
        now = self._clock()
        with self._lock:
            summaries = {m: w.summary(now) for m, w in self._windows.items()}
        for model, (n, error_rate, p99) in summaries.items():
            if n < self.rules.min_requests:
                continue
            for alert in self._threshold_alerts(model, error_rate, p99):
                self._post(self._notifier.offer(alert, now))
        for alert in self._notifier.due(now):
            self._post(alert)

    def _threshold_alerts(self, model: str, error_rate: float, p99: float) -> list[Alert]:
        r, who = self.rules, model or "(no model)"
        out = []
        for name, value, limit, what in (
            ("error_rate", error_rate, r.error_rate, f"error rate {error_rate:.1%}"),
            ("latency_p99", p99, r.p99_latency_s, f"p99 latency {_seconds(p99)}"),
        ):
            state = "firing" if value > limit else "resolved"
            text = f"[modelport] {name} {state.upper()} on {who}: {what} (threshold {limit:g})"
            out.append(Alert(name, f"{name}:{model}", state, text, {"model": model}, value, limit))
        return out

    def _post(self, alert: Alert | None) -> None:
        if alert is None:
            return
        for attempt in range(2):
            try:
                self._client.post(self.url, json=alert.payload()).raise_for_status()
            except Exception as exc:  # the webhook being down must not stop alerting
                if attempt == 1:
                    log.warning("alerts: webhook failed for %s: %s", alert.key, exc)
                    self.failed += 1
                continue
            self.sent += 1
            return
