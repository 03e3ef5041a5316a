"""The OpenAPI document is exact: every status has its schema, per-model request schemas
admit what the server accepts, error bodies are the documented ones, ``Allow`` matches."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient

from modelport.config import Settings
from modelport.package import LoadedModel
from modelport.server.admin import admin_extension
from modelport.server.app import create_app
from modelport.signature import FLOAT_LIMIT

ADMIN = {"Authorization": "Bearer adm"}
METHODS = ("get", "post", "put", "delete", "patch")
PARAMS = {"name": "heart", "version": "1.0.0", "alias": "production", "model": "heart"}


@pytest.fixture(scope="module")
def admin_client(heart_loaded: LoadedModel) -> Iterator[TestClient]:
    """The example model with an admin key and the admin API (no registry)."""
    app = create_app([heart_loaded], Settings(admin_keys=["adm"]),
                     extensions=[admin_extension(None)])
    with TestClient(app, headers=ADMIN) as c:
        yield c


@pytest.fixture(scope="module")
def doc(admin_client: TestClient) -> dict[str, Any]:
    return admin_client.get("/openapi.json").json()  # type: ignore[no-any-return]


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            yield path, method, op


def _concrete(path: str) -> str:
    return re.sub(r"{(\w+)}", lambda m: PARAMS[m.group(1)], path)


def _validate(doc: dict[str, Any], schema: dict[str, Any], value: Any) -> None:
    jsonschema.validate(value, {**schema, "components": doc["components"]},
                        cls=jsonschema.Draft202012Validator)


def _answer_schema(doc: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    response = doc["paths"][path][method]["responses"][str(status)]
    return response["content"]["application/json"]["schema"]  # type: ignore[no-any-return]


def test_every_documented_answer_has_a_schema_and_errors_the_written_shape(
        doc: dict[str, Any]) -> None:
    for path, method, op in _operations(doc):
        for status, response in op["responses"].items():
            if status == "204":
                assert "content" not in response
                continue
            if path in ("/ping", "/version"):  # the MLflow scoring protocol's: text
                assert set(response["content"]) == {"text/plain"}, (path, status)
                continue
            schema = response["content"]["application/json"]["schema"]
            assert schema, (method, path, status)
            if int(status) >= 400 and not path.endswith("ready"):
                body = "V2ErrorBody" if path.startswith("/v2/") else "ErrorBody"
                expected: dict[str, Any] = {"$ref": f"#/components/schemas/{body}"}
                if path.endswith("/invocations") and status not in ("401", "403"):
                    mlflow = {"$ref": "#/components/schemas/MlflowErrorBody"}
                    # 413: the edge's body, or the route's for a body sent without a length
                    expected = {"anyOf": [expected, mlflow]} if status == "413" else mlflow
                assert schema == expected, (path, status)
    assert "HTTPValidationError" not in doc["components"]["schemas"]


def test_a_method_a_path_does_not_take_is_405_with_the_documented_allow(
        admin_client: TestClient, doc: dict[str, Any]) -> None:
    for path, item in doc["paths"].items():
        documented = {m.upper() for m in item}
        for method in sorted({m.upper() for m in METHODS} - documented):
            resp = admin_client.request(method, _concrete(path))
            assert resp.status_code == 405, (method, path, resp.text)
            allow = {m.strip() for m in resp.headers["allow"].split(",")}
            assert allow - {"HEAD", "OPTIONS"} == documented, (method, path)
            body = "V2ErrorBody" if path.startswith("/v2/") else "ErrorBody"
            if path.endswith("/invocations"):
                body = "MlflowErrorBody"
            _validate(doc, {"$ref": "#/components/schemas/" + body}, resp.json())


def test_the_v1_status_route_does_not_answer_on_the_predict_path(
        admin_client: TestClient) -> None:
    resp = admin_client.get("/v1/models/heart:predict")
    assert resp.status_code == 405 and resp.headers["allow"] == "POST"


def test_each_model_has_its_own_paths_and_no_generic_prediction_template(
        doc: dict[str, Any]) -> None:
    paths = set(doc["paths"])
    assert {"/models/heart/predict", "/models/heart/versions/1.0.0/predict",
            "/v1/models/heart:predict", "/v2/models/heart/infer",
            "/v2/models/heart/versions/1.0.0/infer", "/predict"} <= paths
    assert not {"/models/{name}/predict", "/v2/models/{name}/infer",
                "/v1/models/{name}:predict"} & paths


def test_the_record_schema_requires_every_feature_with_its_type(doc: dict[str, Any]) -> None:
    record = doc["components"]["schemas"]["HeartRecord"]
    assert record["required"] == ["age", "sex", "cp", "trestbps", "chol", "fbs", "restecg",
                                  "thalach", "exang", "oldpeak", "slope", "ca", "thal"]
    assert record["additionalProperties"] is False
    props = record["properties"]
    assert props["age"]["type"] == "integer" and props["age"]["maximum"] == 2**63 - 1
    assert props["sex"]["enum"] == [0, 1]
    assert props["thal"]["enum"] == ["fixed", "normal", "reversible"]
    assert props["oldpeak"] == {"type": "number", "minimum": -FLOAT_LIMIT,
                                "maximum": FLOAT_LIMIT, "example": props["oldpeak"]["example"]}
    row = doc["components"]["schemas"]["HeartRow"]
    assert len(row["prefixItems"]) == 13 and row["items"] is False


def test_unseen_categories_passing_drops_the_enum(heart_loaded: LoadedModel) -> None:
    app = create_app([heart_loaded], Settings(unseen_categories="pass"))
    with TestClient(app) as c:
        props = c.get("/openapi.json").json()["components"]["schemas"]["HeartRecord"][
            "properties"]
    assert "enum" not in props["thal"] and props["thal"]["type"] == "string"


@pytest.mark.parametrize("path", ["/models/heart/predict", "/predict/batch",
                                  "/v1/models/heart:predict", "/v2/models/heart/infer"])
def test_the_documented_example_is_accepted_and_answered_as_documented(
        admin_client: TestClient, doc: dict[str, Any], path: str) -> None:
    content = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    _validate(doc, content["schema"], content["example"])
    resp = admin_client.post(path, json=content["example"])
    assert resp.status_code == 200, resp.text
    _validate(doc, _answer_schema(doc, path, "post", 200), resp.json())


Case = tuple[str, str, Any, int]
"""(method, documented path, JSON body, status)."""


@pytest.mark.parametrize("case", [
    ("post", "/models/heart/predict", {"features": {"age": "x"}}, 422),
    ("post", "/models/heart/predict", {"features": {}, "instances": []}, 422),
    ("post", "/v1/models/heart:predict", {"rows": []}, 422),
    ("post", "/v2/models/heart/infer", {"inputs": [{"name": "age", "datatype": "FP64",
                                                    "shape": [1], "data": [1.0]}]}, 400),
    ("put", "/admin/models/{name}/traffic", {"arms": [{"version": "1.0.0", "weight": 0}]}, 422),
    ("put", "/admin/models/{name}/aliases/{alias}", {"version": "v1"}, 422),
], ids=["native", "native-two-shapes", "v1", "v2", "traffic-no-weight", "alias-not-semver"])
def test_bad_input_is_refused_by_the_document_and_by_the_server_alike(
        admin_client: TestClient, doc: dict[str, Any], case: Case) -> None:
    method, path, body, status = case
    schema = doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    with pytest.raises(jsonschema.ValidationError):
        _validate(doc, schema, body)
    resp = admin_client.request(method, _concrete(path), json=body)
    assert resp.status_code == status, resp.text
    _validate(doc, _answer_schema(doc, path, method, status), resp.json())


@pytest.mark.parametrize("case", [
    ("get", "/models/{name}", None, 404),
    ("get", "/v2/models/{name}", None, 404),
    ("put", "/admin/models/{name}/traffic", {"arms": [{"version": "9.9.9"}]}, 409),
    ("put", "/admin/models/{name}/aliases/{alias}", {"version": "1.0.0"}, 409),
], ids=["native-unknown-model", "v2-unknown-model", "traffic-unserved-version",
        "alias-without-registry"])
def test_state_conflicts_are_documented_with_the_body_they_have(
        admin_client: TestClient, doc: dict[str, Any], case: Case) -> None:
    """Schema-valid requests the server's state refuses: 404/409, never a 4xx for bad input."""
    method, path, body, status = case
    concrete = _concrete(path).replace("/models/heart", "/models/nope") if status == 404 else (
        _concrete(path))
    resp = admin_client.request(method, concrete, json=body)
    assert resp.status_code == status, resp.text
    _validate(doc, _answer_schema(doc, path, method, status), resp.json())


def test_admin_bodies_are_typed_request_models(doc: dict[str, Any]) -> None:
    def body(path: str, method: str) -> Any:
        return doc["paths"][path][method]["requestBody"]["content"]["application/json"][
            "schema"]

    assert body("/admin/models/{name}/aliases/{alias}", "put") == {
        "$ref": "#/components/schemas/AliasMove"}
    assert body("/admin/models/{name}/traffic", "put") == {
        "$ref": "#/components/schemas/TrafficPolicy"}
    assert "pattern" in doc["components"]["schemas"]["AliasMove"]["properties"]["version"]


def test_the_edge_refusals_are_documented_where_they_apply(heart_loaded: LoadedModel) -> None:
    app = create_app([heart_loaded], Settings(api_keys=["k"], max_body_bytes=100),
                     extensions=[admin_extension(None)])
    with TestClient(app, headers={"X-API-Key": "k"}) as c:
        doc = c.get("/openapi.json").json()
        predict = doc["paths"]["/models/heart/predict"]["post"]
        assert {"401", "413"} <= set(predict["responses"])
        assert predict["security"] == [{"bearer": []}, {"apiKey": []}]
        assert "security" not in doc["paths"]["/ready"]["get"]
        assert set(doc["paths"]["/admin/models"]["get"]["responses"]) == {"200", "403"}
        too_big = c.post("/models/heart/predict", content=b"{" + b" " * 200 + b"}")
        assert too_big.status_code == 413
        _validate(doc, _answer_schema(doc, "/models/heart/predict", "post", 413),
                  too_big.json())
        no_key = c.post("/models/heart/predict", json={}, headers={"X-API-Key": ""})
        assert no_key.status_code == 401
        _validate(doc, _answer_schema(doc, "/models/heart/predict", "post", 401),
                  no_key.json())


def test_an_unknown_path_answers_the_error_body(admin_client: TestClient,
                                                doc: dict[str, Any]) -> None:
    for path, schema in (("/nowhere", "ErrorBody"), ("/v2/nowhere", "V2ErrorBody")):
        resp = admin_client.get(path)
        assert resp.status_code == 404
        _validate(doc, {"$ref": f"#/components/schemas/{schema}"}, resp.json())
