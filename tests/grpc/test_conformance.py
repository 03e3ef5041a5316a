"""A real ``modelport serve`` answers tritonclient.grpc as REST V2 answers its clients.

Raw (tritonclient's default) and typed contents, the in-process predictions, the REST V2
bad-input table case for case, status codes, keys, health and reflection as grpc tools use
them, and the same metrics and prediction log as REST.
"""

from __future__ import annotations

import sqlite3
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from modelport.server.grpc import oip_pb2
from tests.grpc.conftest import ADMIN_KEY, KEY, Served, rest_infer
from tests.server.conftest import v2_columns
from tests.server.test_bad_input import V2_CASES

pytestmark = pytest.mark.e2e
AUTH = {"authorization": f"Bearer {KEY}"}
METADATA = (("authorization", f"Bearer {KEY}"),)
JSON_ONLY = {
    "inputs not a list": "a protobuf 'inputs' is always a list",
    "ragged data": "typed contents are flat: a nested, ragged 'data' cannot be written",
}
"""REST V2 bad-input cases that protobuf cannot express, and why."""


@pytest.fixture(scope="module")
def client(server: Served) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(server.target) as c:
        yield c


@pytest.fixture(scope="module")
def stub(server: Served) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def triton_inputs(meta: Any, rows: pd.DataFrame) -> list[triton.InferInput]:
    """One raw tensor per input of the model's metadata, from the frame's columns."""
    inputs = []
    for i, spec in enumerate(meta.inputs):
        column = rows[spec.name] if spec.name in rows else rows.iloc[:, i]
        arr = column.to_numpy().astype(object if spec.datatype == "BYTES" else
                                       {"INT64": np.int64}.get(spec.datatype, np.float64))
        tensor = triton.InferInput(spec.name, [len(rows)], spec.datatype)
        tensor.set_data_from_numpy(arr)
        inputs.append(tensor)
    return inputs


def test_tritonclient_defaults_get_the_in_process_answers(
        client: triton.InferenceServerClient, heart_package: Path,
        heart_features: pd.DataFrame) -> None:
    import joblib

    rows = heart_features.head(16)
    meta = client.get_model_metadata("heart", headers=AUTH)
    result = client.infer("heart", triton_inputs(meta, rows), headers=AUTH)
    model = joblib.load(heart_package / "model.joblib")
    np.testing.assert_array_equal(result.as_numpy("predict"), model.predict(rows))
    np.testing.assert_allclose(result.as_numpy("predict_proba"), model.predict_proba(rows),
                               atol=1e-12)
    response = result.get_response()
    assert (response.model_name, response.model_version) == ("heart", "1.0.0")


def typed_request(records: list[dict[str, Any]], **fields: Any) -> Any:
    """The REST V2 JSON body of ``records`` as a gRPC request with typed contents."""
    return to_grpc(v2_columns(records), **fields)


def to_grpc(body: dict[str, Any], **fields: Any) -> Any:
    """A REST V2 JSON body as the same gRPC request: each input's data in the typed
    contents field its values' Python type calls for."""
    request = service_pb2.ModelInferRequest(model_name="heart", **fields)
    for spec in body["inputs"]:
        tensor = request.inputs.add(name=spec["name"], datatype=spec["datatype"],
                                    shape=spec["shape"])
        data = spec["data"]
        if all(isinstance(v, str) for v in data):
            tensor.contents.bytes_contents.extend(v.encode() for v in data)
        elif all(isinstance(v, bool) for v in data):
            tensor.contents.bool_contents.extend(data)
        elif all(isinstance(v, int) for v in data):
            tensor.contents.int64_contents.extend(data)
        else:
            tensor.contents.fp64_contents.extend(data)
    for out in body.get("outputs", ()):
        request.outputs.add(name=out["name"])
    return request


def test_typed_contents_get_typed_answers_equal_to_raw_ones(
        client: triton.InferenceServerClient, stub: Any,
        records: list[dict[str, Any]], heart_features: pd.DataFrame) -> None:
    typed = stub.ModelInfer(typed_request(records[:5], id="typed-1"), metadata=METADATA)
    assert typed.id == "typed-1"
    assert not typed.raw_output_contents
    outputs = {o.name: o for o in typed.outputs}
    meta = client.get_model_metadata("heart", headers=AUTH)
    raw = client.infer("heart", triton_inputs(meta, heart_features.head(5)), headers=AUTH)
    assert list(outputs["predict"].contents.int64_contents) == raw.as_numpy("predict").tolist()
    np.testing.assert_allclose(
        np.reshape(outputs["predict_proba"].contents.fp64_contents, (5, 2)),
        raw.as_numpy("predict_proba"), atol=1e-12)


def test_requested_outputs_only_in_the_order_asked(stub: Any,
                                                   records: list[dict[str, Any]]) -> None:
    request = typed_request(records[:2])
    request.outputs.add(name="predict_proba")
    answer = stub.ModelInfer(request, metadata=METADATA)
    assert [o.name for o in answer.outputs] == ["predict_proba"]
    assert list(answer.outputs[0].shape) == [2, 2]


def test_metadata_and_readiness_match_rest(client: triton.InferenceServerClient,
                                           server: Served) -> None:
    rest = httpx.get(f"{server.url}/v2/models/heart", headers=AUTH).json()
    meta = client.get_model_metadata("heart", headers=AUTH)
    assert meta.name == rest["name"] and list(meta.versions) == rest["versions"]
    assert meta.platform == rest["platform"]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        (t["name"], t["datatype"], t["shape"]) for t in rest["inputs"]]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        (t["name"], t["datatype"], t["shape"]) for t in rest["outputs"]]
    ours = oip_pb2.ModelMetadataResponse.FromString(meta.SerializeToString())  # a field
    assert ours.parameters["content_type"].string_param == "pd"  # tritonclient's lacks
    assert ours.parameters["device"].string_param == rest["parameters"]["device"]
    assert client.is_server_live() and client.is_server_ready()  # open, as REST's probes
    assert client.is_model_ready("heart", headers=AUTH)
    assert client.is_model_ready("heart", "1.0.0", headers=AUTH)
    assert client.get_server_metadata(headers=AUTH).name == "modelport"


def test_a_versioned_model_name_answers_and_an_unknown_one_is_not_found(
        client: triton.InferenceServerClient, heart_features: pd.DataFrame,
        server: Served, records: list[dict[str, Any]]) -> None:
    meta = client.get_model_metadata("heart", headers=AUTH)
    inputs = triton_inputs(meta, heart_features.head(1))
    answer = client.infer("heart", inputs, model_version="1.0.0", headers=AUTH)
    assert answer.get_response().model_version == "1.0.0"
    for name, version in (("heart", "2"), ("nope", "")):
        rest = httpx.post(f"{server.url}/v2/models/{name}"
                          + (f"/versions/{version}" if version else "") + "/infer",
                          json=v2_columns(records[:1]), headers=AUTH)
        with pytest.raises(InferenceServerException) as err:
            client.infer(name, inputs, model_version=version, headers=AUTH)
        assert err.value.status() == "StatusCode.NOT_FOUND"
        assert err.value.message() == rest.json()["error"]


def grpc_refusal(stub: Any, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request, metadata=METADATA)
    return err.value


def test_the_bad_input_table_covers_every_rest_v2_case() -> None:
    grpc_cases = {c[0] for c in V2_CASES} - set(JSON_ONLY)
    assert grpc_cases | set(JSON_ONLY) == {c[0] for c in V2_CASES}
    assert len(grpc_cases) >= 11


@pytest.mark.parametrize(("body_of", "words"), [c[1:] for c in V2_CASES
                                                if c[0] not in JSON_ONLY],
                         ids=[c[0] for c in V2_CASES if c[0] not in JSON_ONLY])
def test_bad_input_is_invalid_argument_in_the_words_of_rest_v2(
        server: Served, stub: Any, records: list[dict[str, Any]], body_of: Any,
        words: list[str]) -> None:
    body = body_of(records)
    rest = rest_infer(server, body)
    assert rest.status_code == 400, rest.text
    err = grpc_refusal(stub, to_grpc(body))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == rest.json()["error"]
    for word in words:
        assert word in err.details()


def raw_request(records: list[dict[str, Any]], *, nan: str | None = None,
                size_delta: int = 0) -> Any:
    """Every input as raw contents; ``nan`` puts NaN in that feature, ``size_delta`` adds bytes
    to the first input's entry (as REST's binary cases change binary_data_size)."""
    request = to_grpc(v2_columns(records))
    for i, tensor in enumerate(request.inputs):
        values = (float("nan"),) if tensor.name == nan else _values(tensor.contents)
        if tensor.datatype == "BYTES":
            raw = b"".join(struct.pack("<I", len(v)) + v for v in values)
        else:
            raw = np.asarray(values, "<i8" if tensor.datatype == "INT64" else "<f8").tobytes()
        if i == 0 and size_delta:
            raw = raw + b"\x00" * size_delta if size_delta > 0 else raw[:size_delta]
        request.raw_input_contents.append(raw)
        tensor.ClearField("contents")
    return request


def _values(contents: Any) -> tuple[Any, ...]:
    for field in ("bytes_contents", "int64_contents", "fp64_contents"):
        if getattr(contents, field):
            return tuple(getattr(contents, field))
    return ()


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"nan": "oldpeak"}, ["oldpeak", "missing value"]),
    ({"size_delta": -1}, ["raw_input_contents[0]"]),
    ({"size_delta": 4}, ["raw_input_contents[0]"]),
], ids=["NaN in a binary tensor", "byte count too small", "byte count too large"])
def test_bad_raw_contents_are_invalid_argument_naming_the_entry(
        stub: Any, records: list[dict[str, Any]], kwargs: dict[str, Any],
        words: list[str]) -> None:
    """REST's binary-extension cases (binary_data_size becomes raw_input_contents[i])."""
    err = grpc_refusal(stub, raw_request(records[:1], **kwargs))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    for word in words:
        assert word in err.details()


def test_a_message_over_the_limit_is_resource_exhausted(stub: Any) -> None:
    request = service_pb2.ModelInferRequest(model_name="heart")
    request.inputs.add(name="age", datatype="INT64", shape=[10_000])
    request.raw_input_contents.append(b"\x00" * 80_000)  # over the server's 64 KiB
    assert grpc_refusal(stub, request).code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize(("metadata", "code"), [
    ((), grpc.StatusCode.UNAUTHENTICATED),
    ((("x-api-key", "wrong"),), grpc.StatusCode.UNAUTHENTICATED),
    ((("x-api-key", KEY),), grpc.StatusCode.OK),
    ((("authorization", f"Bearer {ADMIN_KEY}"),), grpc.StatusCode.OK),
], ids=["no key", "wrong key", "x-api-key", "admin key"])
def test_prediction_needs_a_key_from_metadata(stub: Any, records: list[dict[str, Any]],
                                              metadata: Any, code: grpc.StatusCode) -> None:
    try:
        stub.ModelInfer(typed_request(records[:1]), metadata=metadata)
        got = grpc.StatusCode.OK
    except grpc.RpcError as err:
        got = err.code()
    assert got == code


def test_health_answers_as_grpc_health_probe_expects(server: Served) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as err:
            health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()


def test_reflection_describes_the_service_as_grpcurl_reads_it(server: Served) -> None:
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    with grpc.insecure_channel(server.target) as channel:
        intercepted = grpc.intercept_channel(channel, _Metadata(METADATA))
        db = ProtoReflectionDescriptorDatabase(intercepted)
        services = set(db.get_services())
        assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services
        pool = DescriptorPool(db)
        service = pool.FindServiceByName("inference.GRPCInferenceService")
        methods = {m.name for m in service.methods}
        assert {"ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
                "ModelInfer", "RepositoryIndex", "RepositoryModelLoad",
                "RepositoryModelUnload"} <= methods
        infer = pool.FindMessageTypeByName("inference.ModelInferRequest")
        assert infer.fields_by_name["raw_input_contents"].number == 7
        pool.FindServiceByName("grpc.health.v1.Health")


class _Metadata(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):  # type: ignore[misc]
    """Adds the key to every call (grpcurl's -H)."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def _details(self, details: Any) -> Any:
        return details._replace(metadata=(*(details.metadata or ()), *self._metadata))

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any,
                              request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_stream(self, continuation: Callable[..., Any], details: Any,
                                requests: Any) -> Any:
        return continuation(self._details(details), requests)


def scrape(server: Served) -> str:
    return httpx.get(f"{server.url}/metrics", headers=AUTH).text


def sample(text: str, name: str, **labels: str) -> float:
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and all(w in line for w in want))


def test_grpc_calls_count_in_the_request_metrics_with_a_protocol_label(
        server: Served, stub: Any, records: list[dict[str, Any]]) -> None:
    route = {"route": "/inference.GRPCInferenceService/ModelInfer", "protocol": "grpc",
             "model": "heart"}
    before, drift_before = scrape(server), drift_rows(server)
    stub.ModelInfer(typed_request(records[:3]), metadata=METADATA)
    bad = typed_request(records[:1])
    bad.outputs.add(name="logits")
    grpc_refusal(stub, bad)
    after = scrape(server)
    for status, more in (("200", 1), ("400", 1)):
        assert sample(after, "modelport_requests_total", status=status, **route) == sample(
            before, "modelport_requests_total", status=status, **route) + more
    assert sample(after, "modelport_predictions_total", model="heart") >= sample(
        before, "modelport_predictions_total", model="heart") + 3
    assert drift_rows(server) == drift_before + 3  # the drift monitor counted the rows


def drift_rows(server: Served) -> int:
    counts = httpx.get(f"{server.url}/monitoring/drift/heart/counts", headers=AUTH).json()
    return int(counts["total_rows"])


def test_grpc_predictions_reach_the_prediction_log(server: Served, stub: Any,
                                                   records: list[dict[str, Any]]) -> None:
    call = stub.ModelInfer.with_call(typed_request(records[:2]),
                                     metadata=(*METADATA, ("x-request-id", "grpc-log-1")))
    trailing = dict(call[1].trailing_metadata())
    assert trailing["x-request-id"] == "grpc-log-1"
    assert (trailing["x-model-name"], trailing["x-model-version"]) == ("heart", "1.0.0")
    assert server.workdir is not None
    deadline = time.monotonic() + 20
    found: list[Any] = []
    while not found and time.monotonic() < deadline:
        time.sleep(0.2)
        with sqlite3.connect(server.workdir / "predictions.db") as db:
            found = db.execute("SELECT route, row_index FROM modelport_predictions "
                               "WHERE request_id = ?", ("grpc-log-1",)).fetchall()
    assert sorted(found) == [("grpc", 0), ("grpc", 1)]


def test_repository_rpcs_answer_only_to_the_admin_key(
        client: triton.InferenceServerClient) -> None:
    """Index, unload and load: a prediction key is PERMISSION_DENIED; runs last (it unloads)."""
    with pytest.raises(InferenceServerException) as err:
        client.unload_model("heart", headers=AUTH)
    assert err.value.status() == "StatusCode.PERMISSION_DENIED"
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    index = client.get_model_repository_index(headers=admin)
    assert [(m.name, m.version, m.state) for m in index.models] == [("heart", "1.0.0", "READY")]
    client.unload_model("heart", headers=admin)
    with pytest.raises(InferenceServerException) as gone:
        client.is_model_ready("heart", headers=AUTH)
    assert gone.value.status() == "StatusCode.NOT_FOUND"
    index = client.get_model_repository_index(headers=admin)
    assert [(m.name, m.state, m.reason) for m in index.models] == [
        ("heart", "UNAVAILABLE", "unloaded")]
    client.load_model("heart", headers=admin)
    assert client.is_model_ready("heart", headers=AUTH)
