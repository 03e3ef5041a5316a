"""Open Inference Protocol (V2) tensors: JSON and the binary-tensor extension.

A binary request is detected by its ``Inference-Header-Content-Length`` header (not by
Content-Type): the first N bytes are the JSON header; raw tensor bytes follow, in the order of
the inputs that declare ``parameters.binary_data_size``. ``BYTES`` elements are each prefixed by
a 4-byte little-endian length.
"""

from __future__ import annotations

import math
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

__all__ = [
    "Tensor",
    "cast_values",
    "check_outputs",
    "decode_request",
    "element_count",
    "encode_response",
    "feature_datatype",
    "from_raw",
    "make_tensor",
    "output_datatype",
    "output_metadata",
    "output_tensors",
    "select_output",
    "to_columns",
    "to_raw",
]

_NUMPY = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}
_DATATYPE_OF = {dt: name for name, dt in _NUMPY.items()}
_KINDS = {"BOOL": "b", "UINT": "iu", "INT": "iu", "FP": "iuf"}
_FEATURE_DT: dict[FeatureType, str] = {"float": "FP64", "int": "INT64", "bool": "BOOL",
                                       "string": "BYTES"}
_NUMERIC = frozenset(n for n in _NUMPY if n != "BOOL")
_SUITS: dict[FeatureType, frozenset[str]] = {
    "float": _NUMERIC, "int": frozenset(n for n in _NUMERIC if "INT" in n),
    "bool": frozenset({"BOOL"}), "string": frozenset({"BYTES"})}
"""The datatypes a feature's tensor may have: any number for a float feature, an integer type
for an integer feature (a float tensor would round large integers silently)."""
_KINDS_OF = {name: next(v for k, v in _KINDS.items() if name.startswith(k)) for name in _NUMPY}
"""The array kinds each datatype takes (see :func:`cast_values`), looked up once."""
_INFO: dict[str, Any] = {name: np.iinfo(dt) if dt.kind in "iu" else np.finfo(dt)
                         for name, dt in _NUMPY.items() if dt.kind != "b"}
"""Each numeric datatype's limits (numpy builds an ``iinfo`` anew on every call)."""
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_WHOLE_LIMIT = 2**53  # a float at or past it in magnitude is not taken as a whole number
_FAST_BOUNDS: dict[str, tuple[float, float]] = {
    name: (max(int(info.min), _INT64_MIN), min(int(info.max), _INT64_MAX))
    if isinstance(info, np.iinfo) else (float(info.min), float(info.max))
    for name, info in _INFO.items()}
"""The values :func:`_fast_values` takes for a datatype, as exact Python numbers: integer types
within both their range and int64's (as numpy reads a list of such ints), float types within
their finite range."""
_FAST_MAX_VALUES = 32
"""Longer lists go to numpy: its fixed cost per call beats checking each value in Python."""


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
    _check_request(request)
    tensors, offset = [], 0
    for spec in request["inputs"]:
        tensor, offset = _decode_input(spec, blobs, offset)
        tensors.append(tensor)
    if offset != len(blobs):
        raise InvalidInput(f"the body has {len(blobs) - offset} bytes of binary data that no "
                           "input claims (check binary_data_size)")
    return request, tensors


def _check_request(request: dict[str, Any]) -> None:
    """The optional fields around the inputs: ``id``, ``parameters``, ``outputs``."""
    if not isinstance(request.get("id", ""), str):
        raise InvalidInput("'id' must be a string", field="id")
    params = _object(request, "parameters", "parameters")
    _flag(params, "binary_data_output", "parameters")
    if not isinstance(params.get("content_type", ""), str):
        raise InvalidInput("must be a string", field="parameters.content_type")
    outputs = request.get("outputs", [])
    if not isinstance(outputs, list):
        raise InvalidInput("'outputs' must be a list of {\"name\": ...}", field="outputs")
    for i, spec in enumerate(outputs):
        where = f"outputs.{i}"
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise InvalidInput("each output needs a 'name'", field=where)
        _flag(_object(spec, "parameters", f"{where}.parameters"), "binary_data", where)


def _object(holder: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = holder.get(key, {})
    if not isinstance(value, dict):
        raise InvalidInput("must be an object", field=where)
    return value


def _flag(params: dict[str, Any], key: str, where: str) -> None:
    if not isinstance(params.get(key, False), bool):
        raise InvalidInput("must be true or false", field=f"{where}.{key}")


def _decode_input(spec: Any, blobs: bytes, offset: int) -> tuple[Tensor, int]:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise InvalidInput("each input needs a 'name', 'shape', 'datatype' and 'data'")
    name = spec["name"]
    count = element_count(name, spec.get("datatype"), spec.get("shape"))
    datatype, shape = str(spec["datatype"]), list(spec["shape"])  # both checked just above
    params = _object(spec, "parameters", name)
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(blobs):
            raise InvalidInput(f"binary_data_size {size} is beyond the body's binary data",
                               field=name)
        data = from_raw(blobs[offset:offset + size], datatype, count, name)
        offset += size
    elif "data" in spec:
        data = _from_json(spec["data"], datatype, shape, name)
    else:
        raise InvalidInput("the input has neither 'data' nor binary_data_size", field=name)
    return make_tensor(name, datatype, shape, data, params), offset


def element_count(name: str, datatype: Any, shape: Any) -> int:
    """How many values a tensor declared as ``datatype`` and ``shape`` holds; an unknown
    datatype or a shape that is not a list of non-negative integers is bad input naming the
    tensor (JSON and gRPC requests alike)."""
    if not isinstance(datatype, str) or (datatype != "BYTES" and datatype not in _NUMPY):
        raise InvalidInput(f"unknown datatype {datatype!r}", field=name)
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise InvalidInput("'shape' must be a list of non-negative integers", field=name)
    return math.prod(shape)  # exact: a huge shape must not wrap around as in int64


def make_tensor(name: str, datatype: str, shape: list[int], data: npt.NDArray[Any],
                parameters: Mapping[str, Any]) -> Tensor:
    """The tensor holding the flat values ``data``, which must be as many as ``shape`` says."""
    count = math.prod(shape)
    if data.size != count:
        raise InvalidInput(f"shape {shape} needs {count} values, got {data.size}", field=name)
    if len(shape) != 1 or data.ndim != 1:  # flat values for a flat shape are already it
        data = data.reshape(shape)
    return Tensor(name, datatype, tuple(shape), data, parameters)


def _from_json(data: Any, datatype: str, shape: list[int], name: str) -> npt.NDArray[Any]:
    """``data``: the values flat in row-major order, or nested as ``shape`` says."""
    if not isinstance(data, list):
        raise InvalidInput("'data' must be a list of values", field=name)
    if datatype != "BYTES" and len(data) <= _FAST_MAX_VALUES:
        fast = _fast_values(data, datatype)
        if fast is not None:
            return fast
    try:
        arr = np.asarray(data, dtype=object if datatype == "BYTES" else None)
    except ValueError:
        arr = np.empty(0)
        ragged = True
    else:
        ragged = arr.dtype == object and any(isinstance(v, list) for v in arr.ravel())
    if ragged or (arr.ndim > 1 and list(arr.shape) != shape):
        raise InvalidInput(f"'data' must be flat or nested as its shape {shape}", field=name)
    return cast_values(arr, datatype, name)


def cast_values(arr: npt.NDArray[Any], datatype: str, name: str) -> npt.NDArray[Any]:
    """Values given in a typed form (JSON ``data``, gRPC typed contents) as a flat array of
    ``datatype``: BYTES takes strings, integer types whole numbers, BOOL booleans, and every
    value must fit the type (no silent wrap or overflow)."""
    if datatype == "BYTES":
        flat = arr.ravel()
        for i, v in enumerate(flat):
            if not isinstance(v, str):
                raise InvalidInput(f"BYTES data must be strings (element {i} is not)", field=name)
        return flat
    kinds = _KINDS_OF[datatype]
    if kinds == "iu" and arr.dtype.kind == "f" and _exact_whole(arr):
        kinds = "f"  # whole numbers written as 5.0 are integers too (as JSON Schema says)
    if arr.size and arr.dtype.kind not in kinds:
        want = {"b": "booleans", "iu": "integers"}.get(kinds, "numbers")
        raise InvalidInput(f"datatype {datatype} needs {want}, the data holds {_describe(arr)}",
                           field=name)
    _check_range(arr, datatype, name)
    return arr.astype(_NUMPY[datatype], copy=False).ravel()


def _fast_values(data: list[Any], datatype: str) -> npt.NDArray[Any] | None:
    """A flat list of plain JSON values that :func:`_from_json` would take as they are, as the
    array it would answer, checked in Python (numpy calls cost microseconds each on a tensor
    of one value); ``None`` for anything else (nested lists, other types, values out of range,
    NaN), which the general path judges and words the error of."""
    dt = _NUMPY[datatype]
    if not data:
        return np.empty(0, dtype=dt)
    types = set(map(type, data))
    if dt.kind == "b":
        return np.array(data, dtype=dt) if types == {bool} else None
    if not types <= {int, float}:
        return None
    low, high = _FAST_BOUNDS[datatype]
    lo, hi = min(data), max(data)  # a NaN first makes both NaN: refused below
    if not low <= lo <= hi <= high:
        return None
    if types == {int}:  # in int64 (see _FAST_BOUNDS): numpy reads them as int64
        if dt.kind == "f" and not _INT64_MIN <= lo <= hi <= _INT64_MAX:
            return None
        return np.array(data, dtype=dt) if dt.kind != "f" else (
            np.array(data, dtype=np.int64).astype(dt, copy=False))
    # floats, maybe mixed with ints: numpy reads them as float64
    if dt.kind != "f":  # whole numbers only, exact in a float64
        if not -_WHOLE_LIMIT < lo <= hi < _WHOLE_LIMIT or not all(
                type(v) is int or v.is_integer() for v in data):
            return None
    elif (int in types and not _INT64_MIN <= lo <= hi <= _INT64_MAX) or not math.isfinite(
            sum(data)):  # a NaN anywhere
        return None
    return np.array(data, dtype=np.float64).astype(dt, copy=False)


def _exact_whole(arr: npt.NDArray[Any]) -> bool:
    """Whole floats a float64 holds exactly (JSON integers past 64 bits arrive as floats,
    rounded: they must not pass as the nearest 64-bit value)."""
    return bool(((arr == np.trunc(arr)) & (np.abs(arr) < 2.0**53)).all())


def _check_range(arr: npt.NDArray[Any], datatype: str, name: str) -> None:
    """Values must fit the datatype (a cast would wrap or overflow them silently)."""
    dt = _NUMPY[datatype]
    if not arr.size or dt.kind == "b" or (arr.dtype == dt and dt.kind in "iu"):
        return  # (integers of the very type fit it)
    info = _INFO[datatype]
    low, high = arr.min(), arr.max()
    if low < info.min or high > info.max:
        bad = low if low < info.min else high
        raise InvalidInput(f"{bad} does not fit {datatype} ({info.min} to {info.max})",
                           field=name)


def from_raw(raw: bytes, datatype: str, count: int, name: str, *,
             size_of: str = "binary_data_size") -> npt.NDArray[Any]:
    """``count`` values of ``datatype`` from their little-endian bytes (a BYTES element is its
    length in 4 little-endian bytes, then its UTF-8 bytes); ``size_of`` names where the byte
    count came from, in the error."""
    if datatype != "BYTES":
        dt = _NUMPY[datatype]
        if len(raw) != count * dt.itemsize:
            raise InvalidInput(f"{count} {datatype} values need {count * dt.itemsize} bytes, "
                               f"{size_of} says {len(raw)}", field=name)
        return np.frombuffer(raw, dtype=dt)
    out, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise InvalidInput("truncated BYTES element length", field=name)
        (n,) = struct.unpack_from("<I", raw, pos)
        if pos + 4 + n > len(raw):
            raise InvalidInput(f"a BYTES element runs past {size_of}", field=name)
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
        suits = _SUITS[sig.feature(t.name).dtype]
        if t.datatype not in suits:
            raise InvalidInput(f"datatype {t.datatype} does not suit this feature (use "
                               f"{feature_datatype(sig.feature(t.name).dtype)})", field=t.name)
        if len(t.shape) > 2 or (len(t.shape) == 2 and t.shape[1] != 1):
            raise InvalidInput(f"a feature input must have shape [rows] or [rows, 1], got "
                               f"{list(t.shape)}", field=t.name)
    missing = [n for n in sig.names if n not in names]
    if missing:
        raise InvalidInput("missing input for a feature", field=missing[0])
    if len(names) != len(tensors):
        raise InvalidInput("an input name appears twice")
    cols = {t.name: t.data if t.data.ndim == 1 else t.data.reshape(-1) for t in tensors}
    return sig.from_columns(cols, unseen=unseen, max_rows=max_rows)


def output_metadata(sig: Signature) -> list[dict[str, Any]]:
    """The outputs of a model's V2 metadata: ``predict`` (labels or values) and, for a
    probabilistic classifier, ``predict_proba`` (one column per class)."""
    labels = "BYTES" if sig.classes and any(isinstance(c, str) for c in sig.classes) else (
        "INT64" if sig.classes else "FP64")
    outputs: list[dict[str, Any]] = [{"name": "predict", "datatype": labels, "shape": [-1]}]
    if sig.has_proba:
        outputs.append({"name": "predict_proba", "datatype": "FP64",
                        "shape": [-1, len(sig.classes or ())]})
    return outputs


def check_outputs(names: Sequence[str], sig: Signature) -> None:
    """Every requested output is one the model gives (checked before the model runs)."""
    if not names:
        return
    available = {m["name"]: np.empty(0) for m in output_metadata(sig)}
    for i, name in enumerate(names):
        select_output(available, name, i)


def output_tensors(outputs: Outputs) -> dict[str, npt.NDArray[Any]]:
    """The output tensors of one answer, by name: ``predict`` and ``predict_proba``."""
    out = {"predict": np.asarray(outputs.predictions)}
    if outputs.probabilities is not None:
        out["predict_proba"] = np.asarray(outputs.probabilities)
    return out


def output_datatype(arr: npt.NDArray[Any]) -> str:
    """The V2 datatype of an output array (strings: BYTES)."""
    if arr.dtype.kind in "OUS":
        return "BYTES"
    return _DATATYPE_OF.get(arr.dtype.newbyteorder("<"), "FP64")


def encode_response(
    request: Mapping[str, Any], outputs: Outputs, *, model: str, version: str, request_id: str
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the JSON header's length."""
    available = output_tensors(outputs)
    wanted = request.get("outputs") or [{"name": n} for n in available]
    default_binary = bool(request.get("parameters", {}).get("binary_data_output", False))
    specs, blobs = [], []
    for i, spec in enumerate(wanted):
        name = spec["name"]
        arr = select_output(available, name, i)
        entry: dict[str, Any] = {"name": name, "datatype": output_datatype(arr),
                                 "shape": list(arr.shape)}
        binary = spec.get("parameters", {}).get("binary_data", default_binary)
        if binary:
            raw = to_raw(arr)
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


def select_output(available: Mapping[str, npt.NDArray[Any]], name: str,
                  i: int) -> npt.NDArray[Any]:
    """The output named by the ``i``-th requested output; an unknown name is bad input."""
    arr = available.get(name)
    if arr is None:
        raise InvalidInput(f"unknown output {name!r} (available: {', '.join(available)})",
                           field=f"outputs.{i}.name")
    return arr


def to_raw(arr: npt.NDArray[Any]) -> bytes:
    """An output's values as raw little-endian bytes (BYTES: each length-prefixed)."""
    if arr.dtype.kind not in "OUS":
        return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    parts = []
    for v in arr.ravel():
        b = v if isinstance(v, bytes) else str(v).encode()
        parts.append(struct.pack("<I", len(b)) + b)
    return b"".join(parts)
