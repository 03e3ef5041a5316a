"""The fast paths of validation against the general path, by property (Hypothesis).

``signature.py`` states the rules once, in its general path, which words every breach; the fast
paths (one float64 matrix for plain-number signatures, records picked in C, one plain column)
may only accept, and what they accept must be exactly what the general path makes of the same
input. Hypothesis draws signatures (every feature type, with and without categories and nulls)
and values (edge numbers around 2**53 and int64, NaN and infinities, booleans, strings, nulls,
nested lists) and holds every fast path to that.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelport import signature as sig_mod
from modelport.errors import InvalidInput
from modelport.signature import FLOAT_LIMIT, Feature, Signature, UnseenPolicy
from modelport.types import Columns

EDGE_INTS = [0, 1, -1, 2**53 - 1, 2**53, 2**53 + 1, -(2**53), 2**63 - 1, 2**63, -(2**63),
             -(2**63) - 1, 10**400]
EDGE_FLOATS = [0.0, -0.0, 0.5, 1.0, 2.0**53, 2.0**53 - 1, FLOAT_LIMIT + 2, 1e300, -1e300,
               math.inf, -math.inf, math.nan, 2.0**63]
CATEGORIES: dict[str, list[Any]] = {"float": [0.0, 1.0, 2.5], "int": [0, 1, 2],
                                    "bool": [False, True], "string": ["a", "b", "c"]}
PROFILE = settings(max_examples=400, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow])

numbers = st.one_of(st.sampled_from(EDGE_INTS), st.sampled_from(EDGE_FLOATS),
                    st.integers(-1000, 1000), st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(-(2**64), 2**64))
scalars = st.one_of(numbers, st.booleans(), st.sampled_from(["a", "b", "zz", ""]), st.none())
values = st.one_of(scalars, st.lists(st.integers(0, 3), max_size=2))


@st.composite
def features(draw: st.DrawFn, numeric: bool = False) -> Feature:
    """A feature of any type (``numeric``: a plain float or int one)."""
    dtype = draw(st.sampled_from(["float", "int"] if numeric else
                                 ["float", "int", "bool", "string"]))
    categories = None
    if not numeric and draw(st.booleans()):
        categories = tuple(CATEGORIES[dtype])
    nullable = False if numeric else draw(st.booleans())
    return Feature(f"f{draw(st.integers(0, 10**6))}", dtype, categories, nullable)


@st.composite
def signatures(draw: st.DrawFn) -> Signature:
    """Mostly all-number signatures (the matrix path), sometimes mixed ones."""
    numeric = draw(st.booleans())
    feats = draw(st.lists(features(numeric), min_size=1, max_size=4,
                          unique_by=lambda f: f.name))
    return Signature(tuple(feats))


def value_for(feat: Feature) -> st.SearchStrategy[Any]:
    """Mostly values the feature takes, sometimes anything."""
    good: st.SearchStrategy[Any] = {
        "float": st.one_of(st.integers(-1000, 1000), st.floats(-1e6, 1e6)),
        "int": st.one_of(st.integers(-1000, 1000), st.integers(-5, 5).map(float)),
        "bool": st.booleans(),
        "string": st.sampled_from(["a", "b", "c"]),
    }[feat.dtype]
    if feat.categories is not None:
        good = st.sampled_from(CATEGORIES[feat.dtype])
    return st.one_of(good, good, good, values)


@st.composite
def rows_for(draw: st.DrawFn, sig: Signature) -> list[Any]:
    """Rows of one value per feature (any number, up to past the few-rows threshold); now
    and then a row of the wrong width or not a list."""
    n = draw(st.integers(1, 12))
    rows: list[Any] = [[draw(value_for(f)) for f in sig.features] for _ in range(n)]
    if draw(st.integers(0, 9)) == 0:
        rows[draw(st.integers(0, n - 1))] = draw(st.one_of(st.lists(scalars, max_size=5),
                                                           scalars))
    return rows


def outcome(call: Any) -> tuple[str, Any]:
    """What a validation did: ("ok", columns) or ("error", (message, field, row))."""
    try:
        return "ok", call()
    except InvalidInput as exc:
        return "error", (exc.message, exc.field, exc.row)


def same_column(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return all(x == y or (_nan(x) and _nan(y)) for x, y in zip(a.tolist(), b.tolist(),
                                                                 strict=True))


def _nan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def same(a: Columns, b: Columns) -> bool:
    """The same batch: rows, feature order, and every column's dtype and values."""
    return (a.n_rows == b.n_rows and list(a.data) == list(b.data)
            and all(same_column(a.data[n], b.data[n]) for n in a.data))


def plain_numbers(rows: list[Any]) -> bool:
    """What ``numbers_only`` promises: no string, boolean or null anywhere."""
    def plain(v: Any) -> bool:
        if isinstance(v, list):
            return all(plain(x) for x in v)
        return type(v) in (int, float)
    return all(plain(r) for r in rows)


@PROFILE
@given(st.data())
def test_the_matrix_path_accepts_only_what_the_general_path_accepts_alike(
        data: st.DataObject) -> None:
    sig = data.draw(signatures())
    rows = data.draw(rows_for(sig))
    promised = plain_numbers(rows) and data.draw(st.booleans())
    fast = sig._fast_matrix(rows, promised)
    if fast is None:
        return
    kind, general = outcome(lambda: sig._general_rows(rows, "reject"))
    assert kind == "ok", f"fast path took {rows!r}, the general path says {general}"
    assert fast.matrix is not None and same(fast, general)


@PROFILE
@given(st.data())
def test_plain_records_are_the_records_values_in_order(data: st.DataObject) -> None:
    sig = data.draw(signatures())
    rows = data.draw(rows_for(sig))
    records: list[Any] = [dict(zip(sig.names, r, strict=False)) if isinstance(r, list) else r
                          for r in rows]
    if data.draw(st.booleans()) and isinstance(records[0], dict):
        records[0] = {**records[0], "extra": 1}
    unseen: UnseenPolicy = data.draw(st.sampled_from(["reject", "pass"]))
    public, general = (outcome(lambda: sig.from_records(records, unseen=unseen)),
                       outcome(lambda: sig._general_records(records, unseen)))
    assert public[0] == general[0], (public, general)
    if public[0] == "ok":
        assert same(public[1], general[1])
    else:
        assert public[1] == general[1]


@PROFILE
@given(st.data())
def test_the_column_path_accepts_only_what_the_general_path_accepts_alike(
        data: st.DataObject) -> None:
    feat = data.draw(features())
    column = data.draw(st.lists(value_for(feat), min_size=1, max_size=12))
    unseen: UnseenPolicy = data.draw(st.sampled_from(["reject", "pass"]))
    fast = sig_mod._fast_column(feat, column, unseen)
    if fast is None:
        return
    kind, general = outcome(lambda: sig_mod._general_column(feat, column, unseen))
    assert kind == "ok", f"fast path took {column!r} for {feat}, the general path says {general}"
    assert same_column(fast, general)


@PROFILE
@given(st.data())
def test_public_validation_answers_as_the_general_path_errors_included(
        data: st.DataObject) -> None:
    sig = data.draw(signatures())
    rows = data.draw(rows_for(sig))
    public = outcome(lambda: sig.from_rows(rows, numbers_only=plain_numbers(rows)))
    general = outcome(lambda: sig._general_rows(rows, "reject"))
    assert public[0] == general[0], (rows, public, general)
    if public[0] == "ok":
        assert same(public[1], general[1])
    else:
        assert public[1] == general[1]


@PROFILE
@given(st.data())
def test_matrices_take_the_fast_path_only_when_the_general_path_agrees(
        data: st.DataObject) -> None:
    sig = data.draw(signatures())
    n = data.draw(st.integers(1, 6))
    cells = st.one_of(st.sampled_from(EDGE_FLOATS), st.floats(-1e4, 1e4),
                      st.integers(-5, 5).map(float))
    matrix = np.array([[data.draw(cells) for _ in sig.names] for _ in range(n)])
    public = outcome(lambda: sig.from_matrix(matrix))
    general = outcome(lambda: sig._typed(
        {name: matrix[:, j] for j, name in enumerate(sig.names)}, n, "reject"))
    assert public[0] == general[0], (matrix, public, general)
    if public[0] == "ok":
        assert same(public[1], general[1])


@PROFILE
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                 st.integers(-(2**70), 2**70)), st.booleans())
def test_the_number_test_is_one_rule_for_a_value_and_for_an_array(value: float,
                                                                   whole: bool) -> None:
    as_array = sig_mod._fit_mask(np.array([value], dtype=np.float64), whole=whole)[0]
    exact = float(value) == value  # an integer a float64 holds as it is
    if exact:
        assert sig_mod._fits(value, whole) == bool(as_array)
    else:  # a float64 rounds it: both refuse it only when it is out of range either way
        assert not sig_mod._fits(value, whole) or bool(as_array)
