"""Every protocol answers exactly what the model answers in process."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from fastapi.testclient import TestClient

from modelport.package import LoadedModel
from tests.server.conftest import v2_columns


def _expected(loaded: LoadedModel, records: list[dict[str, Any]]) -> tuple[Any, Any]:
    model = loaded.runtime.model  # type: ignore[attr-defined]
    frame = pd.DataFrame(records)
    return model.predict(frame), model.predict_proba(frame)


def test_native_records_match_in_process_predict(client: TestClient, heart_loaded: LoadedModel,
                                                 records: list[dict[str, Any]]) -> None:
    labels, proba = _expected(heart_loaded, records)
    body = client.post("/predict", json={"instances": records}).json()
    assert body["predictions"] == labels.tolist()
    np.testing.assert_allclose(body["probabilities"], proba, rtol=0, atol=1e-12)
    assert body["classes"] == [0, 1]
    assert (body["model"], body["version"]) == ("heart", "1.0.0")


def test_native_rows_and_columns_match_records(client: TestClient,
                                               records: list[dict[str, Any]]) -> None:
    by_records = client.post("/predict", json={"instances": records}).json()
    rows = [list(r.values()) for r in records]
    by_rows = client.post("/models/heart/predict", json={"instances": rows}).json()
    cols = {k: [r[k] for r in records] for k in records[0]}
    by_cols = client.post("/models/heart/versions/1.0.0/predict/batch",
                          json={"columns": cols}).json()
    for other in (by_rows, by_cols):
        assert other["predictions"] == by_records["predictions"]
        assert other["probabilities"] == by_records["probabilities"]


def test_single_record_matches_first_row(client: TestClient, heart_loaded: LoadedModel,
                                         records: list[dict[str, Any]]) -> None:
    labels, proba = _expected(heart_loaded, records[:1])
    body = client.post("/predict", json={"features": records[0]}).json()
    assert body["predictions"] == labels.tolist()
    np.testing.assert_allclose(body["probabilities"], proba, atol=1e-12)
    as_row = client.post("/predict", json={"features": list(records[0].values())}).json()
    assert (as_row["predictions"], as_row["probabilities"]) == (body["predictions"],
                                                                body["probabilities"])


def test_v2_json_matches_in_process_predict(client: TestClient, heart_loaded: LoadedModel,
                                            records: list[dict[str, Any]]) -> None:
    labels, proba = _expected(heart_loaded, records)
    resp = client.post("/v2/models/heart/infer", json=v2_columns(records))
    assert resp.status_code == 200, resp.text
    outputs = {o["name"]: o for o in resp.json()["outputs"]}
    assert outputs["predict"]["data"] == labels.tolist()
    assert outputs["predict_proba"]["shape"] == [len(records), 2]
    np.testing.assert_allclose(np.reshape(outputs["predict_proba"]["data"], (-1, 2)), proba,
                               atol=1e-12)


def test_v2_requested_output_only(client: TestClient, records: list[dict[str, Any]]) -> None:
    body = v2_columns(records) | {"outputs": [{"name": "predict_proba"}]}
    outputs = client.post("/v2/models/heart/versions/1.0.0/infer", json=body).json()["outputs"]
    assert [o["name"] for o in outputs] == ["predict_proba"]


def test_v1_predictions_match_in_process_predict(client: TestClient, heart_loaded: LoadedModel,
                                                 records: list[dict[str, Any]]) -> None:
    labels, _ = _expected(heart_loaded, records)
    resp = client.post("/v1/models/heart:predict", json={"instances": records})
    assert resp.json() == {"predictions": labels.tolist()}


def test_response_headers_name_model_version_and_request_id(client: TestClient,
                                                            records: list[dict[str, Any]]) -> None:
    resp = client.post("/predict", json={"features": records[0]},
                       headers={"X-Request-ID": "abc-123"})
    assert resp.headers["x-model-name"] == "heart"
    assert resp.headers["x-model-version"] == "1.0.0"
    assert resp.headers["x-request-id"] == "abc-123"
    assert resp.json()["request_id"] == "abc-123"
