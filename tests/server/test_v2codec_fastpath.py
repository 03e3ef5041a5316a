"""The V2 JSON decoding fast path answers exactly what the general path answered before it.

``Reference*`` below is the decoding as it was before the fast path (kept verbatim as the
oracle): for any ``data`` and datatype, the new code must give the same array (dtype, shape and
bytes) or the same error (words and field)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelport.errors import InvalidInput
from modelport.server import v2codec
from modelport.server.v2codec import (
    Tensor,
    cast_values,
    decode_request,
    feature_datatype,
    make_tensor,
    to_columns,
)
from modelport.signature import Feature, Signature
from modelport.types import Columns

_NUMPY = v2codec._NUMPY
_KINDS = v2codec._KINDS
_SUITS = v2codec._SUITS
DATATYPES = [*_NUMPY, "BYTES"]


# --- Reference: the code before the fast path, verbatim ---------------------------------------

def reference_make_tensor(name: str, datatype: str, shape: list[int], data: npt.NDArray[Any],
                          parameters: Any) -> Tensor:
    """The tensor holding the flat values ``data``, which must be as many as ``shape`` says."""
    count = math.prod(shape)
    if data.size != count:
        raise InvalidInput(f"shape {shape} needs {count} values, got {data.size}", field=name)
    return Tensor(name, datatype, tuple(shape), data.reshape(shape), parameters)


def reference_from_json(data: Any, datatype: str, shape: list[int],
                        name: str) -> npt.NDArray[Any]:
    """``data``: the values flat in row-major order, or nested as ``shape`` says."""
    if not isinstance(data, list):
        raise InvalidInput("'data' must be a list of values", field=name)
    try:
        arr = np.asarray(data, dtype=object if datatype == "BYTES" else None)
    except ValueError:
        arr = np.empty(0)
        ragged = True
    else:
        ragged = arr.dtype == object and any(isinstance(v, list) for v in arr.ravel())
    if ragged or (arr.ndim > 1 and list(arr.shape) != shape):
        raise InvalidInput(f"'data' must be flat or nested as its shape {shape}", field=name)
    return reference_cast_values(arr, datatype, name)


def reference_cast_values(arr: npt.NDArray[Any], datatype: str, name: str) -> npt.NDArray[Any]:
    """Values given in a typed form (JSON ``data``, gRPC typed contents) as a flat array of
    ``datatype``: BYTES takes strings, integer types whole numbers, BOOL booleans, and every
    value must fit the type (no silent wrap or overflow)."""
    if datatype == "BYTES":
        flat = arr.ravel()
        for i, v in enumerate(flat):
            if not isinstance(v, str):
                raise InvalidInput(f"BYTES data must be strings (element {i} is not)", field=name)
        return flat
    kinds = next(v for k, v in _KINDS.items() if datatype.startswith(k))
    if kinds == "iu" and arr.dtype.kind == "f" and reference_exact_whole(arr):
        kinds = "f"  # whole numbers written as 5.0 are integers too (as JSON Schema says)
    if arr.size and arr.dtype.kind not in kinds:
        want = {"b": "booleans", "iu": "integers"}.get(kinds, "numbers")
        raise InvalidInput(f"datatype {datatype} needs {want}, the data holds "
                           f"{reference_describe(arr)}", field=name)
    reference_check_range(arr, datatype, name)
    return arr.astype(_NUMPY[datatype], copy=False).ravel()


def reference_exact_whole(arr: npt.NDArray[Any]) -> bool:
    """Whole floats a float64 holds exactly (JSON integers past 64 bits arrive as floats,
    rounded: they must not pass as the nearest 64-bit value)."""
    return bool(((arr == np.trunc(arr)) & (np.abs(arr) < 2.0**53)).all())


def reference_check_range(arr: npt.NDArray[Any], datatype: str, name: str) -> None:
    """Values must fit the datatype (a cast would wrap or overflow them silently)."""
    dt = _NUMPY[datatype]
    if not arr.size or dt.kind == "b":
        return
    info: Any = np.iinfo(dt) if dt.kind in "iu" else np.finfo(dt)
    low, high = arr.min(), arr.max()
    if low < info.min or high > info.max:
        bad = low if low < info.min else high
        raise InvalidInput(f"{bad} does not fit {datatype} ({info.min} to {info.max})",
                           field=name)


def reference_describe(arr: npt.NDArray[Any]) -> str:
    return {"U": "strings", "S": "strings", "O": "mixed values", "b": "booleans"}.get(
        arr.dtype.kind, str(arr.dtype))


def reference_to_columns(tensors: Sequence[Tensor], sig: Signature, *, unseen: Any,
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
    cols = {t.name: t.data.reshape(-1) for t in tensors}
    return sig.from_columns(cols, unseen=unseen, max_rows=max_rows)


# --- Comparing answers ---------------------------------------------------------------------

def answer(fn: Callable[[], Any]) -> tuple[str, Any]:
    """What a call answers: its value, or its exception's type, words and field."""
    try:
        return "value", fn()
    except InvalidInput as exc:
        return "invalid", (str(exc), exc.field, exc.row)
    except Exception as exc:  # any other failure must be the same failure
        return "error", (type(exc).__name__, str(exc))


def array_key(arr: npt.NDArray[Any]) -> tuple[Any, ...]:
    """An array exactly: dtype, shape and values (bytes for numbers: -0.0 and NaN too)."""
    if arr.dtype == object:
        return (arr.dtype, arr.shape, [(type(v), v) for v in arr.ravel().tolist()])
    return (arr.dtype, arr.shape, arr.tobytes())


def tensor_key(t: Tensor) -> tuple[Any, ...]:
    return (t.name, t.datatype, t.shape, array_key(t.data), dict(t.parameters))


def assert_same(new: tuple[str, Any], old: tuple[str, Any],
                key: Callable[[Any], Any] = array_key) -> None:
    assert new[0] == old[0], (new, old)
    if new[0] == "value":
        assert key(new[1]) == key(old[1])
    else:
        assert new[1] == old[1]


# --- Generated JSON-like values --------------------------------------------------------------

def _edges() -> list[Any]:
    """Values at and just past every datatype's limits, as ints and as floats."""
    out: list[Any] = [0, 1, -1, 2**53 - 1, 2**53, 2**53 + 1, -(2**53), -(2**53) - 1,
                      2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**30,
                      -(10**30), 10**400, 0.0, -0.0, 0.5, -0.5, 1e-300, 5e-324, 1e300,
                      -1e300, 1.7976931348623157e308, -1.7976931348623157e308, 2.0**53,
                      2.0**53 - 1, 2.0**63, 2.0**64, -(2.0**63), 65504, 65505, 65504.0,
                      65519.0, 65520.0, -65504.0, -65505, 1e39, -1e39]
    for datatype in _NUMPY:
        out += _limits(datatype)
    return out


def _limits(datatype: str) -> list[Any]:
    """A datatype's limits and their neighbours, as ints and as floats."""
    dt = _NUMPY[datatype]
    out: list[Any] = []
    if dt.kind in "iu":
        info = np.iinfo(dt)  # type: ignore[type-var]
        for v in (int(info.min), int(info.max)):
            out += [v - 1, v, v + 1, float(v - 1), float(v), float(v + 1)]
    elif dt.kind == "f":
        f = float(np.finfo(dt).max)  # type: ignore[type-var]
        out += [f, -f, math.nextafter(f, math.inf), -math.nextafter(f, math.inf),
                math.nextafter(f, 0.0), int(f), int(f) + 1, -int(f) - 1]
    return out


EDGES = _edges()
ints = st.one_of(st.sampled_from([v for v in EDGES if type(v) is int]),
                 st.integers(-300, 300), st.integers(-(2**70), 2**70))
floats = st.one_of(st.sampled_from([v for v in EDGES if type(v) is float]),
                   st.floats(allow_nan=False, allow_infinity=False),
                   st.integers(-(2**60), 2**60).map(float), st.integers(-300, 300).map(float))
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
others: st.SearchStrategy[Any] = st.one_of(st.booleans(), st.text(max_size=3), st.none(),
                                           st.just({}))
scalars = st.one_of(ints, floats, st.booleans(), others)


@st.composite
def json_data(draw: st.DrawFn, finite: bool = True) -> tuple[Any, list[int]]:
    """``data`` and a shape: mostly what a client sends (flat lists of one type), some nested,
    ragged or mixed."""
    number = st.one_of(ints, floats) if finite else st.one_of(ints, floats, non_finite)
    element = st.one_of(scalars, non_finite) if not finite else scalars
    flat = st.one_of(st.lists(ints, max_size=6), st.lists(floats, max_size=6),
                     st.lists(number, max_size=6), st.lists(st.booleans(), max_size=6),
                     st.lists(st.text(max_size=3), max_size=6), st.lists(element, max_size=6))
    kind = draw(st.sampled_from(["flat", "flat", "flat", "nested", "ragged", "scalar"]))
    if kind == "scalar":
        return draw(element), [1]
    if kind == "flat":
        data = draw(flat)
        shape = draw(st.sampled_from([[len(data)], [len(data)], [1, len(data)], [len(data), 1],
                                      [len(data) + 1], [2]]))
        return data, shape
    rows, cols = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    inner = draw(st.sampled_from([ints, floats, st.booleans(), element]))
    if kind == "nested":
        data = [draw(st.lists(inner, min_size=cols, max_size=cols)) for _ in range(rows)]
        shape = draw(st.sampled_from([[rows, cols], [rows, cols], [rows * cols], [cols, rows]]))
        return data, shape
    data = [draw(st.one_of(st.lists(inner, max_size=3), inner)) for _ in range(rows + 1)]
    return data, [rows + 1, cols]


FAST = settings(max_examples=1500, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FAST
@given(json_data(), st.sampled_from(DATATYPES))
def test_json_data_decodes_as_before(case: tuple[Any, list[int]], datatype: str) -> None:
    data, shape = case
    new = answer(lambda: v2codec._from_json(data, datatype, shape, "x"))
    old = answer(lambda: reference_from_json(data, datatype, shape, "x"))
    assert_same(new, old)
    new_t = answer(lambda: make_tensor("x", datatype, shape,
                                       v2codec._from_json(data, datatype, shape, "x"), {}))
    old_t = answer(lambda: reference_make_tensor("x", datatype, shape,
                                                 reference_from_json(data, datatype, shape, "x"),
                                                 {}))
    assert_same(new_t, old_t, tensor_key)


@pytest.mark.parametrize("datatype", list(_NUMPY))
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_values_at_a_datatypes_limits_decode_as_before(data: st.DataObject,
                                                       datatype: str) -> None:
    """Flat lists around the datatype's own limits (where the fast path draws its line)."""
    near = st.one_of(st.sampled_from(_limits(datatype) or [0]), st.integers(-3, 3),
                     st.integers(-3, 3).map(float), st.sampled_from([0.5, 2.0**53, 2**53]))
    values = data.draw(st.lists(near, min_size=1, max_size=4))
    assert_same(answer(lambda: v2codec._from_json(values, datatype, [len(values)], "x")),
                answer(lambda: reference_from_json(values, datatype, [len(values)], "x")))


@FAST
@given(json_data(finite=False), st.sampled_from(DATATYPES))
def test_non_finite_values_decode_as_before(case: tuple[Any, list[int]], datatype: str) -> None:
    """JSON has no NaN or infinity, but the functions answer for them as before all the same."""
    data, shape = case
    assert_same(answer(lambda: v2codec._from_json(data, datatype, shape, "x")),
                answer(lambda: reference_from_json(data, datatype, shape, "x")))


@FAST
@given(st.lists(scalars, max_size=5), st.sampled_from(DATATYPES))
def test_cast_values_of_arrays_is_as_before(values: list[Any], datatype: str) -> None:
    """The gRPC path gives arrays to cast_values: the same answers as before."""
    def array() -> npt.NDArray[Any]:
        try:
            return np.asarray(values, dtype=object if datatype == "BYTES" else None)
        except (ValueError, OverflowError, TypeError):
            arr = np.empty(len(values), dtype=object)
            arr[:] = values
            return arr
    assert_same(answer(lambda: cast_values(array(), datatype, "x")),
                answer(lambda: reference_cast_values(array(), datatype, "x")))


@FAST
@given(st.lists(st.one_of(ints, floats, st.booleans()), min_size=1, max_size=40),
       st.sampled_from(DATATYPES))
def test_json_text_decodes_as_before(values: list[Any], datatype: str) -> None:
    """Through orjson as a request arrives: integers past 64 bits come as floats (or not at
    all), and the request decodes to the same tensor or the same error."""
    text = ("[" + ", ".join(orjson.dumps(v).decode() if type(v) is not int else str(v)
                            for v in values) + "]").encode()
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return
    body = orjson.dumps({"inputs": [{"name": "x", "datatype": datatype, "shape": [len(data)],
                                     "data": data}]})
    new = answer(lambda: decode_request(body, None)[1][0])
    old = answer(lambda: reference_make_tensor(
        "x", datatype, [len(data)], reference_from_json(data, datatype, [len(data)], "x"), {}))
    assert_same(new, old, tensor_key)


SIG = Signature(features=(Feature("i", "int"), Feature("f", "float"), Feature("b", "bool"),
                          Feature("s", "string", categories=("a", "b"))),
                classes=("no", "yes"), has_proba=True, task="classification")


def columns_key(cols: Columns) -> tuple[Any, ...]:
    return (cols.n_rows, tuple((n, array_key(a)) for n, a in cols.data.items()))


@FAST
@given(st.data())
def test_columns_are_as_before(data: st.DataObject) -> None:
    """Tensors of any suiting or unsuiting datatype and shape map onto the same columns."""
    rows = data.draw(st.integers(1, 3))
    tensors = []
    for feat in SIG.features:
        datatype = data.draw(st.sampled_from([feature_datatype(feat.dtype), *DATATYPES]))
        if datatype == "BYTES":
            values: list[Any] = data.draw(st.lists(st.sampled_from(["a", "b", "c"]),
                                                   min_size=rows, max_size=rows))
        elif datatype == "BOOL":
            values = data.draw(st.lists(st.booleans(), min_size=rows, max_size=rows))
        else:
            values = data.draw(st.lists(st.integers(0, 100), min_size=rows, max_size=rows))
        shape = data.draw(st.sampled_from([[rows], [rows], [rows, 1], [1, rows], [1, rows, 1]]))
        try:
            arr = v2codec._from_json(values, datatype, shape, feat.name)
            tensors.append(make_tensor(feat.name, datatype, shape, arr, {}))
        except InvalidInput:
            return
    if data.draw(st.booleans()):
        tensors = tensors[:data.draw(st.integers(0, len(tensors)))]
    new = answer(lambda: to_columns(tensors, SIG, unseen="reject", max_rows=100))
    old = answer(lambda: reference_to_columns(tensors, SIG, unseen="reject", max_rows=100))
    assert_same(new, old, columns_key)


@pytest.mark.parametrize(("datatype", "data", "expected"), [
    ("INT64", [5.0, 7], np.array([5, 7], dtype="<i8")),
    ("UINT8", [255, 0], np.array([255, 0], dtype="<u1")),
    ("FP16", [65504], np.array([65504.0], dtype="<f2")),
    ("FP64", [1, 0.5], np.array([1.0, 0.5])),
    ("BOOL", [True, False], np.array([True, False])),
    ("INT8", [], np.empty(0, dtype="<i1")),
])
def test_plain_values_are_taken(datatype: str, data: list[Any],
                                expected: npt.NDArray[Any]) -> None:
    got = v2codec._from_json(data, datatype, [len(data)], "x")
    assert array_key(got) == array_key(expected)


@pytest.mark.parametrize(("datatype", "data", "message"), [
    ("UINT8", [300], "300 does not fit UINT8 (0 to 255)"),
    ("INT8", [1, 300], "300 does not fit INT8 (-128 to 127)"),
    ("INT8", [-129], "-129 does not fit INT8 (-128 to 127)"),
    ("INT64", [5.5], "datatype INT64 needs integers, the data holds float64"),
    ("INT64", [2**63], "9223372036854775808 does not fit INT64"),
    ("INT64", [2.0**60], "datatype INT64 needs integers, the data holds float64"),
    ("INT64", [True], "datatype INT64 needs integers, the data holds booleans"),
    ("BOOL", [1], "datatype BOOL needs booleans, the data holds int64"),
    ("FP16", [65505], "65505 does not fit FP16"),
    ("FP32", ["a"], "datatype FP32 needs numbers, the data holds strings"),
])
def test_bad_values_are_refused_in_the_same_words(datatype: str, data: list[Any],
                                                  message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")) as exc:
        v2codec._from_json(data, datatype, [len(data)], "x")
    assert exc.value.field == "x"
    old = answer(lambda: reference_from_json(data, datatype, [len(data)], "x"))
    assert old == ("invalid", (str(exc.value), "x", None))
