"""Open Inference Protocol (V2) tensors: JSON and the binary-tensor extension.

A binary request is detected by its ``Inference-Header-Content-Length`` header (not by
Content-Type): the first N bytes are the JSON header; raw tensor bytes follow, in the order of
the inputs that declare ``parameters.binary_data_size``. ``BYTES`` elements are each prefixed by
a 4-byte little-endian length.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from modelport.errors import InvalidInput
from modelport.signature import FeatureType, Signature
from modelport.types import Columns, Outputs

__all__ = ["Tensor", "decode_request", "encode_response", "feature_datatype", "to_columns"]

_NUMPY = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}
_KINDS = {"BOOL": "b", "UINT": "iub", "INT": "iub", "FP": "iubf"}
_FEATURE_DT: dict[FeatureType, str] = {"float": "FP64", "int": "INT64", "bool": "BOOL",
                                       "string": "BYTES"}


@dataclass(frozen=True)
class Tensor:
    """One named input tensor, decoded."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: npt.NDArray[Any]
    parameters: Mapping[str, Any] = field(default_factory=dict)


def feature_datatype(dtype: FeatureType) -> str:
    """The V2 datatype that carries a feature of this type."""
    return _FEATURE_DT[dtype]


def decode_request(body: bytes, header_length: int | None) -> tuple[dict[str, Any], list[Tensor]]:
    """The JSON part of an infer request and its decoded input tensors."""
    if header_length is not None and not 0 < header_length <= len(body):
        raise InvalidInput(f"Inference-Header-Content-Length is {header_length} but the body "
                           f"has {len(body)} bytes")
    head, blobs = (body, b"") if header_length is None else (body[:header_length],
                                                             body[header_length:])
    try:
        request = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise InvalidInput("an inference request needs 'inputs': a list of tensors")
    if not request["inputs"]:
        raise InvalidInput("'inputs' is empty: send at least one tensor")
    tensors, offset = [], 0
    for spec in request["inputs"]:
        tensor, offset = _decode_input(spec, blobs, offset)
        tensors.append(tensor)
    if offset != len(blobs):
        raise InvalidInput(f"the body has {len(blobs) - offset} bytes of binary data that no "
                           "input claims (check binary_data_size)")
    return request, tensors


def _decode_input(spec: Any, blobs: bytes, offset: int) -> tuple[Tensor, int]:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise InvalidInput("each input needs a 'name', 'shape', 'datatype' and 'data'")
    name = spec["name"]
    datatype, shape = spec.get("datatype"), spec.get("shape")
    if datatype != "BYTES" and datatype not in _NUMPY:
        raise InvalidInput(f"unknown datatype {datatype!r}", field=name)
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InvalidInput("'shape' must be a list of non-negative integers", field=name)
    count = int(np.prod(shape)) if shape else 1
    params = spec.get("parameters") or {}
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(blobs):
            raise InvalidInput(f"binary_data_size {size} is beyond the body's binary data",
                               field=name)
        data = _from_bytes(blobs[offset:offset + size], datatype, count, name)
        offset += size
    elif "data" in spec:
        data = _from_json(spec["data"], datatype, name)
    else:
        raise InvalidInput("the input has neither 'data' nor binary_data_size", field=name)
    if data.size != count:
        raise InvalidInput(f"shape {shape} needs {count} values, got {data.size}", field=name)
    return Tensor(name, datatype, tuple(shape), data.reshape(shape), params), offset


def _from_json(data: Any, datatype: str, name: str) -> npt.NDArray[Any]:
    if datatype == "BYTES":
        flat = np.asarray(data, dtype=object).ravel()
        for i, v in enumerate(flat):
            if not isinstance(v, str):
                raise InvalidInput(f"BYTES data must be strings (element {i} is not)", field=name)
        return flat
    try:
        arr = np.asarray(data)
    except ValueError:
        raise InvalidInput("'data' is ragged: nested lists must have equal lengths",
                           field=name) from None
    kinds = next(v for k, v in _KINDS.items() if datatype.startswith(k))
    if arr.size and arr.dtype.kind not in kinds:
        raise InvalidInput(f"datatype {datatype} needs {'booleans' if kinds == 'b' else 'numbers'}"
                           f", the data holds {_describe(arr)}", field=name)
    return arr.astype(_NUMPY[datatype], copy=False).ravel()


def _from_bytes(raw: bytes, datatype: str, count: int, name: str) -> npt.NDArray[Any]:
    if datatype != "BYTES":
        dt = _NUMPY[datatype]
        if len(raw) != count * dt.itemsize:
            raise InvalidInput(f"{count} {datatype} values need {count * dt.itemsize} bytes, "
                               f"binary_data_size says {len(raw)}", field=name)
        return np.frombuffer(raw, dtype=dt)
    out, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise InvalidInput("truncated BYTES element length", field=name)
        (n,) = struct.unpack_from("<I", raw, pos)
        if pos + 4 + n > len(raw):
            raise InvalidInput("a BYTES element runs past binary_data_size", field=name)
        out.append(raw[pos + 4:pos + 4 + n].decode("utf-8", errors="replace"))
        pos += 4 + n
    arr = np.empty(len(out), dtype=object)
    arr[:] = out
    return arr


def _describe(arr: npt.NDArray[Any]) -> str:
    return {"U": "strings", "S": "strings", "O": "mixed values", "b": "booleans"}.get(
        arr.dtype.kind, str(arr.dtype))


def to_columns(tensors: Sequence[Tensor], sig: Signature, *, unseen: Any,
               max_rows: int) -> Columns:
    """Map input tensors onto the signature: one tensor per feature (``pd``) or one
    ``[rows, features]`` tensor (``np``)."""
    names = {t.name for t in tensors}
    if len(tensors) == 1 and tensors[0].name not in sig.names:
        t = tensors[0]
        if len(t.shape) != 2 or t.shape[1] != len(sig.features):
            raise InvalidInput(f"expected one input per feature ({', '.join(sig.names)}) or one "
                               f"tensor of shape [rows, {len(sig.features)}], got shape "
                               f"{list(t.shape)}", field=t.name)
        return sig.from_matrix(t.data, unseen=unseen, max_rows=max_rows)
    for t in tensors:
        if t.name not in sig.names:
            raise InvalidInput(f"unknown input (expected one per feature: "
                               f"{', '.join(sig.names)})", field=t.name)
        if len(t.shape) > 2 or (len(t.shape) == 2 and t.shape[1] != 1):
            raise InvalidInput(f"a feature input must have shape [rows] or [rows, 1], got "
                               f"{list(t.shape)}", field=t.name)
    missing = [n for n in sig.names if n not in names]
    if missing:
        raise InvalidInput("missing input for a feature", field=missing[0])
    if len(names) != len(tensors):
        raise InvalidInput("an input name appears twice")
    cols = {t.name: t.data.reshape(-1) for t in tensors}
    return sig.from_columns(cols, unseen=unseen, max_rows=max_rows)


def _output_tensors(outputs: Outputs) -> dict[str, npt.NDArray[Any]]:
    out = {"predict": np.asarray(outputs.predictions)}
    if outputs.probabilities is not None:
        out["predict_proba"] = np.asarray(outputs.probabilities)
    return out


def _datatype(arr: npt.NDArray[Any]) -> str:
    if arr.dtype.kind in "OUS":
        return "BYTES"
    for name, dt in _NUMPY.items():
        if dt == arr.dtype.newbyteorder("<"):
            return name
    return "FP64"


def encode_response(
    request: Mapping[str, Any], outputs: Outputs, *, model: str, version: str, request_id: str
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the JSON header's length."""
    available = _output_tensors(outputs)
    wanted = request.get("outputs") or [{"name": n} for n in available]
    default_binary = bool((request.get("parameters") or {}).get("binary_data_output", False))
    specs, blobs = [], []
    for spec in wanted:
        name = spec.get("name") if isinstance(spec, dict) else None
        if name not in available:
            raise InvalidInput(f"unknown output {name!r} (available: {', '.join(available)})")
        arr = available[name]
        entry: dict[str, Any] = {"name": name, "datatype": _datatype(arr),
                                 "shape": list(arr.shape)}
        binary = (spec.get("parameters") or {}).get("binary_data", default_binary)
        if binary:
            raw = _to_bytes(arr)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = arr.ravel().tolist()
        specs.append(entry)
    head = orjson.dumps({"model_name": model, "model_version": version,
                         "id": request.get("id") or request_id, "outputs": specs})
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


def _to_bytes(arr: npt.NDArray[Any]) -> bytes:
    if arr.dtype.kind not in "OUS":
        return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    parts = []
    for v in arr.ravel():
        b = v if isinstance(v, bytes) else str(v).encode()
        parts.append(struct.pack("<I", len(b)) + b)
    return b"".join(parts)
