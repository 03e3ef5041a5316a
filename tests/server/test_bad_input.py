"""Bad input: a clear 4xx naming the field/row and the problem, for every protocol — never 500."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from tests.server.conftest import v2_columns

Records = list[dict[str, Any]]


def _with(rec: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**rec, **changes}


def _without(rec: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k != key}


# (id, build records from two valid ones, expected words in the error)
RECORD_CASES: list[tuple[str, Callable[[Records], Any], list[str]]] = [
    ("missing feature", lambda r: [r[0], _without(r[1], "chol")], ["row 1", "chol", "missing"]),
    ("unknown feature", lambda r: [_with(r[0], height=180)], ["height", "unknown feature"]),
    ("string for a number", lambda r: [_with(r[0], age="abc")], ["age", "expected a number",
                                                                  "'abc'"]),
    ("null where not nullable", lambda r: [_with(r[0], oldpeak=None)], ["oldpeak", "missing"]),
    ("boolean for a number", lambda r: [_with(r[0], chol=True)], ["chol", "expected a number"]),
    ("fraction for an integer", lambda r: [_with(r[0], age=63.5)], ["age", "integer"]),
    ("unseen category", lambda r: [r[0], _with(r[1], thal="weird")], ["row 1", "thal",
                                                                       "unseen category"]),
    ("unseen numeric category", lambda r: [_with(r[0], cp=9)], ["cp", "unseen category"]),
    ("number for a string", lambda r: [_with(r[0], thal=3)], ["thal", "expected a string"]),
    ("empty batch", lambda r: [], ["empty"]),
    ("too many rows", lambda r: r[:1] * 101, ["101 rows", "limit of 100"]),
    ("record is not an object", lambda r: [r[0], 5], ["row 1", "expected an object"]),
]


@pytest.mark.parametrize(("records_of", "words"), [c[1:] for c in RECORD_CASES],
                         ids=[c[0] for c in RECORD_CASES])
@pytest.mark.parametrize("route", ["/predict", "/models/heart/predict", "/v1/models/heart:predict"])
def test_bad_records_are_422_naming_the_problem(client: TestClient, records: Records,
                                                route: str, records_of: Any,
                                                words: list[str]) -> None:
    resp = client.post(route, json={"instances": records_of(records)})
    assert resp.status_code == 422, resp.text
    for word in words:
        assert word in resp.json()["error"]


ROW_CASES = [
    ("short row", lambda row: [row[:-1]], ["row 0", "expected 13 values", "got 12"]),
    ("long row", lambda row: [[*row, 1]], ["expected 13 values", "got 14"]),
    ("row is a number", lambda row: [3], ["row 0", "expected a list"]),
    ("string in a row", lambda row: [["x", *row[1:]]], ["age", "expected a number"]),
]


@pytest.mark.parametrize(("rows_of", "words"), [c[1:] for c in ROW_CASES],
                         ids=[c[0] for c in ROW_CASES])
@pytest.mark.parametrize("route", ["/predict", "/v1/models/heart:predict"])
def test_bad_rows_are_422(client: TestClient, records: Records, route: str, rows_of: Any,
                          words: list[str]) -> None:
    resp = client.post(route, json={"instances": rows_of(list(records[0].values()))})
    assert resp.status_code == 422, resp.text
    for word in words:
        assert word in resp.json()["error"]


BODY_CASES = [
    ("malformed JSON", b'{"features": {', 422, "malformed JSON"),
    ("empty body", b"", 422, "empty"),
    ("JSON array", b"[1, 2]", 422, "expected a JSON object"),
    ("no known key", b'{"rows": []}', 422, "expected 'features'"),
    ("features not an object", b'{"features": 5}', 422, "feature name or a list"),
    ("features row too short", b'{"features": [1, 2]}', 422, "expected 13 values"),
    ("instances not a list", b'{"instances": {"a": 1}}', 422, "instances"),
    ("NaN literal", b'{"features": {"age": NaN}}', 422, "malformed JSON"),
]


@pytest.mark.parametrize(("body", "status", "word"), [c[1:] for c in BODY_CASES],
                         ids=[c[0] for c in BODY_CASES])
def test_bad_native_bodies(client: TestClient, body: bytes, status: int, word: str) -> None:
    resp = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == status, resp.text
    assert word in resp.json()["error"]
    assert resp.json()["request_id"]


def test_body_over_the_limit_is_413(client: TestClient, records: Records) -> None:
    body = orjson.dumps({"instances": records * 300})  # > 200 kB
    resp = client.post("/predict", content=body)
    assert resp.status_code == 413
    assert "limit" in resp.json()["error"]


def test_chunked_body_over_the_limit_is_413(client: TestClient) -> None:
    def chunks() -> Any:
        for _ in range(30):
            yield b" " * 10_000

    resp = client.post("/predict", content=chunks())
    assert resp.status_code == 413


@pytest.mark.parametrize(("route", "word"), [
    ("/models/nope/predict", "'nope' is not served"),
    ("/models/heart/versions/9.9.9/predict", "no version '9.9.9'"),
    ("/v1/models/nope:predict", "'nope'"),
    ("/v2/models/nope/infer", "'nope'"),
    ("/v2/models/heart/versions/2/infer", "no version '2'"),
], ids=["native model", "native version", "v1 model", "v2 model", "v2 version"])
def test_unknown_model_or_version_is_404(client: TestClient, records: Records, route: str,
                                         word: str) -> None:
    resp = client.post(route, json={"instances": records[:1]})
    assert resp.status_code == 404
    assert word in resp.json()["error"]


def _v2(records: Records, **change: Any) -> dict[str, Any]:
    body = v2_columns(records)
    name = change.pop("input", None)
    if name is not None:
        for spec in body["inputs"]:
            if spec["name"] == name:
                spec.update(change)
    return body


V2_CASES: list[tuple[str, Callable[[Records], Any], list[str]]] = [
    ("shape does not match data", lambda r: _v2(r[:2], input="age", shape=[3]),
     ["age", "needs 3 values, got 2"]),
    ("strings for FP64", lambda r: _v2(r[:1], input="oldpeak", data=["x"]),
     ["oldpeak", "FP64 needs numbers"]),
    ("unknown datatype", lambda r: _v2(r[:1], input="age", datatype="FLOAT"),
     ["age", "unknown datatype"]),
    ("negative shape", lambda r: _v2(r[:1], input="age", shape=[-1]), ["age", "shape"]),
    ("unknown input", lambda r: {"inputs": [*_v2(r[:1])["inputs"], {
        "name": "height", "shape": [1], "datatype": "FP64", "data": [1.0]}]},
     ["height", "unknown input"]),
    ("missing input", lambda r: {"inputs": _v2(r[:1])["inputs"][1:]}, ["age", "missing input"]),
    ("no inputs", lambda r: {"inputs": []}, ["empty"]),
    ("inputs not a list", lambda r: {"inputs": 3}, ["'inputs'"]),
    ("unseen category", lambda r: _v2(r[:1], input="thal", data=["weird"]),
     ["thal", "unseen category"]),
    ("wrong matrix width", lambda r: {"inputs": [{"name": "x", "shape": [1, 3],
                                                  "datatype": "FP64", "data": [1, 2, 3]}]},
     ["shape [rows, 13]"]),
    ("columns of different length", lambda r: _v2(r[:2], input="age", shape=[1], data=[50]),
     ["different lengths"]),
    ("unknown output", lambda r: _v2(r[:1]) | {"outputs": [{"name": "logits"}]},
     ["unknown output 'logits'"]),
    ("ragged data", lambda r: _v2(r[:1], input="age", shape=[2], data=[[1], [2, 3]]),
     ["age"]),
]


@pytest.mark.parametrize(("body_of", "words"), [c[1:] for c in V2_CASES],
                         ids=[c[0] for c in V2_CASES])
def test_bad_v2_requests_are_400_with_error(client: TestClient, records: Records,
                                            body_of: Any, words: list[str]) -> None:
    resp = client.post("/v2/models/heart/infer", json=body_of(records))
    assert resp.status_code == 400, resp.text
    assert set(resp.json()) == {"error"}
    for word in words:
        assert word in resp.json()["error"]


def _binary(records: Records, nan_age: bool = False, size_delta: int = 0) -> tuple[bytes, int]:
    body = v2_columns(records[:1])
    blobs = []
    for spec in body["inputs"]:
        if spec["name"] in ("age", "oldpeak"):
            value = float("nan") if (nan_age and spec["name"] == "oldpeak") else float(
                spec["data"][0])
            # an integer feature takes an integer datatype
            raw = struct.pack("<q", int(value)) if spec["name"] == "age" else struct.pack(
                "<d", value)
            spec["datatype"] = "INT64" if spec["name"] == "age" else "FP64"
            spec["parameters"] = {"binary_data_size": len(raw) + size_delta}
            del spec["data"]
            blobs.append(raw)
    head = orjson.dumps(body)
    return head + b"".join(blobs), len(head)


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"nan_age": True}, ["oldpeak", "missing value"]),
    ({"size_delta": -1}, ["binary_data_size"]),
    ({"size_delta": 4}, ["binary_data_size"]),
], ids=["NaN in a binary tensor", "byte count too small", "byte count too large"])
def test_bad_binary_v2_requests_are_400(client: TestClient, records: Records,
                                        kwargs: dict[str, Any], words: list[str]) -> None:
    payload, head = _binary(records, **kwargs)
    resp = client.post("/v2/models/heart/infer", content=payload,
                       headers={"Inference-Header-Content-Length": str(head)})
    assert resp.status_code == 400, resp.text
    for word in words:
        assert word in resp.json()["error"]


def test_binary_header_longer_than_body_is_400(client: TestClient) -> None:
    resp = client.post("/v2/models/heart/infer", content=b'{"inputs": []}',
                       headers={"Inference-Header-Content-Length": "999"})
    assert resp.status_code == 400
    assert "Inference-Header-Content-Length" in resp.json()["error"]


def test_server_keeps_answering_after_bad_input(client: TestClient, records: Records) -> None:
    client.post("/predict", content=b"{")
    assert client.post("/predict", json={"features": records[0]}).status_code == 200
