"""Probes, auth, OpenAPI, model failures, the repository extension and the unseen policy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from modelport.config import Settings
from modelport.package import LoadedModel
from modelport.server.app import create_app
from modelport.signature import Feature, Signature
from modelport.types import Columns, Outputs


@dataclass(frozen=True)
class FnRuntime:
    """A runtime whose model is a plain function (the fake of a seam is a function)."""

    fn: Any
    signature: Signature
    flavor: str = "function"

    def predict(self, batch: Columns) -> Outputs:
        return self.fn(batch)


SIG = Signature((Feature("x"), Feature("y")))


def _sum(batch: Columns) -> Outputs:
    return Outputs(batch.data["x"] + batch.data["y"])


def _app(fn: Any = _sum, **settings: Any) -> TestClient:
    model = LoadedModel("adder", "1", FnRuntime(fn, SIG))
    return TestClient(create_app([model], Settings(**settings)))


def test_model_exception_is_500_with_request_id_and_server_keeps_serving(
        caplog: pytest.LogCaptureFixture) -> None:
    def explode(batch: Columns) -> Outputs:
        if (batch.data["x"] < 0).any():
            raise RuntimeError("secret internals")
        return _sum(batch)

    with _app(explode) as c:
        bad = c.post("/predict", json={"features": {"x": -1, "y": 0}},
                     headers={"X-Request-ID": "r-500"})
        assert bad.status_code == 500
        assert "r-500" in bad.json()["error"]
        assert "secret internals" not in bad.text
        assert any("r-500" in r.getMessage() for r in caplog.records)
        ok = c.post("/predict", json={"features": {"x": 1, "y": 2}})
        assert ok.json()["predictions"] == [3.0]


def test_probes_report_alive_and_ready() -> None:
    with _app() as c:
        for path in ("/health", "/v2/health/live"):
            assert c.get(path).status_code == 200
        for path in ("/ready", "/v2/health/ready"):
            resp = c.get(path)
            assert resp.status_code == 200
        assert c.get("/ready").json()["models"] == {"adder:1": True}
        assert c.get("/ready").json()["in_flight"] == 0
        assert c.get("/v2/models/adder/ready").json() == {"name": "adder", "ready": True}


@pytest.mark.parametrize("headers", [{"Authorization": "Bearer k2"}, {"X-API-Key": "k1"}],
                         ids=["bearer", "x-api-key"])
def test_api_key_opens_protected_routes(headers: dict[str, str]) -> None:
    with _app(api_keys=["k1", "k2"]) as c:
        assert c.post("/predict", json={"features": {"x": 1, "y": 1}},
                      headers=headers).status_code == 200


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"X-API-Key": ""}, {"Authorization": "Basic k1"}],
                         ids=["none", "wrong", "empty", "basic scheme"])
def test_missing_or_wrong_key_is_401_and_probes_stay_open(headers: dict[str, str]) -> None:
    with _app(api_keys=["k1"]) as c:
        resp = c.post("/predict", json={"features": {"x": 1, "y": 1}}, headers=headers)
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"] == "Bearer"
        for route in ("/docs", "/openapi.json", "/models", "/v2", "/v2/models/adder"):
            assert c.get(route, headers=headers).status_code == 401
        for probe in ("/health", "/ready", "/v2/health/live", "/v2/health/ready"):
            assert c.get(probe).status_code == 200


def test_keys_file_is_read(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("alpha\n\nbeta\n")
    with _app(api_keys_file=keys) as c:
        assert c.get("/models", headers={"X-API-Key": "beta"}).status_code == 200
        assert c.get("/models").status_code == 401


def test_openapi_documents_each_model_with_a_real_example(client: TestClient,
                                                          records: list[dict[str, Any]]) -> None:
    doc = client.get("/openapi.json").json()
    schema = doc["components"]["schemas"]["HeartRecord"]
    assert schema["required"][:3] == ["age", "sex", "cp"]
    assert schema["properties"]["thal"]["enum"] == ["fixed", "normal", "reversible"]
    op = doc["paths"]["/models/heart/predict"]["post"]
    example = op["requestBody"]["content"]["application/json"]["example"]
    assert set(example["features"]) == set(records[0])
    assert client.post("/models/heart/predict", json=example).status_code == 200
    assert "/v2/models/heart/infer" in doc["paths"]  # per model: the body depends on it
    assert client.get("/docs").status_code == 200


def test_unseen_category_passes_to_the_encoder_when_configured(
        heart_loaded: LoadedModel, records: list[dict[str, Any]]) -> None:
    app = create_app([heart_loaded], Settings(unseen_categories="pass"))
    with TestClient(app) as c:
        resp = c.post("/predict", json={"features": {**records[0], "thal": "weird"}})
    assert resp.status_code == 200
    assert resp.json()["predictions"][0] in (0, 1)


def test_repository_extension_unloads_and_loads() -> None:
    with _app(admin_keys=["adm"]) as c:
        c.headers["authorization"] = "Bearer adm"
        assert c.post("/v2/repository/index").json()[0]["state"] == "READY"
        assert c.post("/v2/repository/models/adder/unload").status_code == 200
        assert c.post("/predict", json={"features": {"x": 1, "y": 1}}).status_code == 404
        assert c.post("/v2/repository/index").json() == [
            {"name": "adder", "version": "", "state": "UNAVAILABLE", "reason": "unloaded"}]
        assert c.post("/v2/repository/models/adder/load").status_code == 200
        assert c.post("/predict", json={"features": {"x": 1, "y": 1}}).status_code == 200
        assert c.post("/v2/repository/models/other/load").status_code == 404


def test_repository_unload_without_an_admin_key_is_refused() -> None:
    """Reaching the port is not enough to take a model out of service."""
    with _app() as c:
        answer = c.post("/v2/repository/models/adder/unload")
        assert answer.status_code == 403
        assert "admin key" in answer.json()["error"]
        assert c.get("/ready").status_code == 200
    with _app(api_keys=["k1"], admin_keys=["adm"]) as c:
        assert c.post("/v2/repository/models/adder/unload").status_code == 401
        assert c.post("/v2/repository/models/adder/unload",
                      headers={"x-api-key": "k1"}).status_code == 403
        assert c.post("/predict", json={"features": {"x": 1, "y": 1}},
                      headers={"x-api-key": "k1"}).status_code == 200


def test_server_and_model_metadata(client: TestClient) -> None:
    assert client.get("/v2").json()["extensions"] == ["binary_tensor_data", "model_repository"]
    meta = client.get("/v2/models/heart").json()
    assert meta["platform"] == "sklearn"
    assert {"name": "thal", "datatype": "BYTES", "shape": [-1]} in meta["inputs"]
    assert meta["outputs"][1] == {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 2]}
    assert client.get("/v1/models").json() == {"models": ["heart"]}
    assert client.get("/v1/models/heart").json() == {"name": "heart", "ready": True}
    info = client.get("/models/heart").json()
    assert info["signature"]["features"][0]["name"] == "age"
    assert client.get("/models").json()["models"][0]["default_version"] == "1.0.0"


def test_v2_matrix_input_for_an_all_numeric_model() -> None:
    with _app() as c:
        body = {"inputs": [{"name": "input-0", "shape": [2, 2], "datatype": "FP32",
                            "data": [[1, 2], [3, 4]]}]}
        out = c.post("/v2/models/adder/infer", json=body).json()["outputs"][0]
        assert out["data"] == [3.0, 7.0]
        assert np.asarray(out["shape"]).tolist() == [2]


def test_prediction_cache_answers_repeated_rows_and_counts_hits(heart_package: Path,
                                                                records: list[dict[str, Any]]
                                                                ) -> None:
    from modelport.server.factory import build_app

    app = build_app(Settings(model=[str(heart_package)], prediction_cache="memory"))
    with TestClient(app) as c:
        first = c.post("/predict", json={"instances": records[:3]}).json()
        again = c.post("/predict", json={"instances": records[:4]}).json()
        metrics = c.get("/metrics").text
    assert again["predictions"][:3] == first["predictions"]
    assert again["probabilities"][:3] == first["probabilities"]
    assert 'modelport_cache_lookups_total{model="heart",result="hit",version="1.0.0"} 3.0' \
        in metrics
    assert 'modelport_cache_lookups_total{model="heart",result="miss",version="1.0.0"} 4.0' \
        in metrics
