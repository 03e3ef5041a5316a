"""Alerts: de-duplication and cooldown as pure logic, then posted to a real local webhook."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from modelport.monitoring.alerts import Alert, AlertRules, Notifier, RequestWindow, WebhookAlerter


def alert(state: str, key: str = "drift:heart:age") -> Alert:
    return Alert("drift", key, state, f"drift {state}")


@pytest.mark.parametrize(
    ("steps", "sent"),
    [
        ([(0, "alert")], ["alert"]),
        ([(0, "ok")], []),
        ([(0, "alert"), (10, "alert"), (20, "alert")], ["alert"]),
        ([(0, "alert"), (3700, "alert")], ["alert", "alert"]),
        ([(0, "alert"), (400, "ok")], ["alert", "ok"]),
        ([(0, "alert"), (10, "ok")], ["alert"]),
        ([(0, "warn"), (10, "alert"), (20, "ok"), (30, "warn")], ["warn"]),
    ],
    ids=[
        "first-bad-is-sent",
        "first-ok-is-quiet",
        "same-state-is-deduplicated",
        "reminder-after-repeat",
        "change-after-cooldown",
        "change-within-cooldown-is-held",
        "flap-back-sends-nothing",
    ],
)
def test_notifier_sends(steps: list[tuple[float, str]], sent: list[str]) -> None:
    notifier = Notifier(cooldown_s=300, repeat_s=3600)
    out = [notifier.offer(alert(state), now) for now, state in steps]
    assert [a.state for a in out if a is not None] == sent


def test_a_held_change_goes_out_when_the_cooldown_ends_with_the_latest_state() -> None:
    notifier = Notifier(cooldown_s=300, repeat_s=0)
    notifier.offer(alert("warn"), 0)
    notifier.offer(alert("alert"), 10)
    notifier.offer(alert("ok"), 20)
    assert notifier.due(299) == []
    assert [a.state for a in notifier.due(300)] == ["ok"]
    assert notifier.due(900) == []


def test_keys_are_independent() -> None:
    notifier = Notifier(cooldown_s=300, repeat_s=0)
    assert notifier.offer(alert("alert", "drift:heart:age"), 0) is not None
    assert notifier.offer(alert("alert", "drift:heart:sex"), 1) is not None


def test_window_reports_error_rate_and_p99_bound() -> None:
    window = RequestWindow(window_s=60)
    for i in range(100):
        window.add(1000.0, 503 if i < 10 else 200, 2.0 if i >= 98 else 0.004)
    n, error_rate, p99 = window.summary(1000.5)
    assert (n, error_rate, p99) == (100, 0.1, 2.5)


def test_window_forgets_requests_older_than_its_length() -> None:
    window = RequestWindow(window_s=60)
    window.add(1000.0, 500, 0.1)
    window.add(1050.0, 200, 0.1)
    assert window.summary(1070.0)[:2] == (1, 0.0)


def test_payload_is_slack_compatible_with_structured_fields() -> None:
    body = Alert(
        "latency_p99", "latency_p99:heart", "firing", "slow", {"model": "heart"}, float("inf"), 1.0
    ).payload()
    assert body["text"] == "slow"
    assert body["modelport"] == {
        "alert": "latency_p99",
        "key": "latency_p99:heart",
        "state": "firing",
        "severity": "critical",
        "value": None,
        "threshold": 1.0,
        "labels": {"model": "heart"},
    }


class Receiver:
    """A local webhook endpoint on 127.0.0.1 recording JSON bodies; can fail on purpose."""

    def __init__(self, fail: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.fail = fail
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["Content-Length"]))
                if owner.fail > 0:
                    owner.fail -= 1
                    self.send_response(500)
                else:
                    owner.bodies.append(json.loads(data))
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def alerter(receiver: Receiver, clock: Clock) -> Iterator[WebhookAlerter]:
    rules = AlertRules(error_rate=0.05, p99_latency_s=0.5, min_requests=20, cooldown_s=60)
    a = WebhookAlerter(receiver.url, rules=rules, check_interval_s=60, clock=clock)
    yield a
    a.close()


def test_a_drift_change_is_posted_once(alerter: WebhookAlerter, receiver: Receiver) -> None:
    alerter.on_drift("heart", "age", "ok", 0.01)
    alerter.on_drift("heart", "age", "insufficient")
    alerter.on_drift("heart", "age", "alert", 0.31)
    alerter.on_drift("heart", "age", "insufficient")
    alerter.on_drift("heart", "age", "alert", 0.33)
    alerter.flush()
    assert len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert "drift ALERT on heart/age" in body["text"]
    assert body["modelport"]["labels"] == {"model": "heart", "feature": "age"}
    assert body["modelport"]["severity"] == "critical"


def test_an_error_rate_over_the_threshold_fires_then_resolves(
    alerter: WebhookAlerter, receiver: Receiver, clock: Clock
) -> None:
    for i in range(40):
        alerter.observe("heart", "1", 500 if i % 4 == 0 else 200, 0.001)
    alerter.flush()
    assert [b["modelport"]["state"] for b in receiver.bodies] == ["firing"]
    assert receiver.bodies[0]["modelport"]["value"] == 0.25
    clock.now += 120  # errors aged out of the window; cooldown over
    for _ in range(40):
        alerter.observe("heart", "1", 200, 0.001)
    alerter.flush()
    assert [b["modelport"]["state"] for b in receiver.bodies] == ["firing", "resolved"]


def test_a_slow_p99_fires_the_latency_alert(alerter: WebhookAlerter, receiver: Receiver) -> None:
    for i in range(100):
        alerter.observe("heart", "1", 200, 1.5 if i < 2 else 0.002)
    alerter.flush()
    assert [b["modelport"]["alert"] for b in receiver.bodies] == ["latency_p99"]
    assert receiver.bodies[0]["modelport"]["value"] == 2.5


def test_too_few_requests_decide_nothing(alerter: WebhookAlerter, receiver: Receiver) -> None:
    for _ in range(5):
        alerter.observe("heart", "1", 500, 3.0)
    alerter.flush()
    assert receiver.bodies == []


def test_a_failing_webhook_is_retried_once_then_counted(clock: Clock) -> None:
    receiver = Receiver(fail=1)
    alerter = WebhookAlerter(receiver.url, check_interval_s=60, clock=clock)
    alerter.on_drift("heart", "age", "warn")
    alerter.flush()
    assert (alerter.sent, alerter.failed, len(receiver.bodies)) == (1, 0, 1)
    receiver.close()
    alerter.on_drift("heart", "age", "ok")
    clock.now += 10_000
    alerter.flush()
    alerter.close()
    assert alerter.failed == 1
