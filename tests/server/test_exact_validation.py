"""The server accepts exactly what the OpenAPI document admits: the edges a property-based
tester finds (int64 bounds, JSON integers past 64 bits, booleans for numbers, V2 datatypes and
nesting, optional V2 fields of the wrong type) are clear 4xx naming the field, and the values
at the documented bounds are answered."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from modelport.errors import InvalidInput
from modelport.signature import FLOAT_LIMIT, Feature, Signature
from tests.server.conftest import v2_columns

Records = list[dict[str, Any]]


def _native(client: TestClient, body: Any) -> Any:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post("/models/heart/predict", content=raw,
                       headers={"Content-Type": "application/json"})


@pytest.mark.parametrize(("change", "field"), [
    ({"age": 2**63}, "age"),
    ({"sex": True}, "sex"),
    ({"oldpeak": FLOAT_LIMIT + 1}, "oldpeak"),
    ({"oldpeak": 1e300}, "oldpeak"),
    ({"age": 2.0**60}, "age"),
], ids=["int-past-int64", "boolean-for-an-integer-code", "float-past-the-limit",
        "huge-float", "integer-as-an-inexact-float"])
def test_a_native_value_outside_the_documented_range_is_422(
        client: TestClient, records: Records, change: dict[str, Any], field: str) -> None:
    resp = _native(client, {"features": {**records[0], **change}})
    assert resp.status_code == 422, resp.text
    assert resp.json()["field"] == field


def test_a_json_integer_past_64_bits_does_not_pass_as_the_nearest_int64(
        client: TestClient, records: Records) -> None:
    """The JSON parser turns -2**63-1 into the float -2**63, a valid int64: refused anyway."""
    text = orjson.dumps({"features": {**records[0], "age": 0}}).replace(
        b'"age":0', b'"age":-9223372036854775809')
    resp = _native(client, text)
    assert resp.status_code == 422 and resp.json()["field"] == "age"


@pytest.mark.parametrize("change", [{"age": 2**63 - 1}, {"age": -(2**63)},
                                    {"oldpeak": FLOAT_LIMIT}, {"oldpeak": -FLOAT_LIMIT},
                                    {"age": 60.0}],
                         ids=["int64-max", "int64-min", "float-limit", "minus-float-limit",
                              "whole-float"])
def test_values_at_the_documented_bounds_are_answered(client: TestClient, records: Records,
                                                      change: dict[str, Any]) -> None:
    resp = _native(client, {"features": {**records[0], **change}})
    assert resp.status_code == 200, resp.text


def test_two_body_shapes_at_once_are_refused(client: TestClient, records: Records) -> None:
    resp = _native(client, {"features": records[0], "instances": records[:2]})
    assert resp.status_code == 422 and resp.json()["field"] == "instances"


def test_integers_keep_their_exact_value_beside_floats() -> None:
    sig = Signature((Feature("n", "int"),))
    batch = sig.from_columns({"n": [2**63 - 1, 5.0]})
    assert batch.data["n"].tolist() == [2**63 - 1, 5]
    with pytest.raises(InvalidInput, match="outside the integer range"):
        sig.from_columns({"n": [2**63, 5.0]})


def _v2(records: Records, **changes: Any) -> dict[str, Any]:
    """A one-row V2 request with some tensors changed (by feature name) or top-level fields."""
    body = v2_columns(records[:1])
    for spec in body["inputs"]:
        spec.update(changes.pop(spec["name"], {}))
    return {**body, **changes}


@pytest.mark.parametrize(("changes", "field"), [
    ({"age": {"datatype": "FP64", "data": [63.0]}}, "age"),
    ({"age": {"datatype": "INT8", "data": [300]}}, "age"),
    ({"sex": {"datatype": "UINT8", "data": [-1]}}, "sex"),
    ({"age": {"datatype": "INT64", "data": [True]}}, "age"),
    ({"oldpeak": {"datatype": "FP16", "data": [70000.0]}}, "oldpeak"),
    ({"age": {"data": 63}}, "age"),
    ({"age": {"data": [[63]]}}, "age"),
    ({"age": {"datatype": {}}}, "age"),
    ({"age": {"parameters": []}}, "age"),
    ({"id": 5}, "id"),
    ({"parameters": []}, "parameters"),
    ({"parameters": {"content_type": 1}}, "parameters.content_type"),
    ({"parameters": {"binary_data_output": "yes"}}, "parameters.binary_data_output"),
    ({"outputs": {}}, "outputs"),
    ({"outputs": [{"name": "predict", "parameters": {"binary_data": 1}}]},
     "outputs.0.binary_data"),
], ids=["float-datatype-for-an-integer", "past-int8", "negative-uint", "boolean-in-int64",
        "past-fp16", "scalar-data", "nesting-unlike-shape", "datatype-not-a-string",
        "parameters-not-an-object", "id-not-a-string", "request-parameters-not-an-object",
        "content-type-not-a-string", "binary-flag-not-a-boolean", "outputs-not-a-list",
        "output-binary-flag-not-a-boolean"])
def test_a_v2_request_the_document_refuses_is_400_naming_the_field(
        client: TestClient, records: Records, changes: dict[str, Any], field: str) -> None:
    resp = client.post("/v2/models/heart/infer", json=_v2(records, **copy.deepcopy(changes)))
    assert resp.status_code == 400, resp.text
    assert f"'{field}'" in resp.json()["error"]


@pytest.mark.parametrize("changes", [
    {"age": {"datatype": "INT8", "data": [63]}},
    {"age": {"data": [63.0]}},
    {"age": {"shape": [1, 1], "data": [[63]]}},
    {"oldpeak": {"datatype": "INT32", "data": [2]}},
    {"id": "mine", "parameters": {"content_type": "pd", "binary_data_output": False}},
], ids=["narrow-integer-type", "whole-float-in-int64", "nested-as-its-shape",
        "integers-for-a-float", "optional-fields"])
def test_a_v2_request_the_document_admits_is_answered(
        client: TestClient, records: Records, changes: dict[str, Any]) -> None:
    resp = client.post("/v2/models/heart/infer", json=_v2(records, **copy.deepcopy(changes)))
    assert resp.status_code == 200, resp.text
    assert np.isfinite(resp.json()["outputs"][1]["data"]).all()


def _past(bound: float, up: bool) -> float:
    """One step outside an inclusive bound, as a property-based tester takes it."""
    step = 1 if isinstance(bound, int) else max(1.0, float(np.spacing(abs(bound))))
    return bound + step if up else bound - step


@pytest.mark.parametrize("feature", ["age", "oldpeak"])
def test_every_documented_v2_bound_is_the_exact_edge(client: TestClient, records: Records,
                                                     feature: str) -> None:
    """At each datatype's documented minimum and maximum the request is answered; one step
    past it, refused (rounding to the datatype included)."""
    doc = client.get("/openapi.json").json()
    variants = doc["components"]["schemas"]["HeartV2Request"]["properties"]["inputs"][
        "items"]["oneOf"]
    for variant in variants:
        props = variant["properties"]
        if props["name"]["const"] != feature or props["shape"]["const"] != [1]:
            continue
        item, datatype = props["data"]["items"], props["datatype"]["const"]
        for bound, up in ((item["maximum"], True), (item["minimum"], False)):
            for value, status in ((bound, 200), (_past(bound, up), 400)):
                body = _v2(records, **{feature: {"datatype": datatype, "data": [value]}})
                resp = client.post("/v2/models/heart/infer", json=body)
                assert resp.status_code == status, (datatype, value, resp.text)


@pytest.mark.parametrize("value", [10**400, -(10**400), 2**60],
                         ids=["past-float64", "minus-past-float64", "past-the-limit"])
def test_a_float_feature_refuses_integers_past_the_limit_naming_the_field(value: int) -> None:
    with pytest.raises(InvalidInput, match="out of range") as err:
        Signature((Feature("x"),)).from_records([{"x": value}])
    assert err.value.field == "x"
