"""The gRPC codec: every OIP datatype typed and raw, and the same rules (and words) as REST V2."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelport.errors import InvalidInput
from modelport.server.grpc import oip_pb2 as pb
from modelport.server.grpc.codec import (
    InferCall,
    check_outputs,
    decode_infer,
    encode_infer,
    parameters_of,
    typed_values,
)
from modelport.server.v2codec import cast_values, decode_request
from modelport.signature import Feature, Signature
from modelport.types import Outputs

FIELD = {"BOOL": "bool_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
         "UINT32": "uint_contents", "UINT64": "uint64_contents", "INT8": "int_contents",
         "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
         "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}
NUMPY = {"BOOL": "bool", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
         "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "FP16": "<f2",
         "FP32": "<f4", "FP64": "<f8"}
VALUES: dict[str, list[Any]] = {
    "BOOL": [True, False, True], "UINT8": [0, 7, 255], "UINT16": [0, 9, 65535],
    "UINT32": [0, 1, 2**32 - 1], "UINT64": [0, 1, 2**64 - 1], "INT8": [-128, 0, 127],
    "INT16": [-5, 0, 32767], "INT32": [-(2**31), 0, 2**31 - 1],
    "INT64": [-(2**63), 0, 2**63 - 1], "FP16": [0.5, -1.0, 2.0], "FP32": [0.5, -1.25, 3.0],
    "FP64": [0.1, -2.5, 1e300], "BYTES": ["a", "", "héllo"],
}


def typed(datatype: str, values: list[Any], *, name: str = "x",
          field: str | None = None) -> pb.ModelInferRequest:
    """A request with one typed input (FP16 travels in fp32_contents)."""
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name=name, datatype=datatype, shape=[len(values)])
    where = field or FIELD.get(datatype, "fp32_contents")
    if where == "bytes_contents":
        values = [v.encode() if isinstance(v, str) else v for v in values]
    getattr(tensor.contents, where).extend(values)
    return request


def raw_bytes(datatype: str, values: list[Any]) -> bytes:
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
    return np.asarray(values, dtype=NUMPY[datatype]).tobytes()


def raw(datatype: str, values: list[Any]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype=datatype, shape=[len(values)])
    request.raw_input_contents.append(raw_bytes(datatype, values))
    return request


def json_error(spec: dict[str, Any]) -> str:
    """What the REST V2 decoder says about one JSON input."""
    with pytest.raises(InvalidInput) as err:
        decode_request(orjson.dumps({"inputs": [spec]}), None)
    return err.value.message


def grpc_error(request: pb.ModelInferRequest) -> str:
    with pytest.raises(InvalidInput) as err:
        decode_infer(request)
    return err.value.message


@pytest.mark.parametrize("datatype", [d for d in VALUES if d != "FP16"])
def test_typed_contents_of_every_datatype_decode_to_its_numpy_type(datatype: str) -> None:
    tensor = decode_infer(typed(datatype, VALUES[datatype])).tensors[0]
    assert tensor.shape == (3,)
    if datatype == "BYTES":
        assert tensor.data.tolist() == VALUES["BYTES"]
    else:
        assert tensor.data.dtype == np.dtype(NUMPY[datatype])
        assert tensor.data.tolist() == VALUES[datatype]


@pytest.mark.parametrize("datatype", list(VALUES))
def test_raw_contents_of_every_datatype_decode_to_its_numpy_type(datatype: str) -> None:
    call = decode_infer(raw(datatype, VALUES[datatype]))
    assert call.raw
    tensor = call.tensors[0]
    if datatype == "BYTES":
        assert tensor.data.tolist() == VALUES["BYTES"]
    else:
        assert tensor.data.dtype == np.dtype(NUMPY[datatype])
        assert tensor.data.tolist() == VALUES[datatype]


def test_fp16_typed_travels_as_fp32_contents() -> None:
    tensor = decode_infer(typed("FP16", [0.5, 2.0])).tensors[0]
    assert tensor.data.dtype == np.float16
    assert tensor.data.tolist() == [0.5, 2.0]


def test_a_shape_reshapes_the_flat_values() -> None:
    request = pb.ModelInferRequest()
    t = request.inputs.add(name="x", datatype="FP64", shape=[2, 3])
    t.contents.fp64_contents.extend([1, 2, 3, 4, 5, 6])
    assert decode_infer(request).tensors[0].data.tolist() == [[1, 2, 3], [4, 5, 6]]


# (id, JSON input spec, the same input as a typed gRPC tensor): both must be refused in the
# same words, because both go through the same rules
SAME_WORDS = [
    ("out of range", {"name": "x", "datatype": "INT8", "shape": [1], "data": [300]},
     lambda: typed("INT8", [300])),
    ("negative for unsigned", {"name": "x", "datatype": "UINT8", "shape": [1], "data": [-1]},
     lambda: typed("UINT8", [-1], field="int64_contents")),
    ("strings for a number", {"name": "x", "datatype": "FP64", "shape": [1], "data": ["a"]},
     lambda: typed("FP64", ["a"], field="bytes_contents")),
    ("fraction for an integer", {"name": "x", "datatype": "INT64", "shape": [1],
                                 "data": [1.5]}, lambda: typed("INT64", [1.5],
                                                               field="fp64_contents")),
    ("numbers for BYTES", {"name": "x", "datatype": "BYTES", "shape": [1], "data": [1]},
     lambda: typed("BYTES", [1], field="int64_contents")),
    ("numbers for BOOL", {"name": "x", "datatype": "BOOL", "shape": [1], "data": [1]},
     lambda: typed("BOOL", [1], field="int64_contents")),
    ("too few values", {"name": "x", "datatype": "FP64", "shape": [3], "data": [1.0, 2.0]},
     lambda: _shaped(typed("FP64", [1.0, 2.0]), [3])),
    ("unknown datatype", {"name": "x", "datatype": "FLOAT", "shape": [1], "data": [1.0]},
     lambda: typed("FLOAT", [1.0], field="fp64_contents")),
    ("negative dimension", {"name": "x", "datatype": "FP64", "shape": [-1], "data": [1.0]},
     lambda: _shaped(typed("FP64", [1.0]), [-1])),
]


def _shaped(request: pb.ModelInferRequest, shape: list[int]) -> pb.ModelInferRequest:
    del request.inputs[0].shape[:]
    request.inputs[0].shape.extend(shape)
    return request


@pytest.mark.parametrize(("spec", "request_of"), [c[1:] for c in SAME_WORDS],
                         ids=[c[0] for c in SAME_WORDS])
def test_typed_contents_are_refused_in_the_words_of_rest_v2(spec: dict[str, Any],
                                                            request_of: Any) -> None:
    assert grpc_error(request_of()) == json_error(spec)


def test_whole_floats_are_integers_as_in_json() -> None:
    tensor = decode_infer(typed("INT64", [3.0], field="fp64_contents")).tensors[0]
    assert tensor.data.dtype == np.int64
    assert tensor.data.tolist() == [3]


@pytest.mark.parametrize(("change", "words"), [
    (lambda r: r.inputs[0].contents.fp64_contents.append(1.0),
     "both contents and raw_input_contents"),
    (lambda r: r.raw_input_contents.append(b"x"), "2 entries for 1 inputs"),
    (lambda r: r.inputs[0].ClearField("name"), "each input needs a 'name'"),
    (lambda r: r.outputs.add(), "each output needs a 'name'"),
    (lambda r: r.parameters["content_type"].CopyFrom(pb.InferParameter(int64_param=1)),
     "field 'parameters.content_type': must be a string"),
], ids=["contents and raw", "raw entries miscounted", "input without a name",
        "output without a name", "content_type not a string"])
def test_malformed_requests_are_invalid_input(change: Any, words: str) -> None:
    request = raw("FP64", [1.0])
    change(request)
    assert words in grpc_error(request)


def test_raw_contents_of_the_wrong_size_name_the_entry() -> None:
    request = raw("INT64", [1])
    request.raw_input_contents[0] = b"\x00" * 7
    message = grpc_error(request)
    assert message == "field 'x': 1 INT64 values need 8 bytes, raw_input_contents[0] says 7"


def test_values_in_two_contents_fields_are_refused() -> None:
    request = typed("FP64", [1.0])
    request.inputs[0].contents.int64_contents.append(1)
    assert "fp64_contents" in grpc_error(request)


def test_no_inputs_is_refused_as_on_rest() -> None:
    with pytest.raises(InvalidInput) as rest:
        decode_request(b'{"inputs": []}', None)
    assert grpc_error(pb.ModelInferRequest(model_name="m")) == rest.value.message


def test_parameters_become_plain_values() -> None:
    request = pb.ModelInferRequest()
    request.parameters["content_type"].string_param = "np"
    request.parameters["n"].int64_param = 3
    request.parameters["flag"].bool_param = True
    request.parameters["empty"].CopyFrom(pb.InferParameter())
    assert parameters_of(request.parameters) == {"content_type": "np", "n": 3, "flag": True,
                                                 "empty": None}


SIG = Signature(features=(Feature("a", "float"),), classes=("no", "yes"), has_proba=True,
                task="classification")
OUTPUTS = Outputs(np.asarray(["yes", "no"], dtype=object), np.asarray([[0.2, 0.8], [0.9, 0.1]]),
                  ["no", "yes"])


def test_a_raw_request_gets_raw_outputs() -> None:
    call = InferCall([], (), raw=True)
    response = encode_infer(call, OUTPUTS, model="m", version="1", request_id="r")
    assert [o.name for o in response.outputs] == ["predict", "predict_proba"]
    assert [o.datatype for o in response.outputs] == ["BYTES", "FP64"]
    assert list(response.outputs[1].shape) == [2, 2]
    labels, proba = response.raw_output_contents
    assert labels == struct.pack("<I", 3) + b"yes" + struct.pack("<I", 2) + b"no"
    assert np.frombuffer(proba, "<f8").tolist() == [0.2, 0.8, 0.9, 0.1]
    assert (response.model_name, response.model_version, response.id) == ("m", "1", "r")


def test_a_typed_request_gets_typed_outputs_in_the_order_asked() -> None:
    call = InferCall([], ("predict_proba", "predict"), raw=False)
    response = encode_infer(call, OUTPUTS, model="m", version="1", request_id="r")
    assert not response.raw_output_contents
    proba, labels = response.outputs
    assert list(proba.contents.fp64_contents) == [0.2, 0.8, 0.9, 0.1]
    assert list(labels.contents.bytes_contents) == [b"yes", b"no"]


@pytest.mark.parametrize(("array", "datatype", "field"), [
    (np.asarray([1, 2], dtype=np.int64), "INT64", "int64_contents"),
    (np.asarray([1, 2], dtype=np.int32), "INT32", "int_contents"),
    (np.asarray([True, False]), "BOOL", "bool_contents"),
    (np.asarray([0.5, 1.5], dtype=np.float32), "FP32", "fp32_contents"),
    (np.asarray([0.5, 1.5], dtype=np.float16), "FP32", "fp32_contents"),
], ids=["int64", "int32", "bool", "fp32", "fp16 as fp32"])
def test_typed_outputs_use_the_field_of_their_datatype(array: Any, datatype: str,
                                                       field: str) -> None:
    response = encode_infer(InferCall([], (), raw=False), Outputs(array), model="m",
                            version="1", request_id="r")
    assert response.outputs[0].datatype == datatype
    assert list(getattr(response.outputs[0].contents, field)) == array.tolist()


def test_an_unknown_output_is_refused_before_the_model_runs_in_rest_words() -> None:
    with pytest.raises(InvalidInput) as err:
        check_outputs(["logits"], SIG)
    assert err.value.message == ("field 'outputs.0.name': unknown output 'logits' (available: "
                                 "predict, predict_proba)")
    check_outputs(["predict_proba"], SIG)


EXACT_VALUES = {
    "BOOL": st.booleans(), "INT32": st.integers(-(2**31), 2**31 - 1),
    "INT64": st.integers(-(2**63), 2**63 - 1), "UINT32": st.integers(0, 2**32 - 1),
    "UINT64": st.integers(0, 2**64 - 1), "BYTES": st.text(max_size=8),
}


@settings(max_examples=60, deadline=None)
@given(data=st.data(), datatype=st.sampled_from(sorted(EXACT_VALUES)))
def test_the_exact_field_fast_path_answers_as_the_general_rules(data: Any,
                                                                datatype: str) -> None:
    """Values in the field made for their datatype skip cast_values: the same array as if they
    had gone through it."""
    values = data.draw(st.lists(EXACT_VALUES[datatype], max_size=5))
    contents = typed(datatype, values).inputs[0].contents
    fast = typed_values(contents, datatype, "x")
    field = FIELD[datatype]
    general = cast_values(np.array(
        [v.decode() for v in getattr(contents, field)] if datatype == "BYTES"
        else list(getattr(contents, field)), dtype=object if datatype == "BYTES" else
        np.dtype(NUMPY[datatype])), datatype, "x")
    assert fast.dtype == general.dtype
    assert fast.tolist() == general.tolist()
