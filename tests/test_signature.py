"""Validation into batches: the one-matrix path for plain numbers answers as the per-feature path.

A signature whose features are all plain numbers validates rows, records and V2 matrices into
one float64 matrix; everything the fast path does not take falls back to the per-feature path,
which words the error. These tests hold the two paths to the same results.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from modelport.errors import InvalidInput
from modelport.signature import Feature, Signature, numbers_only
from modelport.types import Columns

NUMERIC = Signature(features=(Feature("age", "int"), Feature("bp", "float"),
                              Feature("ca", "int")))
MIXED = Signature(features=(Feature("age", "int"), Feature("thal", "string")))


def _per_feature(sig: Signature, rows: list[list[Any]]) -> Columns:
    """The same rows through the per-feature path (columns input never takes the matrix)."""
    columns = {n: [r[j] for r in rows] for j, n in enumerate(sig.names)}
    return sig.from_columns(columns)


def _same(a: Columns, b: Columns) -> None:
    assert a.n_rows == b.n_rows and list(a.data) == list(b.data)
    for name in a.data:
        assert a.data[name].dtype == b.data[name].dtype, name
        np.testing.assert_array_equal(a.data[name], b.data[name])


@pytest.mark.parametrize("n", [1, 3, 40])  # below and above the small-batch threshold
def test_plain_number_rows_become_one_matrix_equal_to_the_columns(n: int) -> None:
    rows = [[30 + i, 120.5 + i, i % 4] for i in range(n)]
    batch = NUMERIC.from_rows(rows)
    assert batch.matrix is not None and batch.matrix.shape == (n, 3)
    _same(batch, _per_feature(NUMERIC, rows))
    assert batch.data["age"].dtype == np.int64 and batch.data["bp"].dtype == np.float64


def test_records_and_v2_matrices_take_the_matrix_path_too() -> None:
    records = [{"age": 63, "bp": 145.0, "ca": 0}, {"ca": 2, "bp": 130.5, "age": 41}]
    by_records = NUMERIC.from_records(records)
    assert by_records.matrix is not None
    np.testing.assert_array_equal(by_records.matrix, [[63, 145.0, 0], [41, 130.5, 2]])
    by_matrix = NUMERIC.from_matrix(np.array([[63, 145.0, 0], [41, 130.5, 2]]))
    assert by_matrix.matrix is not None
    _same(by_records, by_matrix)


def test_whole_floats_are_accepted_for_int_features_as_on_the_column_path() -> None:
    batch = NUMERIC.from_rows([[63.0, 1, 2.0]])
    assert batch.matrix is not None
    assert batch.data["age"].tolist() == [63] and batch.data["age"].dtype == np.int64


@pytest.mark.parametrize(("row", "field", "words"), [
    ([63.5, 1.0, 0], "age", "expected an integer"),
    ([True, 1.0, 0], "age", "expected a number"),
    ([63, "1", 0], "bp", "expected a number"),
    ([63, None, 0], "bp", "missing value"),
])
def test_values_the_matrix_does_not_take_get_the_per_feature_error(
        row: list[Any], field: str, words: str) -> None:
    for rows in ([row], [[1, 2.0, 3]] * 5 + [row]):  # small and large batches
        with pytest.raises(InvalidInput, match=words) as err:
            NUMERIC.from_rows(rows)
        assert err.value.field == field and err.value.row == len(rows) - 1


def test_non_finite_matrix_values_are_refused_by_name() -> None:
    with pytest.raises(InvalidInput, match="infinite") as err:
        NUMERIC.from_matrix(np.array([[1.0, np.inf, 0.0]]))
    assert err.value.field == "bp"


def test_integers_past_float64_precision_stay_exact() -> None:
    big = 2**60 + 1
    batch = NUMERIC.from_rows([[big, 1.0, 0]])
    assert batch.matrix is None and batch.data["age"].tolist() == [big]


def test_signatures_with_strings_keep_per_feature_columns() -> None:
    batch = MIXED.from_rows([[63, "normal"]])
    assert batch.matrix is None and batch.data["thal"].tolist() == ["normal"]


def test_concat_and_take_keep_the_matrix_and_agree_with_columns() -> None:
    parts = [NUMERIC.from_rows([[i, i + 0.5, i % 3]]) for i in range(5)]
    merged = Columns.concat(parts)
    assert merged.matrix is not None and merged.n_rows == 5
    _same(merged, _per_feature(NUMERIC, [[i, i + 0.5, i % 3] for i in range(5)]))
    _same(merged.take(1, 3), _per_feature(NUMERIC, [[1, 1.5, 1], [2, 2.5, 2]]))
    mixed = Columns.concat([parts[0], _per_feature(NUMERIC, [[9, 9.5, 0]])])
    assert mixed.matrix is None and mixed.data["age"].tolist() == [0, 9]


def test_stacked_gives_the_matrix_itself_or_the_columns_in_the_asked_order() -> None:
    batch = NUMERIC.from_rows([[1, 2.5, 3], [4, 5.5, 6]])
    assert batch.stacked(NUMERIC.names) is batch.matrix
    np.testing.assert_array_equal(batch.stacked(("ca", "age")), [[3, 1], [6, 4]])


@pytest.mark.parametrize(("text", "plain"), [
    (b'{"instances": [[1, 2.5, -3e2]]}', True),
    (b'{"features": [1, 2, 3]}', True),
    (b'{"instances": [[1, "2", 3]]}', False),
    (b'{"instances": [[true, 2, 3]]}', False),
    (b'{"instances": [[1, null, 3]]}', False),
    (b'{"instances": [{"age": 1}]}', False),
    (b'{"instances":[[false,2]]}', False),
    (b'{"instances": [[1,\t2E+3,\n-0.5e-1]]}', True),
    (b'[[1, 2], [3, 4]]', True),
    (b'[[1, 2], [3, n]]', False),
    (b'{"instances": [[1, 2]], "": 1}', False),
    (b'{"nullable": [[1, 2]]}', True),
])
def test_numbers_only_reads_the_json_text(text: bytes, plain: bool) -> None:
    assert numbers_only(text) is plain


def test_rows_known_to_be_numbers_validate_as_the_checked_path() -> None:
    rows = [[30 + i, 120.5 + i, i % 4] for i in range(12)]
    _same(NUMERIC.from_rows(rows, numbers_only=True), NUMERIC.from_rows(rows))
    for bad, words in (([[1, 2.0, 3]] * 11 + [[1.5, 2.0, 3]], "expected an integer"),
                       ([[1, 2.0, 3]] * 11 + [[1, [2.0], 3]], "expected a number")):
        with pytest.raises(InvalidInput, match=words) as err:
            NUMERIC.from_rows(bad, numbers_only=True)
        assert err.value.row == 11
