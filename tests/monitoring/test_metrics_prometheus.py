"""Metrics: conventional names, bounded labels, values read back from the exposition text."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelport.monitoring.metrics import LATENCY_BUCKETS, UNKNOWN, Metrics
from modelport.types import Columns, Outputs, PredictionEvent


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body, _ = metrics.render()
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics).get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def metrics() -> Metrics:
    m = Metrics()
    m.set_model_info("heart", "1.0.0", flavor="sklearn", reference_hash="ab12")
    return m


def test_render_returns_the_text_format_and_its_content_type(metrics: Metrics) -> None:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    assert b"# TYPE modelport_requests_total counter" in body


def test_every_name_has_the_modelport_prefix_and_a_unit_or_total_suffix(metrics: Metrics) -> None:
    metrics.observe_request("heart", "1.0.0", "/predict", 200, 0.001)
    metrics.observe_batch("heart", "1.0.0", 4, 0.0001, 0.002)
    body, _ = metrics.render()
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert all(n.startswith("modelport_") for n in names)
    expected = {
        "modelport_requests", "modelport_request_duration_seconds",
        "modelport_inference_duration_seconds", "modelport_queue_delay_seconds",
        "modelport_batch_size", "modelport_in_flight_requests", "modelport_predictions",
        "modelport_model_info", "modelport_model_ready", "modelport_model_load_seconds",
        "modelport_predlog_records", "modelport_drift_score", "modelport_drift_status",
    }  # fmt: skip
    assert expected <= names


def test_request_latency_buckets_start_at_a_quarter_millisecond(metrics: Metrics) -> None:
    metrics.observe_request("heart", "1.0.0", "/predict", 200, 0.0002)
    labels = {"model": "heart", "version": "1.0.0", "route": "/predict", "protocol": "rest"}
    assert LATENCY_BUCKETS[0] == 0.00025
    assert value(metrics, "modelport_request_duration_seconds_bucket", **labels, le="0.00025") == 1


def test_requests_are_counted_by_route_and_status(metrics: Metrics) -> None:
    for status in (200, 200, 422):
        metrics.observe_request("heart", "1.0.0", "/predict", status, 0.01)
    base = {"model": "heart", "version": "1.0.0", "route": "/predict", "protocol": "rest"}
    assert value(metrics, "modelport_requests_total", **base, status="200") == 2
    assert value(metrics, "modelport_requests_total", **base, status="422") == 1


def test_unknown_models_and_versions_collapse_to_one_label(metrics: Metrics) -> None:
    for name in ("typo1", "typo2", "typo3"):
        metrics.observe_request(name, "9", "/models/{name}/predict", 404, 0.001)
    metrics.observe_request("heart", "9.9.9", "/models/{name}/predict", 404, 0.001)
    route = {"route": "/models/{name}/predict", "status": "404", "protocol": "rest"}
    assert value(metrics, "modelport_requests_total", model=UNKNOWN, version=UNKNOWN, **route) == 3
    assert value(metrics, "modelport_requests_total", model="heart", version=UNKNOWN, **route) == 1


def test_a_prediction_event_counts_its_rows(metrics: Metrics) -> None:
    inputs = Columns({"age": np.array([1.0, 2.0, 3.0])}, 3)
    event = PredictionEvent("r", 0.0, "heart", "1.0.0", inputs, Outputs(np.zeros(3)), 0.01)
    metrics.on_prediction(event)
    metrics.on_prediction(event)
    assert value(metrics, "modelport_predictions_total", model="heart", version="1.0.0") == 6


def test_a_batch_records_its_size_queue_delay_and_inference_time(metrics: Metrics) -> None:
    metrics.observe_batch("heart", "1.0.0", 16, 0.0004, 0.003)
    mv = {"model": "heart", "version": "1.0.0"}
    assert value(metrics, "modelport_batch_size_sum", **mv) == 16
    assert value(metrics, "modelport_queue_delay_seconds_bucket", **mv, le="0.0005") == 1
    assert value(metrics, "modelport_inference_duration_seconds_bucket", **mv, le="0.0025") == 0
    assert value(metrics, "modelport_inference_duration_seconds_bucket", **mv, le="0.005") == 1


def test_in_flight_goes_up_and_back_down(metrics: Metrics) -> None:
    metrics.request_started("/predict")
    metrics.request_started("/predict")
    assert value(metrics, "modelport_in_flight_requests", route="/predict") == 2
    metrics.request_finished("/predict")
    assert value(metrics, "modelport_in_flight_requests", route="/predict") == 1


def test_model_info_carries_flavor_and_reference_hash(metrics: Metrics) -> None:
    info = {"model": "heart", "version": "1.0.0", "flavor": "sklearn", "reference_hash": "ab12"}
    assert value(metrics, "modelport_model_info", **info) == 1


def test_load_time_and_readiness_per_version(metrics: Metrics) -> None:
    metrics.observe_model_load("heart", "1.0.0", 0.42)
    metrics.set_model_ready("heart", "1.0.0", False)
    mv = {"model": "heart", "version": "1.0.0"}
    assert value(metrics, "modelport_model_load_seconds", **mv) == 0.42
    assert ("modelport_model_ready", frozenset(mv.items())) in samples(metrics)
    metrics.set_model_ready("heart", "1.0.0", True)
    assert value(metrics, "modelport_model_ready", **mv) == 1


def test_a_removed_version_disappears_and_its_name_collapses_again(metrics: Metrics) -> None:
    metrics.set_model_ready("heart", "1.0.0", True)
    metrics.remove_model("heart", "1.0.0")
    names = {name for name, _ in samples(metrics)}
    assert "modelport_model_info" not in names and "modelport_model_ready" not in names
    assert metrics.labels_for("heart", "1.0.0") == (UNKNOWN, UNKNOWN)


def test_predlog_outcomes_are_exported_from_the_start(metrics: Metrics) -> None:
    assert value(metrics, "modelport_predlog_records_total", outcome="dropped") == 0
    assert ("modelport_predlog_records_total", frozenset({("outcome", "dropped")})) in samples(
        metrics
    )
    metrics.count_predlog("written", 7)
    assert value(metrics, "modelport_predlog_records_total", outcome="written") == 7


def test_an_unknown_predlog_outcome_is_refused(metrics: Metrics) -> None:
    with pytest.raises(ValueError, match="outcome"):
        metrics.count_predlog("lost", 1)


def test_drift_gauges_hold_score_and_level(metrics: Metrics) -> None:
    metrics.set_drift("heart", "age", "psi", 0.31, "alert")
    assert (
        value(metrics, "modelport_drift_score", model="heart", feature="age", method="psi") == 0.31
    )
    assert value(metrics, "modelport_drift_status", model="heart", feature="age") == 2
    metrics.set_drift("heart", "sex", "chi2", 0.0, "insufficient")
    assert value(metrics, "modelport_drift_status", model="heart", feature="sex") == -1
    with pytest.raises(ValueError, match="drift status"):
        metrics.set_drift("heart", "age", "psi", 0.31, "bad")


def test_two_metrics_objects_never_share_counts() -> None:
    a, b = Metrics(), Metrics()
    a.observe_request("", "", "/health", 200, 0.001)
    labels = {"model": "", "version": "", "route": "/health", "status": "200", "protocol": "rest"}
    assert value(a, "modelport_requests_total", **labels) == 1
    assert value(b, "modelport_requests_total", **labels) == 0
