"""Live quality through a real server on 127.0.0.1: predictions, labels sent to /feedback,
the realized-accuracy gauge, the CBPE estimate, the shipped alert rule (promtool) and the
retraining webhook (a real receiver), end to end.

One scenario, in order: 1,000 rows are predicted; true labels arrive (the gauge sits near the
validation baseline and CBPE agrees with it); shifted labels replace them (the gauge falls
past the threshold, the rule fires on the scraped values, the webhook is called once however
long it stays so); true labels again (the episode ends); shifted again (a second call).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pandas as pd
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from modelport.cli import app as cli
from modelport.config import Settings
from modelport.package import open_package, pack
from modelport.server.factory import build_app
from tests.monitoring.receiver import Receiver, receiving
from tests.monitoring.test_cbpe import draw
from tests.monitoring.test_rules_assets import ASSETS
from tests.registry.live import serving

ROWS = 1000
NAMES = ["x0", "x1", "x2"]


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A logistic regression packed with reference data and validated with ``--record``."""
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("quality")
    rng = np.random.default_rng(7)
    x, y = draw(rng, 20_000, np.zeros(3), 1.0)
    joblib.dump(LogisticRegression().fit(pd.DataFrame(x, columns=NAMES), y),
                root / "model.joblib")
    xv, yv = draw(rng, 5_000, np.zeros(3), 1.0)
    held_out = pd.DataFrame(xv, columns=NAMES).assign(y=yv)
    held_out.to_csv(root / "valid.csv", index=False)
    pack(root / "model.joblib", root / "clf", name="clf", version="1",
         reference=root / "valid.csv", target="y")
    result = CliRunner().invoke(cli, ["validate", str(root / "clf"), "--data",
                                      str(root / "valid.csv"), "--target", "y", "--record"])
    assert result.exit_code == 0, result.output
    return root / "clf"


def test_validate_record_stores_the_baseline_and_calibration(package: Path) -> None:
    metrics = open_package(package).manifest.metrics  # sha256s still verify
    assert set(metrics["validation"]) == {"accuracy", "f1", "roc_auc", "log_loss"}
    assert 0.7 < metrics["validation"]["accuracy"] < 0.9
    assert 0 < metrics["calibration"]["ece"] < 0.05
    assert metrics["rows"] == 5_000


@pytest.fixture(scope="module")
def live(package: Path, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[str, Receiver, str]]:
    tmp = tmp_path_factory.mktemp("live")
    with receiving() as receiver:
        settings = Settings(
            model=[str(package)], grpc_port=0, log_db=f"sqlite:///{tmp / 'log.db'}",
            log_spool_dir=tmp / "spool", drift_check_s=0.2, quality_check_s=0.2,
            quality_windows=["1000"],
            quality_min_labels=100, quality_estimate_rows=ROWS, retrain_webhook=receiver.url,
            retrain_style="github", retrain_token="t0ken", retrain_after_s=1.0)
        with serving(build_app(settings)) as url:
            yield url, receiver, settings.log_db or ""


def wait_for(what: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def gauge(url: str, name: str, **labels: str) -> float | None:
    body = httpx.get(f"{url}/metrics").text
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return None


def send_labels(client: httpx.Client, ids: list[str], labels: np.ndarray) -> None:
    for i, label in enumerate(labels.tolist()):
        response = client.post("/feedback", json={"request_id": ids[i // 20], "row": i % 20,
                                                  "label": label})
        assert response.status_code == 202, response.text


def realized(url: str, labeled: int = ROWS) -> dict[str, Any] | None:
    status = httpx.get(f"{url}/monitoring/quality/clf").json()
    entries = [e for e in status["realized"] if e["window"] == "1000"]
    return entries[0] if entries and entries[0]["labeled"] == labeled else None


def promtool_fires(tmp: Path, threshold: float, before: float, after: float) -> str:
    """Feed the scraped values to the shipped rule with promtool: the alert must fire once the
    gauge has stayed past the threshold for its ``for:``."""
    shutil.copy(ASSETS / "alerts.yml", tmp / "alerts.yml")
    labels = 'model="clf",version="1",arm="none",metric="accuracy",window="1000"'
    test = {"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [
            {"series": 'modelport_quality_threshold{model="clf",version="1",metric="accuracy"}',
             "values": f"{threshold}x40"},
            {"series": f"modelport_quality{{{labels}}}", "values": f"{before}x9 {after}x30"}],
        "alert_rule_test": [
            {"eval_time": "9m", "alertname": "ModelportQualityBelowBaseline", "exp_alerts": []},
            {"eval_time": "26m", "alertname": "ModelportQualityBelowBaseline", "exp_alerts": [{
                "exp_labels": {"severity": "critical", "model": "clf", "version": "1",
                               "arm": "none", "metric": "accuracy", "window": "1000"},
                "exp_annotations": {
                    "summary": "clf 1: realized accuracy is past its validation baseline",
                    "description": f"Realized accuracy over the window 1000 (arm none) is "
                                   f"{after:.4g}, past modelport_quality_threshold (the "
                                   "baseline recorded by `modelport validate --record`, less "
                                   "MODELPORT_QUALITY_MARGIN)."}}]}]}]}
    (tmp / "quality_test.yml").write_text(yaml.safe_dump(test))
    proc = subprocess.run([str(shutil.which("promtool")), "test", "rules", "quality_test.yml"],
                          cwd=tmp, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_shifted_labels_move_the_gauge_fire_the_rule_and_call_the_webhook_once(
        live: tuple[str, Receiver, str], tmp_path: Path, package: Path) -> None:
    url, receiver, log_db = live
    rng = np.random.default_rng(2026)
    x, y = draw(rng, ROWS, np.zeros(3), 1.0)
    ids, preds = [], []
    with httpx.Client(base_url=url, timeout=30) as client:
        for start in range(0, ROWS, 20):
            rows = [dict(zip(NAMES, r, strict=True)) for r in x[start:start + 20].tolist()]
            body = client.post("/predict", json={"instances": rows}).json()
            ids.append(body["request_id"])
            preds += body["predictions"]

        # CBPE: an estimate from the served probabilities, before any label
        def estimated() -> dict[str, Any] | None:
            found = httpx.get(f"{url}/monitoring/quality/clf").json()["estimated"]
            return found[0] if found and found[0]["rows"] == ROWS else None

        est = wait_for(estimated)
        assert est["withheld"] is None

        send_labels(client, ids, y)
        first = wait_for(lambda: realized(url))
        true_acc = float(np.mean(np.asarray(preds) == y))
        assert first["metrics"]["accuracy"] == pytest.approx(true_acc)
        a1 = wait_for(lambda: gauge(url, "modelport_quality", metric="accuracy"))
        threshold = gauge(url, "modelport_quality_threshold", metric="accuracy")
        assert threshold is not None and a1 > threshold
        assert abs(est["metrics"]["accuracy"] - true_acc) <= 0.03

        shifted = np.where(rng.random(ROWS) < 0.3, 1 - y, y)  # 30 % of the labels flip
        send_labels(client, ids, shifted)  # each row's second label: it replaces the first
        expected = float(np.mean(np.asarray(preds) == shifted))
        a2 = wait_for(lambda: (v := gauge(url, "modelport_quality", metric="accuracy"))
                      is not None and abs(v - expected) < 1e-9 and v)  # every label in
        assert a2 < threshold
        assert gauge(url, "modelport_quality_labeled_rows", window="1000") == ROWS
        drift = httpx.get(f"{url}/monitoring/drift/clf").json()
        assert drift["quality"]["breaches"][0]["metric"] in ("accuracy", "f1", "roc_auc",
                                                             "log_loss")
        fired = promtool_fires(tmp_path, threshold, a1, a2)
        print(f"realized accuracy {a1:.4f} -> {a2:.4f} after shifted labels (threshold "
              f"{threshold:.4f}); CBPE estimate {est['metrics']['accuracy']:.4f} vs true "
              f"{true_acc:.4f}; promtool: {fired.strip().splitlines()[-1]}")

        # the webhook: one call for this episode, however many checks find it still firing
        wait_for(lambda: len(receiver.posts) == 1)
        time.sleep(1.5)  # ~7 more checks, still firing
        assert len(receiver.posts) == 1
        (post,) = receiver.posts
        assert post["headers"]["Authorization"] == "Bearer t0ken"
        payload = post["body"]["client_payload"]
        assert post["body"]["event_type"] == "modelport-retrain"
        assert payload["episode"] == 1 and "quality" in payload["reason"]
        # the breaches when the call was made (labels were still arriving: any of them)
        assert payload["quality"] and {b["metric"] for b in payload["quality"]} <= {
            "accuracy", "f1", "roc_auc", "log_loss"}
        assert all(b["value"] < b["threshold"] if b["metric"] != "log_loss"
                   else b["value"] > b["threshold"] for b in payload["quality"])
        assert payload["firing_s"] >= 1.0

        send_labels(client, ids, y)  # true labels again: the condition clears
        wait_for(lambda: (v := gauge(url, "modelport_quality", metric="accuracy"))
                 is not None and abs(v - a1) < 1e-9)
        wait_for(lambda: httpx.get(f"{url}/monitoring/retrain").json()
                 ["firing_since"].get("clf") is None)
        send_labels(client, ids, shifted)  # a new episode
        wait_for(lambda: len(receiver.posts) == 2)
        time.sleep(1.0)
    bodies = receiver.bodies()
    episodes = [b["client_payload"]["episode"] for b in bodies]
    assert episodes == [1, 2]
    status = httpx.get(f"{url}/monitoring/retrain").json()
    assert [c["outcome"] for c in status["calls"]] == ["sent", "sent"]
    assert status["suppressed"] > 0
    assert gauge(url, "modelport_retrain_calls_total", outcome="sent") == 2.0
    print(f"retrain webhook calls per episode: {[episodes.count(e) for e in (1, 2)]}; "
          f"suppressed checks: {status['suppressed']}")

    # modelport drift status: JSON and the table
    result = CliRunner().invoke(cli, ["drift", "status", url, "--json"])
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.output)
    assert report["quality"]["breaches"] and report["quality"]["estimated"][0]["rows"] == ROWS
    result = CliRunner().invoke(cli, ["drift", "status", url], env={"COLUMNS": "200"})
    assert "CBPE estimate" in result.output and "labels" in result.output

    # the HTML report's quality section, from the server and from the log
    for args in ([url], ["--log-db", log_db, "--package", str(package), "--window", "1000"]):
        out = tmp_path / "report.html"
        result = CliRunner().invoke(cli, ["drift", "report", *args, "--out", str(out)])
        assert result.exit_code == 0, result.output
        html = out.read_text()
        assert 'id="quality-realized"' in html and 'id="quality-estimated"' in html
        row = html.split('data-metric="accuracy" data-window="1000"')[1].split("</tr>")[0]
        assert f"{a2:.3g}" in row and 'pill alert' in row
        assert "CBPE, from NannyML" in html
