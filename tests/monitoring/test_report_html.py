"""The HTML drift report: self-contained, small at any volume, and it renders in Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from modelport.monitoring.drift import DriftMonitor
from modelport.monitoring.profile import build_profile
from modelport.monitoring.report import Accuracy, ModelView, latency_quantile, render_report
from tests.monitoring.fixtures.drift_samples import SIGNATURE, columns, frame, predict

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "drift-report.png"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--hide-scrollbars"]


def _view(rows: int) -> ModelView:
    """``rows`` predictions of a drifted stream, in requests of 50 rows."""
    ref = frame(5000, seed=51)
    monitor = DriftMonitor(build_profile(ref, SIGNATURE, predict(columns(ref))),
                           "credit-risk", "1.4.0")
    batch = columns(frame(rows, seed=52, shift=0.6))
    latencies = np.random.default_rng(53).lognormal(-5.5, 0.6, rows // 50 + 1)
    for i, start in enumerate(range(0, rows, 50)):
        part = batch.take(start, min(start + 50, rows))
        monitor.counters.observe(part, predict(part), latency_s=float(latencies[i]))
    return ModelView(monitor.profile, monitor.snapshot(), monitor.status(), Accuracy(1234, 1050))


@pytest.fixture(scope="module")
def html() -> str:
    return render_report([_view(100_000)],
                         generated=datetime(2026, 1, 5, 9, 30, tzinfo=timezone.utc))


def test_the_report_of_100k_rows_is_under_1_mb(html: str) -> None:
    assert len(html.encode()) < 1_000_000


def test_the_report_size_does_not_grow_with_rows(html: str) -> None:
    small = render_report([_view(2_000)])
    assert abs(len(html) - len(small)) < 0.1 * len(html)


def test_the_report_loads_nothing_from_anywhere(html: str) -> None:
    assert not re.search(r"https?://|<script|<link|<img|@import|url\(", html)


def test_the_drift_table_is_sorted_by_severity(html: str) -> None:
    table = html[html.index('id="drift-table"'):html.index("</table>")]
    statuses = re.findall(r'<tr class="(alert|warn|ok|insufficient)"', table)
    order = {"alert": 0, "warn": 1, "ok": 2, "insufficient": 3}
    assert statuses == sorted(statuses, key=order.__getitem__)
    assert statuses[0] == "alert"


def test_latency_quantiles_come_from_the_histogram() -> None:
    counts = [0, 0, 5, 90, 5] + [0] * 14
    assert latency_quantile(counts, 0.5) == pytest.approx(0.002)
    assert latency_quantile(counts, 0.99) == pytest.approx(0.004)
    assert latency_quantile([0] * 19, 0.5) is None


@pytest.mark.skipif(not Path(CHROMIUM).exists(),
                    reason="headless Chromium is not installed (apt-get install -y chromium)")
def test_the_report_renders_its_charts_in_headless_chromium(html: str, tmp_path: Path) -> None:
    from PIL import Image

    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")
    shot = tmp_path / "report.png"
    base = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    subprocess.run([*base, f"--screenshot={shot}", "--window-size=1280,2000",
                    page.as_uri()], check=True, capture_output=True, timeout=90)
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], check=True,
                         capture_output=True, text=True, timeout=90).stdout
    for element in ('id="drift-table"', 'id="predictions"', 'id="data-quality"',
                    'id="latency"', 'id="features"', 'id="accuracy"'):
        assert element in dom
    assert dom.count("<svg") == 6 + 2 + 1  # features, outputs, latency
    assert dom.count("<rect") > 100
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert pixels.shape == (2000, 1280, 3)
    assert pixels.std() > 20, "the screenshot is blank"
    blue = (pixels[..., 2] > 200) & (pixels[..., 0] < 80)  # the "current" bars
    assert blue.mean() > 0.005
    if os.environ.get("MODELPORT_UPDATE_DOCS"):
        DOCS.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, DOCS)
