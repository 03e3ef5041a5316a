"""``ModelInferRequest`` -> V2 tensors, and an answer -> ``ModelInferResponse``.

The gRPC twin of :mod:`modelport.server.v2codec`'s JSON and binary forms: the same datatype,
shape, range and output rules, through the same functions, so a bad request gets the words
the REST V2 route gives it. Values come either typed (``InferTensorContents``, the one field
that suits the datatype) or raw (``raw_input_contents``, one entry per input, little-endian,
BYTES elements length-prefixed). The answer mirrors the request: raw outputs for a raw
request, typed contents for a typed one (as MLServer does; tritonclient reads both).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from modelport.errors import InvalidInput
from modelport.server.grpc import oip_pb2 as pb
from modelport.server.v2codec import (
    Tensor,
    cast_values,
    check_outputs,
    element_count,
    from_raw,
    make_tensor,
    output_datatype,
    output_tensors,
    select_output,
    to_raw,
)
from modelport.types import Outputs

__all__ = ["InferCall", "check_outputs", "decode_infer", "encode_infer", "parameters_of",
           "typed_values"]

_FIELDS: dict[str, npt.DTypeLike] = {
    "bool_contents": np.bool_, "int_contents": np.int32, "int64_contents": np.int64,
    "uint_contents": np.uint32, "uint64_contents": np.uint64, "fp32_contents": np.float32,
    "fp64_contents": np.float64, "bytes_contents": object,
}
"""Each typed-contents field and the numpy type of its values."""
_OUTPUT_FIELD = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
    "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
    "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}
"""Where a typed answer puts an output of each datatype (FP16 has no field: sent as FP32)."""
_EXACT = {d: f for d, f in _OUTPUT_FIELD.items()
          if d in ("BOOL", "INT32", "INT64", "UINT32", "UINT64", "BYTES")}
"""Datatypes whose contents field holds values of exactly that type: nothing to check or cast
(:func:`typed_values` skips :func:`~modelport.server.v2codec.cast_values` for them; a property
test holds the two ways equal). Floats still go through it: an infinity does not fit FP64."""


@dataclass(frozen=True)
class InferCall:
    """One decoded ``ModelInferRequest``."""

    tensors: list[Tensor]
    outputs: tuple[str, ...]
    """The requested output names, in order; empty: every output."""
    raw: bool
    """Whether the inputs came as ``raw_input_contents`` (the answer does the same)."""


def parameters_of(params: Mapping[str, Any]) -> dict[str, Any]:
    """An ``InferParameter`` map as plain values."""
    out: dict[str, Any] = {}
    if not params:
        return out
    for key, value in params.items():
        choice = value.WhichOneof("parameter_choice")
        out[key] = None if choice is None else getattr(value, choice)
    return out


def decode_infer(request: pb.ModelInferRequest) -> InferCall:
    """The request's tensors and requested outputs; bad input names the tensor and the
    problem, in the words of the REST V2 route."""
    inputs = request.inputs
    if not inputs:
        raise InvalidInput("'inputs' is empty: send at least one tensor")
    params = parameters_of(request.parameters)
    if not isinstance(params.get("content_type", ""), str):
        raise InvalidInput("must be a string", field="parameters.content_type")
    raw = request.raw_input_contents
    if raw and len(raw) != len(inputs):
        raise InvalidInput(f"raw_input_contents has {len(raw)} entries for {len(inputs)} "
                           "inputs: send one per input, in the order of the inputs")
    tensors = [_tensor(spec, raw[i] if raw else None, i) for i, spec in enumerate(inputs)]
    for i, spec in enumerate(request.outputs):
        if not spec.name:
            raise InvalidInput("each output needs a 'name'", field=f"outputs.{i}")
    return InferCall(tensors, tuple(o.name for o in request.outputs), raw=bool(raw))


def _tensor(spec: pb.ModelInferRequest.InferInputTensor, raw: bytes | None, i: int) -> Tensor:
    name, datatype, shape = spec.name, spec.datatype, list(spec.shape)
    if not name:
        raise InvalidInput("each input needs a 'name', 'shape', 'datatype' and contents",
                           field=f"inputs.{i}")
    count = element_count(name, datatype, shape)
    if raw is None:
        data = typed_values(spec.contents, datatype, name)
    elif spec.HasField("contents") and spec.contents.ListFields():
        raise InvalidInput("the input has both contents and raw_input_contents: send one",
                           field=name)
    else:
        data = from_raw(raw, datatype, count, name, size_of=f"raw_input_contents[{i}]")
    return make_tensor(name, datatype, shape, data, parameters_of(spec.parameters))


def typed_values(contents: pb.InferTensorContents, datatype: str,
                 name: str) -> npt.NDArray[Any]:
    """The values of the one contents field that holds any, as a flat array of ``datatype``
    (the rules of REST V2's JSON ``data``)."""
    filled = contents.ListFields()
    if len(filled) > 1:
        names = " and ".join(f.name for f, _ in filled)
        raise InvalidInput(f"the contents hold values in {names}: put them in the one field "
                           f"that suits {datatype}", field=name)
    if not filled:
        return cast_values(np.empty(0, dtype=object if datatype == "BYTES" else float),
                           datatype, name)
    field, values = filled[0]
    if field.name != "bytes_contents":
        arr = np.array(list(values), dtype=_FIELDS[field.name])
        return arr if _EXACT.get(datatype) == field.name else cast_values(arr, datatype, name)
    text = [v.decode("utf-8", errors="replace") for v in values]
    if datatype != "BYTES":  # strings: the datatype check says the data holds strings
        return cast_values(np.array(text), datatype, name)
    arr = np.empty(len(text), dtype=object)
    arr[:] = text
    return arr


def encode_infer(call: InferCall, outputs: Outputs, *, model: str, version: str,
                 request_id: str) -> pb.ModelInferResponse:
    """The response: the requested outputs (all when none was named), raw when the request
    was raw, typed otherwise."""
    available = output_tensors(outputs)
    names = call.outputs or tuple(available)
    response = pb.ModelInferResponse(model_name=model, model_version=version, id=request_id)
    for i, name in enumerate(names):
        arr = select_output(available, name, i)
        datatype = output_datatype(arr)
        if not call.raw and datatype == "FP16":
            arr, datatype = arr.astype(np.float32), "FP32"
        out = response.outputs.add(name=name, datatype=datatype, shape=arr.shape)
        if call.raw:
            response.raw_output_contents.append(to_raw(arr))
        elif datatype == "BYTES":
            out.contents.bytes_contents.extend(
                v if isinstance(v, bytes) else str(v).encode() for v in arr.ravel())
        else:
            getattr(out.contents, _OUTPUT_FIELD[datatype]).extend(arr.ravel().tolist())
    return response
