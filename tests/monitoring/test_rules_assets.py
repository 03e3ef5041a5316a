"""The shipped Prometheus alert rules and Grafana dashboard, checked by promtool.

promtool comes with Debian's ``prometheus`` package (``apt-get install -y prometheus``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from modelport.monitoring.live_quality import QualityTracker
from modelport.monitoring.metrics import Metrics
from modelport.monitoring.quality import LabeledRow, QualityWindow
from modelport.types import Columns, Outputs, PredictionEvent

ASSETS = Path(str(files("modelport.monitoring") / "assets"))
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not found: install Debian's package with `apt-get install -y prometheus`",
)
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$model": ".*"}


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    argv = [PROMTOOL, *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ASSETS / "dashboard.json").read_text(encoding="utf-8"))
    return data


def targets() -> list[tuple[int, str, str]]:
    """``(panel id, refId, expr)`` of every query in the dashboard."""
    return [
        (panel["id"], t["refId"], t["expr"])
        for panel in dashboard()["panels"]
        for t in panel.get("targets", [])
    ]


def exported_names() -> set[str]:
    """Every sample name a Metrics object exports once each metric has a value."""
    m = Metrics()
    m.set_model_info("heart", "1", flavor="sklearn", reference_hash="h")
    m.set_model_ready("heart", "1", True)
    m.observe_model_load("heart", "1", 0.1)
    m.observe_request("heart", "1", "/predict", 200, 0.01)
    m.request_started("/predict")
    m.observe_batch("heart", "1", 4, 0.001, 0.002)
    m.on_prediction(PredictionEvent("r", 0, "heart", "1", Columns({}, 1), Outputs(np.zeros(1)), 0))
    m.set_drift("heart", "age", "psi", 0.2, "warn")
    m.count_retrain("heart", "sent")
    m.add_gauges(quality_tracker().gauges)
    body = m.render()[0].decode()
    return {s.name for f in text_string_to_metric_families(body) for s in f.samples}


def quality_tracker() -> QualityTracker:
    """A tracker with a baseline, one realized window and one CBPE estimate."""
    rows = [LabeledRow("1", None, float(i), i % 2, {"0": 0.3, "1": 0.7}, 1) for i in range(20)]
    tracker = QualityTracker(windows=[QualityWindow.parse("1000")], min_labels=10,
                             estimate_rows=10, fetch=lambda model, **_: rows)
    tracker.register("heart", "1", task="classification", classes=[0, 1],
                     metrics={"validation": {"accuracy": 0.9}, "calibration": {"ece": 0.01}})
    tracker.on_prediction(PredictionEvent(
        "r", 0, "heart", "1", Columns({}, 10),
        Outputs(np.ones(10, dtype=int), np.tile([0.2, 0.8], (10, 1)), [0, 1]), 0))
    tracker.refresh()
    return tracker


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bmodelport_[a-z_]+\b", expr))


@needs_promtool
def test_alert_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", ASSETS / "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout


@needs_promtool
def test_alert_rules_pass_their_promtool_unit_tests() -> None:
    result = promtool("test", "rules", ASSETS / "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_cover_latency_errors_drift_log_and_readiness() -> None:
    rules = yaml.safe_load((ASSETS / "alerts.yml").read_text(encoding="utf-8"))
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert names == {
        "ModelportHighLatency",
        "ModelportHighErrorRate",
        "ModelportDriftWarning",
        "ModelportDriftAlert",
        "ModelportPredictionLogDropping",
        "ModelportPredictionLogSpooling",
        "ModelportModelNotReady",
        "ModelportQualityBelowBaseline",
    }


def test_alert_rules_only_use_metrics_modelport_exports() -> None:
    rules = yaml.safe_load((ASSETS / "alerts.yml").read_text(encoding="utf-8"))
    used = set().union(*(metric_names(r["expr"]) for g in rules["groups"] for r in g["rules"]))
    assert used and used <= exported_names()


def test_dashboard_panels_have_unique_ids_and_fit_the_grid() -> None:
    panels = dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        pos = p["gridPos"]
        assert p["title"] and pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0


def test_dashboard_queries_use_the_datasource_variable_and_unique_ref_ids() -> None:
    data = dashboard()
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["model"]["includeAll"] is True
    for panel in data["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs))


def test_dashboard_only_uses_metrics_modelport_exports() -> None:
    used = set().union(*(metric_names(expr) for _, _, expr in targets()))
    assert len(used) >= 10 and used <= exported_names()


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """Each expression, Grafana variables substituted, becomes a recording rule promtool parses."""
    rules = []
    for panel_id, ref, template in targets():
        expr = template
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unsubstituted variable in panel {panel_id}: {expr}"
        rules.append({"record": f"dashboard:panel_{panel_id}_{ref}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
