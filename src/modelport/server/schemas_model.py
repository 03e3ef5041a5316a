"""JSON Schemas of one served model's requests and answers, built from its signature.

Each request schema admits exactly what validation accepts, so a client (or a property-based
tester) that follows it is never refused: every feature required, with its JSON type, integers
within int64, categories as an ``enum`` (unless unseen categories ``pass``), ``null`` only for
nullable features, at most ``max_rows`` rows, and one of ``features``/``instances``/``columns``.

Two rules cannot be said in JSON Schema: that the lists of a ``columns`` body have equal lengths,
and that V2 tensors agree on their row count and with their ``shape``. There the schema shows
one row (each column one value; each tensor of shape ``[1]`` or ``[1, 1]``) and the description
says what else is accepted.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelport.signature import FLOAT_LIMIT, Feature, Signature, UnseenPolicy

__all__ = ["native_answer", "native_request", "record_schema", "row_schema", "v1_answer",
           "v1_request", "v2_answer", "v2_request"]

Schema = dict[str, Any]

_INTS = {"INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
         "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64}
_FLOATS: dict[str, Any] = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}


def record_schema(sig: Signature, unseen: UnseenPolicy) -> Schema:
    """One record keyed by feature name: every feature, nothing else."""
    return {"type": "object", "additionalProperties": False, "required": list(sig.names),
            "properties": {f.name: f.json_schema(unseen=unseen) | {"example": f.example_value()}
                           for f in sig.features},
            "example": sig.example_record()}


def row_schema(sig: Signature, unseen: UnseenPolicy) -> Schema:
    """One ordered row: the features' values in signature order."""
    return {"type": "array", "prefixItems": [f.json_schema(unseen=unseen) for f in sig.features],
            "items": False, "minItems": len(sig.features),
            "example": list(sig.example_record().values())}


def _only(key: str, others: tuple[str, ...], value: Schema, title: str) -> Schema:
    return {"type": "object", "title": title, "required": [key], "properties": {key: value},
            "not": {"anyOf": [{"required": [o]} for o in others]}}


def _rows(record: Schema, row: Schema, max_rows: int) -> Schema:
    bound = {"type": "array", "minItems": 1, "maxItems": max_rows}
    return {"oneOf": [{**bound, "items": record}, {**bound, "items": row}]}


def native_request(sig: Signature, record: Schema, row: Schema, *, unseen: UnseenPolicy,
                   max_rows: int) -> Schema:
    """The native body: ``features`` (one record or row), ``instances`` (records, or rows) or
    ``columns`` (one list per feature) — exactly one of them."""
    columns = {"type": "object", "additionalProperties": False, "required": list(sig.names),
               "properties": {f.name: {"type": "array", "items": f.json_schema(unseen=unseen),
                                       "minItems": 1, "maxItems": 1} for f in sig.features},
               "description": "One list per feature. JSON Schema cannot say that the lists "
                              "have equal lengths: this schema shows one row; lists of any "
                              f"equal length up to {max_rows} are accepted."}
    keys = ("features", "instances", "columns")
    return {"oneOf": [
        _only("features", keys[1:], {"oneOf": [record, row]}, "One record or row"),
        _only("instances", (keys[0], keys[2]), _rows(record, row, max_rows),
              "Several records, or several rows"),
        _only("columns", keys[:2], columns, "Columns"),
    ]}


def v1_request(record: Schema, row: Schema, *, max_rows: int) -> Schema:
    """KServe V1: ``{"instances": [...]}`` (records or rows); other keys are ignored."""
    return {"type": "object", "required": ["instances"],
            "properties": {"instances": _rows(record, row, max_rows)}}


def _int_range(dtype: Any, feat: Feature) -> Schema:
    """The integers a tensor of ``dtype`` holds that ``feat`` takes (a float feature's values
    are at most :data:`~modelport.signature.FLOAT_LIMIT` in magnitude)."""
    info = np.iinfo(dtype)
    low, high = int(info.min), min(int(info.max), 2**63 - 1)
    if feat.dtype == "float":
        low, high = max(low, -int(FLOAT_LIMIT)), min(high, int(FLOAT_LIMIT))
    return {"type": "integer", "minimum": low, "maximum": high}


def _datatypes(feat: Feature) -> dict[str, tuple[Any, Schema]]:
    """The V2 datatypes a feature's tensor may have: each one's numpy type and the JSON
    values it holds for this feature."""
    if feat.dtype == "string":
        return {"BYTES": (object, {"type": "string"})}
    if feat.dtype == "bool":
        return {"BOOL": (np.bool_, {"type": "boolean"})}
    out = {name: (dt, _int_range(dt, feat)) for name, dt in _INTS.items()}
    if feat.dtype == "float":
        for name, dt in _FLOATS.items():
            top = _largest_admitted(dt)
            out[name] = (dt, {"type": "number", "minimum": -top, "maximum": top})
    return out


def _largest_admitted(dtype: Any) -> float:
    """The largest JSON number a float feature's tensor of ``dtype`` takes: the datatype's own
    maximum, or — when the limit binds — the largest float64 that, rounded to ``dtype``, is
    still within :data:`~modelport.signature.FLOAT_LIMIT`."""
    top = float(np.finfo(dtype).max)
    if top <= FLOAT_LIMIT or dtype is np.float64:  # float64: JSON numbers parse to it as is
        return min(top, FLOAT_LIMIT)
    below = dtype(FLOAT_LIMIT)
    if float(below) > FLOAT_LIMIT:
        below = np.nextafter(below, dtype(0))
    midpoint = (float(below) + float(np.nextafter(below, dtype(np.inf)))) / 2
    if float(dtype(midpoint)) == float(below):
        return midpoint
    return float(np.nextafter(midpoint, 0.0))


def _restricted(values: Schema, dtype: Any, feat: Feature,
                unseen: UnseenPolicy) -> Schema | None:
    """``values`` narrowed to the feature's categories that survive the cast to ``dtype``
    unchanged (None: no category does)."""
    if feat.categories is None or unseen == "pass" or feat.dtype == "bool":
        return values
    low, high = values.get("minimum"), values.get("maximum")
    fits = [c for c in (_plain(c) for c in feat.categories)
            if (low is None or low <= c) and (high is None or c <= high)
            and (values["type"] != "integer" or float(c).is_integer())
            and (dtype is object or dtype(c) == c)]
    return {"enum": fits} if fits else None


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _tensor_variants(feat: Feature, unseen: UnseenPolicy) -> list[Schema]:
    """One schema per (datatype, shape) a one-row tensor of ``feat`` may take."""
    out = []
    for datatype, (dtype, values) in _datatypes(feat).items():
        item = _restricted(values, dtype, feat, unseen)
        if item is None:
            continue
        flat = {"type": "array", "items": item, "minItems": 1, "maxItems": 1}
        nested = {"type": "array", "items": flat, "minItems": 1, "maxItems": 1}
        for shape, data in (([1], flat), ([1, 1], {"oneOf": [flat, nested]})):
            out.append({"type": "object", "required": ["name", "datatype", "shape", "data"],
                        "properties": {"name": {"const": feat.name},
                                       "datatype": {"const": datatype},
                                       "shape": {"const": shape}, "data": data,
                                       "parameters": _TENSOR_PARAMETERS}})
    return out


_TENSOR_PARAMETERS: Schema = {"type": "object", "properties": {"binary_data_size": False}}


def v2_request(sig: Signature, *, unseen: UnseenPolicy) -> Schema:
    """An Open Inference Protocol request with one tensor per feature (MLServer's ``pd``
    convention), shown for one row; outputs ``predict``/``predict_proba``, JSON or binary."""
    variants = [v for f in sig.features for v in _tensor_variants(f, unseen)]
    n = len(sig.features)
    output = {"type": "object", "required": ["name"], "properties": {
        "name": {"enum": list(sig.outputs)},
        "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}}}}
    return {"type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object", "properties": {
            "binary_data_output": {"type": "boolean"}, "content_type": {"type": "string"}}},
        "inputs": {"type": "array", "minItems": n, "maxItems": n,
                   "items": {"oneOf": variants},
                   "allOf": [{"contains": {"type": "object", "required": ["name"],
                                           "properties": {"name": {"const": f.name}}}}
                             for f in sig.features]},
        "outputs": {"type": "array", "items": output},
    }, "description": "One tensor per feature, in any order. JSON Schema cannot say that "
                      "tensors agree on their row count and with their shape: this schema "
                      "shows one row; tensors of shape [rows] or [rows, 1] with rows values "
                      "each are accepted, as are one [rows, features] tensor and binary "
                      "tensors (Inference-Header-Content-Length)."}


def _label(sig: Signature) -> Schema:
    classes = sig.classes
    if not classes:
        return {"anyOf": [{"type": "number"}, {"type": "array"}]}
    plain = [_plain(c) for c in classes]
    if all(isinstance(c, str) for c in plain):
        return {"type": "string"}
    if all(isinstance(c, bool) for c in plain):
        return {"type": "boolean"}
    if all(isinstance(c, int) and not isinstance(c, bool) for c in plain):
        return {"type": "integer"}
    return {}


def native_answer(sig: Signature) -> Schema:
    """What a native prediction answers."""
    props: Schema = {"model": {"type": "string"}, "version": {"type": "string"},
                     "request_id": {"type": "string"},
                     "predictions": {"type": "array", "items": _label(sig)}}
    if sig.has_proba:
        props["probabilities"] = {"type": "array",
                                  "items": {"type": "array", "items": {"type": "number"}}}
        props["classes"] = {"type": "array", "items": _label(sig)}
    return {"type": "object", "required": ["model", "version", "request_id", "predictions"],
            "properties": props}


def v1_answer(sig: Signature) -> Schema:
    """What a V1 prediction answers."""
    return {"type": "object", "required": ["predictions"],
            "properties": {"predictions": {"type": "array", "items": _label(sig)}}}


def v2_answer() -> Schema:
    """What a V2 inference answers in JSON (with binary outputs, the JSON header)."""
    tensor = {"type": "object", "required": ["name", "datatype", "shape"], "properties": {
        "name": {"type": "string"}, "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}}, "data": {"type": "array"},
        "parameters": {"type": "object"}}}
    return {"type": "object", "required": ["model_name", "model_version", "id", "outputs"],
            "properties": {"model_name": {"type": "string"},
                           "model_version": {"type": "string"}, "id": {"type": "string"},
                           "outputs": {"type": "array", "items": tensor}}}
