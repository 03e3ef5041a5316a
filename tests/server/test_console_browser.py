"""The console at ``/ui`` and the docs at ``/docs`` in a real browser (the system Chromium,
driven by Playwright) against a real ``modelport serve heart@production``.

The server runs with ``--root-path /mp``, and the browser reaches it the way it would behind a
proxy that serves it under ``/mp``: every request the page makes goes through a route handler
that strips the prefix (what the proxy would do). A request without the prefix, or to any host
but 127.0.0.1, is refused and recorded, and every test ends by checking that none was made
and that the page logged no error and raised no exception.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pandas as pd
import pytest

from modelport.registry import Registry
from tests.registry.pkgs import broken_golden
from tests.server.test_e2e import start_server, stop

pytestmark = pytest.mark.e2e

CHROMIUM = Path(os.environ.get("MODELPORT_TEST_CHROMIUM", "/usr/bin/chromium"))
ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PREFIX = "/mp"
ADMIN = "console-admin"
BROKEN = "1.1.0"
ACTIONS = {"move-alias", "rollback", "canary-step", "set-weights", "clear-policy"}
MAX_PAGE_BYTES = 300_000


@dataclass
class Server:
    url: str
    """The server itself (what the proxy forwards to)."""
    registry: Registry

    @property
    def public(self) -> str:
        """The server as the browser sees it, behind the proxy's prefix."""
        return self.url + PREFIX


@pytest.fixture(scope="module")
def server(heart_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """heart 1.0.0 and 1.2.0 (good) and 1.1.0 (golden outputs that do not match) in a
    registry; ``serve heart@production`` (-> 1.0.0) with an admin key, the prediction log on,
    drift checked every second, behind ``--root-path /mp``."""
    tmp = tmp_path_factory.mktemp("console")
    db, store = f"sqlite:///{tmp / 'registry.db'}", tmp / "store"
    reg = Registry.open(db, store)
    reg.push(heart_package, "heart", "1.0.0")
    reg.push(heart_package, "heart", "1.2.0")
    reg.push(broken_golden(heart_package, tmp / "broken"), "heart", BROKEN)
    reg.set_alias("heart", "production", "1.0.0", actor="test")
    env = {"MODELPORT_ADMIN_KEYS": ADMIN, "MODELPORT_LOG_DB": f"sqlite:///{tmp / 'log.db'}",
           "MODELPORT_LOG_SPOOL_DIR": str(tmp / "spool"), "MODELPORT_DRIFT_CHECK_S": "1",
           "MODELPORT_REGISTRY_POLL_S": "0.2", "MODELPORT_SWAP_GRACE_S": "60"}
    proc, url = start_server("heart@production", "--db", db, "--store", str(store),
                             "--grpc-port", "0", "--root-path", PREFIX, env=env)
    try:
        yield Server(url, reg)
    finally:
        stop(proc)
        reg.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: scripts/install-verify-tools installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                      args=["--no-sandbox"])
        yield chromium
        chromium.close()


@dataclass
class Watch:
    """What a page did: requests refused by the proxy, errors, bytes received."""

    outside: list[str] = field(default_factory=list)
    unprefixed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    expected_errors: list[str] = field(default_factory=list)
    """Console errors the test provoked on purpose (a refused action's 409)."""
    received: dict[str, int] = field(default_factory=dict)


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[tuple[Any, Watch]]:
    """A fresh page behind the prefix-stripping proxy; afterwards: no request left
    127.0.0.1, none missed the prefix, and the page logged no error."""
    watch = Watch()
    context = browser.new_context(viewport={"width": 1280, "height": 900})

    def proxy(route: Any) -> None:
        parts = urlsplit(route.request.url)
        if parts.hostname != "127.0.0.1":
            watch.outside.append(route.request.url)
            route.abort()
        elif parts.path == PREFIX or parts.path.startswith(PREFIX + "/"):
            route.continue_(url=urlunsplit(parts._replace(path=parts.path[len(PREFIX):])))
        else:
            watch.unprefixed.append(route.request.url)
            route.abort()

    def on_console(message: Any) -> None:
        if message.type == "error":
            watch.errors.append(message.text)

    def on_response(response: Any) -> None:
        try:
            watch.received[response.url] = len(response.body())
        except Exception:  # a body gone with its navigation; sizes are checked on /ui only
            watch.received.setdefault(response.url, 0)

    context.route("**/*", proxy)
    page = context.new_page()
    page.on("console", on_console)
    page.on("pageerror", lambda exc: watch.errors.append(f"page error: {exc}"))
    page.on("response", on_response)
    try:
        yield page, watch
    finally:
        context.close()
    assert watch.outside == [], "the page tried to reach another host"
    assert watch.unprefixed == [], "the page made requests outside the root path"
    unexpected = [e for e in watch.errors if not any(x in e for x in watch.expected_errors)]
    assert unexpected == [], "the page logged errors"


def _until(probe: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return value


def _predict(server: Server, rows: list[dict[str, Any]]) -> httpx.Response:
    answer = httpx.post(f"{server.url}/predict", json={"instances": rows}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer


def _screenshot(page: Any, name: str) -> None:
    """docs/ui-NAME.png, checked: the model's name in the DOM, and not a blank image."""
    from PIL import Image

    assert "heart" in page.locator("main").inner_text()
    path = DOCS / f"ui-{name}.png"
    page.screenshot(path=str(path), full_page=False)
    with Image.open(path) as image:
        colors = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colors is None or len(colors) > 20, f"{path.name} is nearly blank"


def test_models_page_shows_the_example_model_within_its_weight(
        page: tuple[Any, Watch], server: Server) -> None:
    tab, watch = page
    tab.goto(f"{server.public}/ui")
    card = tab.locator('.models-card[data-model="heart"]')
    card.wait_for()
    text = card.inner_text()
    for expected in ("1.0.0", "production", "sklearn", "native", "classification", "thal",
                     "reversible"):
        assert expected in text
    sha = server.registry.get("heart", "1.0.0").digest
    assert card.locator(f'td[title="{sha}"]').count() == 1, "package sha256 not shown"
    tab.wait_for_load_state("networkidle")
    weight = sum(n for url, n in watch.received.items() if "/ui" in url)
    assert 0 < weight < MAX_PAGE_BYTES, f"/ui weighs {weight} bytes"
    _screenshot(tab, "models")


def test_keyboard_reaches_every_action_and_moves_the_alias(
        page: tuple[Any, Watch], server: Server, heart_features: pd.DataFrame) -> None:
    tab, _ = page
    rows = _records(heart_features.head(5))
    assert _predict(server, rows).headers["x-model-version"] == "1.0.0"
    tab.goto(f"{server.public}/ui#rollout")
    tab.locator("#alias-version option").first.wait_for(state="attached")
    reached = _tab_through(tab)
    assert {r["action"] for r in reached} >= ACTIONS, reached
    assert {"models", "rollout", "drift", "predictions"} <= {r["page"] for r in reached}

    _tab_to(tab, "admin-key")
    tab.keyboard.type(ADMIN)
    tab.keyboard.press("Enter")  # submits the keys form
    _tab_to(tab, "alias-name")
    tab.keyboard.press("Control+A")
    tab.keyboard.type("production")
    _tab_to(tab, "alias-version")
    _choose_by_keyboard(tab, "alias-version", "1.2.0")
    _tab_to(tab, "move-alias")
    tab.keyboard.press("Enter")
    dialog = tab.locator("#confirm")
    dialog.wait_for(state="visible")
    assert "production" in dialog.inner_text() and "1.2.0" in dialog.inner_text()
    assert tab.evaluate("document.activeElement.id") == "confirm-ok"
    tab.keyboard.press("Enter")
    result = tab.locator("#action-result.ok")
    result.wait_for()
    assert "Golden check passed" in result.inner_text()
    assert "now serves 1.2.0" in result.inner_text()
    assert _predict(server, rows).headers["x-model-version"] == "1.2.0"
    history = tab.locator("#history tbody")
    _until(lambda: "1.2.0" in history.inner_text())

    # a canary step to the version still loaded, by keyboard; live traffic per arm
    _tab_to(tab, "canary-version")
    _choose_by_keyboard(tab, "canary-version", "1.0.0")
    _tab_to(tab, "canary-to")
    tab.keyboard.press("Control+A")
    tab.keyboard.type("25")
    _tab_to(tab, "canary-step")
    tab.keyboard.press("Enter")
    tab.locator("#confirm").wait_for(state="visible")
    tab.keyboard.press("Enter")
    _until(lambda: "Canary now at 25 %" in tab.locator("#action-result.ok").inner_text())
    arms = {_predict(server, rows[:1]).headers["x-model-arm"] for _ in range(40)}
    assert arms == {"canary", "stable"}
    _until(lambda: {"canary", "stable"} <= set(
        tab.locator("#arms tbody td:first-child").all_inner_texts()))
    _screenshot(tab, "rollout")

    _tab_to(tab, "clear-policy")
    tab.keyboard.press("Enter")
    tab.locator("#confirm").wait_for(state="visible")
    tab.keyboard.press("Enter")
    _until(lambda: "Policy removed" in tab.locator("#action-result.ok").inner_text())
    assert "x-model-arm" not in _predict(server, rows[:1]).headers


def test_a_refused_move_shows_the_servers_message(
        page: tuple[Any, Watch], server: Server) -> None:
    tab, watch = page
    watch.expected_errors.append("status of 409")  # the browser logs the refused request
    tab.goto(f"{server.public}/ui#rollout")
    tab.fill("#admin-key", ADMIN)
    tab.click("#keys-use")
    tab.locator(f'#alias-version option[value="{BROKEN}"], #alias-version option:text-is("'
                f'{BROKEN}")').first.wait_for(state="attached")
    tab.fill("#alias-name", "production")
    tab.select_option("#alias-version", BROKEN)
    tab.click('button[data-action="move-alias"]')
    tab.click("#confirm-ok")
    refused = tab.locator("#action-result.refused")
    refused.wait_for()
    message = refused.inner_text()
    assert "409" in message and BROKEN in message and "golden" in message.lower()
    assert server.registry.alias_target("heart", "production") != BROKEN


def test_drift_is_flagged_after_shifted_traffic(
        page: tuple[Any, Watch], server: Server, heart_features: pd.DataFrame) -> None:
    tab, _ = page
    shifted = heart_features.head(300).copy()
    shifted["age"] = shifted["age"] + 40
    ids = []
    for start in range(0, 300, 100):
        answer = _predict(server, _records(shifted.iloc[start:start + 100]))
        ids.append((answer.headers["x-request-id"], answer.json()["predictions"]))
    for request_id, predictions in ids[:1]:  # labels for the first request's rows
        for row, label in enumerate(predictions[:20]):
            httpx.post(f"{server.url}/feedback", json={
                "request_id": request_id, "row": row, "label": label if row % 4 else
                1 - label}, timeout=10).raise_for_status()
    tab.goto(f"{server.public}/ui#drift")
    age = tab.locator('#features tr[data-feature="age"] .badge')
    _until(lambda: age.count() and age.inner_text() == "alert")
    tab.locator('button[data-feature="age"]').click()
    _until(lambda: tab.locator("#hist-title").inner_text() == "Histogram: age")
    assert tab.locator("#hist svg rect").count() > 10
    _until(lambda: tab.locator("#trend svg circle").count() >= 2)
    # 5 of the 20 labels contradict the answer: 75 % right (labels arrive in batches)
    _until(lambda: "75.0 % of 20 labeled" in tab.locator("#accuracy").inner_text())
    _screenshot(tab, "drift")


def test_predictions_page_lists_and_filters_logged_predictions(
        page: tuple[Any, Watch], server: Server, heart_features: pd.DataFrame) -> None:
    tab, _ = page
    _predict(server, _records(heart_features.head(3)))
    tab.goto(f"{server.public}/ui#predictions")
    body = tab.locator("#predictions tbody")
    _until(lambda: body.locator("tr").count() > 0)
    versions = set(body.locator("tr td:nth-child(3)").all_inner_texts())
    assert versions <= {"1.0.0", "1.2.0"}
    tab.fill("#pred-version", "1.0.0")
    tab.press("#pred-version", "Enter")
    _until(lambda: set(body.locator("tr td:nth-child(3)").all_inner_texts()) == {"1.0.0"})
    _screenshot(tab, "predictions")


def test_docs_load_offline_and_try_it_out_predicts(
        page: tuple[Any, Watch], server: Server) -> None:
    tab, _ = page
    tab.goto(f"{server.public}/docs")
    summary = tab.locator('.opblock-post .opblock-summary-path[data-path="/predict"]')
    summary.click()
    block = tab.locator(".opblock.is-open")
    block.locator("button.try-out__btn").click()
    block.locator("button.execute").click()
    status = block.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for()
    assert status.inner_text().strip().startswith("200")
    assert '"predictions"' in block.locator(".live-responses-table .microlight").first.inner_text()
    tab.goto(f"{server.public}/redoc")
    tab.locator("h1", has_text="modelport").first.wait_for()


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    import json

    return json.loads(frame.to_json(orient="records"))  # type: ignore[no-any-return]


def _focused(tab: Any) -> dict[str, str]:
    return tab.evaluate("""() => { const e = document.activeElement;
        return {id: e.id || "", action: e.dataset.action || "", page: e.dataset.page || ""}; }""")


def _tab_through(tab: Any, limit: int = 80) -> list[dict[str, str]]:
    """Every element Tab reaches from the top of the page, once round."""
    tab.evaluate("document.activeElement && document.activeElement.blur()")
    seen: list[dict[str, str]] = []
    for _ in range(limit):
        tab.keyboard.press("Tab")
        focused = _focused(tab)
        if seen and focused == seen[0]:
            break
        seen.append(focused)
    return seen


def _tab_to(tab: Any, target: str, limit: int = 80) -> None:
    """Press Tab until the element with id (or data-action) ``target`` has the focus."""
    for _ in range(limit):
        focused = _focused(tab)
        if target in (focused["id"], focused["action"]):
            return
        tab.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached {target}")


def _choose_by_keyboard(tab: Any, select_id: str, value: str) -> None:
    """Move a focused <select> to ``value`` with the arrow keys."""
    for key in ("Home", *["ArrowDown"] * 10):
        if tab.evaluate(f"document.getElementById('{select_id}').value") == value:
            return
        tab.keyboard.press(key)
    assert tab.evaluate(f"document.getElementById('{select_id}').value") == value


def test_screenshots_are_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("models", "rollout", "drift", "predictions"):
        assert f"docs/ui-{name}.png" in readme
        assert (DOCS / f"ui-{name}.png").is_file()
