"""A model's signature, and the vectorised validation of request data against it.

The signature is inferred from the artifact (see ``runtimes/``), never hand-written unless the
user wants to. It drives input validation, OpenAPI schemas, V2 metadata and examples.

Validation turns decoded JSON (records, rows or columns) into :class:`~modelport.types.Columns`:
one typed numpy array per feature. Every problem raises :class:`~modelport.errors.InvalidInput`
naming the row and the field. The rules, by feature type (``null``: JSON null, or NaN in a
binary tensor):

=========  =============================================================================
float      a number (not a boolean) within ±:data:`FLOAT_LIMIT`; null only when nullable
int        a whole number: an integer within int64, or a float below 2**53 in magnitude
           (exact); null only when nullable
bool       true or false, or 0 or 1
string     a string; null only when nullable
any        with categories and ``unseen="reject"``: one of them (null when nullable)
=========  =============================================================================

The general path states these rules once and words every breach (:func:`_general_column`,
fed by :meth:`Signature._general_rows`, :meth:`Signature._general_records` and
:meth:`Signature.from_columns`). Plain requests take a fast path first —
:meth:`Signature._fast_matrix` (every feature a plain number: one float64 matrix),
:meth:`Signature._plain_records` (records to rows) and :func:`_fast_column` (one column of
plain values) — which only ever *accepts*: it returns exactly what the general path would, or
``None`` for anything that is not of its plain kind, and never words an error. Their test
of plain numbers is the pair :func:`_fits` (one value) and :func:`_fit_mask` (an array).
``tests/test_signature_properties.py`` checks each fast path against the general path with
Hypothesis.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from modelport.errors import InvalidInput
from modelport.types import Columns

__all__ = ["FLOAT_LIMIT", "Feature", "FeatureType", "Signature", "UnseenPolicy", "numbers_only"]

FeatureType = Literal["float", "int", "bool", "string"]
UnseenPolicy = Literal["reject", "pass"]

_NUMPY: dict[str, Any] = {"float": np.float64, "int": np.int64, "bool": np.bool_, "string": object}
FLOAT_LIMIT = float(2**53 - 1)
"""Largest magnitude of a float feature's value: the largest integer a float64 (or a
JavaScript client) holds exactly. Past it, neighbouring integers merge; and models that scale,
square or cast values to float32 (tree ensembles, ONNX, XGBoost) overflow to infinity well
before float64 would."""
_VALUE_SCHEMA: dict[str, dict[str, Any]] = {
    "float": {"type": "number", "minimum": -FLOAT_LIMIT, "maximum": FLOAT_LIMIT},
    "int": {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
    "bool": {"anyOf": [{"type": "boolean"}, {"enum": [0, 1]}]},
    "string": {"type": "string"},
}
_MISSING = object()
_FAST_MAX_ROWS = 4096
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_INT_EXACT = float(2**53)  # integers a float64 holds exactly
_SMALL_ROWS = 4
_ROW_TYPES = frozenset({list, tuple})
_NUMBER_TYPES = frozenset({int, float})
_FAST_TYPES: dict[str, tuple[frozenset[type], Any]] = {
    "float": (frozenset({float, int}), np.float64), "int": (frozenset({int}), np.int64),
    "bool": (frozenset({bool}), np.bool_), "string": (frozenset({str}), object),
}


@dataclass(frozen=True)
class Feature:
    """One input column: its name, type, and what is known of its values."""

    name: str
    dtype: FeatureType = "float"
    categories: tuple[Any, ...] | None = None
    """Known vocabulary (from a fitted encoder or the reference data); ``None`` = open."""
    nullable: bool = False
    """Whether missing values (null/NaN) may reach the model (it imputes or handles them)."""
    example: Any = None
    known: frozenset[Any] | None = field(init=False, repr=False, compare=False)
    """The categories as a set, for the per-row fast path (``None``: open or unhashable)."""

    def __post_init__(self) -> None:
        try:
            known = None if self.categories is None else frozenset(self.categories)
        except TypeError:  # unhashable categories: the vectorised check handles them
            known = None
        object.__setattr__(self, "known", known)

    def json_schema(self, *, unseen: UnseenPolicy = "reject") -> dict[str, Any]:
        """JSON Schema of one value of this feature, exactly what validation accepts (used in
        OpenAPI): integers within int64, ``0``/``1`` for booleans too, the categories as an
        ``enum`` unless unseen categories ``pass``, ``null`` when nullable."""
        schema: dict[str, Any] = dict(_VALUE_SCHEMA[self.dtype])
        if self.categories is not None and unseen == "reject":
            schema = {"enum": [_plain(c) for c in self.categories]}
        if self.nullable:
            schema = {"anyOf": [schema, {"type": "null"}]}
        return schema

    def example_value(self) -> Any:
        """A plausible value: the recorded example, else the first category, else zero."""
        if self.example is not None:
            return self.example
        if self.categories:
            return self.categories[0]
        return {"float": 0.0, "int": 0, "bool": False, "string": ""}[self.dtype]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``modelport.yaml``."""
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype}
        if self.categories is not None:
            out["categories"] = list(self.categories)
        if self.nullable:
            out["nullable"] = True
        if self.example is not None:
            out["example"] = self.example
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Feature:
        """Inverse of :meth:`to_dict`."""
        cats = data.get("categories")
        return cls(
            name=str(data["name"]),
            dtype=data.get("dtype", "float"),
            categories=None if cats is None else tuple(cats),
            nullable=bool(data.get("nullable", False)),
            example=data.get("example"),
        )


@dataclass(frozen=True)
class Signature:
    """Inputs and outputs of a model.

    ``input_kind`` says what the model consumes: a pandas ``dataframe`` with named columns, or an
    ``array`` (2-D, features in order, of ``array_dtype``).
    """

    features: tuple[Feature, ...]
    input_kind: Literal["dataframe", "array"] = "array"
    task: Literal["classification", "regression"] = "regression"
    classes: tuple[Any, ...] | None = None
    has_proba: bool = False
    array_dtype: str = "float64"
    names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    name_set: frozenset[str] = field(init=False, repr=False, compare=False)
    matrix_ints: tuple[int, ...] | None = field(init=False, repr=False, compare=False)
    """Positions of the integer features when every feature is a plain number (float or int,
    no categories, no nulls), so batches can be one float64 matrix; otherwise ``None``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(f.name for f in self.features))
        object.__setattr__(self, "name_set", frozenset(self.names))
        plain = all(f.dtype in ("float", "int") and f.categories is None and not f.nullable
                    for f in self.features)
        ints = tuple(j for j, f in enumerate(self.features) if f.dtype == "int")
        object.__setattr__(self, "matrix_ints", ints if plain and self.features else None)

    @property
    def outputs(self) -> tuple[str, ...]:
        """Output names, as requested in V2 ``outputs``."""
        return ("predict", "predict_proba") if self.has_proba else ("predict",)

    def feature(self, name: str) -> Feature:
        """The feature called ``name``."""
        return self.features[self.names.index(name)]

    def with_features(self, features: Sequence[Feature]) -> Signature:
        """A copy with other feature descriptions (e.g. refined from reference data)."""
        return replace(self, features=tuple(features))

    def example_record(self) -> dict[str, Any]:
        """One request record with a plausible value per feature."""
        return {f.name: f.example_value() for f in self.features}

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``modelport.yaml``."""
        return {
            "input_kind": self.input_kind,
            "task": self.task,
            "classes": None if self.classes is None else [_plain(c) for c in self.classes],
            "has_proba": self.has_proba,
            "array_dtype": self.array_dtype,
            "features": [f.to_dict() for f in self.features],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        """Inverse of :meth:`to_dict`."""
        classes = data.get("classes")
        return cls(
            features=tuple(Feature.from_dict(f) for f in data["features"]),
            input_kind=data.get("input_kind", "array"),
            task=data.get("task", "regression"),
            classes=None if classes is None else tuple(classes),
            has_proba=bool(data.get("has_proba", False)),
            array_dtype=data.get("array_dtype", "float64"),
        )

    # -- validation (the rules and the two kinds of path: see the module doc) ----------------

    def from_records(
        self, records: Sequence[Any], *, unseen: UnseenPolicy = "reject", max_rows: int = 0
    ) -> Columns:
        """Validate objects keyed by feature name (``{"age": 63, ...}``) into columns."""
        _check_count(len(records), max_rows)
        rows = self._plain_records(records)
        if rows is None:
            return self._general_records(records, unseen)
        fast = self._fast_matrix(rows)
        if fast is not None:
            return fast
        return self._typed(self._transpose(rows), len(rows), unseen)

    def _plain_records(self, records: Sequence[Any]) -> list[Any] | None:
        """Fast path: the values of ``records`` in signature order (picked in C) when all are
        dicts with exactly the features as keys, else ``None``. A row is a tuple, or the bare
        value when there is one feature."""
        width = len(self.names)
        if set(map(type, records)) != {dict} or set(map(len, records)) != {width}:
            return None
        try:  # same size and every feature present: the same keys
            return list(map(operator.itemgetter(*self.names), records))
        except KeyError:
            return None

    def _general_records(self, records: Sequence[Any], unseen: UnseenPolicy) -> Columns:
        """General path: each record checked (which one breaks, and how), then its values."""
        expected = self.name_set
        for i, rec in enumerate(records):
            if not isinstance(rec, Mapping):
                raise InvalidInput(f"expected an object keyed by feature name, got "
                                   f"{_kind(rec)}", row=i)
            if rec.keys() != expected:
                _raise_key_mismatch(rec, expected, self.names, i)
        raw = {name: [rec[name] for rec in records] for name in self.names}
        return self._typed(raw, len(records), unseen)

    def _transpose(self, rows: list[Any]) -> dict[str, Any]:
        if len(self.names) == 1:
            return {self.names[0]: rows}
        return dict(zip(self.names, zip(*rows, strict=True), strict=True))

    def from_rows(
        self, rows: Sequence[Any], *, unseen: UnseenPolicy = "reject", max_rows: int = 0,
        numbers_only: bool = False,
    ) -> Columns:
        """Validate ordered rows (``[63, 1, ...]``, features in signature order) into columns.

        ``numbers_only`` says that no value is a string, a boolean or null (e.g. the JSON text
        held none: :func:`numbers_only`), which spares a type check of every value."""
        _check_count(len(rows), max_rows)
        fast = self._fast_matrix(rows, numbers_only)
        if fast is not None:
            return fast
        return self._general_rows(rows, unseen)

    def _general_rows(self, rows: Sequence[Any], unseen: UnseenPolicy) -> Columns:
        """General path: each row checked (a list of one value per feature), then its
        values judged feature by feature."""
        width = len(self.features)
        for i, row in enumerate(rows):
            if not isinstance(row, (list, tuple)):
                raise InvalidInput(f"expected a list of {width} values, got {_kind(row)}", row=i)
            if len(row) != width:
                raise InvalidInput(f"expected {width} values (one per feature: "
                                   f"{', '.join(self.names)}), got {len(row)}", row=i)
        columns = (list(c) for c in zip(*rows, strict=True))
        raw = dict(zip(self.names, columns, strict=True)) if rows else {n: [] for n in self.names}
        return self._typed(raw, len(rows), unseen)

    def _fast_matrix(self, rows: Sequence[Any], numbers_only: bool = False) -> Columns | None:
        """Fast path: the batch as one float64 matrix when every feature is a plain number
        (:attr:`matrix_ints`) and every value is a JSON number that :func:`_fits` its feature;
        else ``None``. ``numbers_only``: the caller knows no value is a string, boolean or null
        (see :meth:`from_rows`)."""
        ints = self.matrix_ints
        if ints is None or len(self.names) == 1:
            return None
        width = len(self.names)
        if not _ROW_TYPES.issuperset(map(type, rows)) or set(map(len, rows)) != {width}:
            return None
        if numbers_only and len(rows) > _SMALL_ROWS:
            try:  # a nested list in a row is a TypeError here
                flat = np.fromiter(itertools.chain.from_iterable(rows), np.float64,
                                   len(rows) * width)
            except (OverflowError, ValueError, TypeError):
                return None
            return self._fitting_matrix(flat.reshape(len(rows), width), ints)
        if not _NUMBER_TYPES.issuperset(map(type, itertools.chain.from_iterable(rows))):
            return None  # bools, strings, nulls, nested values
        if len(rows) <= _SMALL_ROWS:  # a few rows: plain Python beats numpy's per-call cost
            if not _rows_fit(rows, ints):
                return None
            return Columns.of_matrix(np.array(rows, dtype=np.float64), self.names, ints)
        try:
            matrix = np.array(rows, dtype=np.float64)
        except (OverflowError, ValueError, TypeError):
            return None
        return self._fitting_matrix(matrix, ints)

    def _fitting_matrix(self, matrix: npt.NDArray[np.float64],
                        ints: tuple[int, ...]) -> Columns | None:
        """``matrix`` as the batch when :func:`_fit_mask` holds for every value."""
        if not _fit_mask(matrix).all():
            return None
        if ints:
            sub = matrix[:, ints] if len(ints) < matrix.shape[1] else matrix
            if not _fit_mask(sub, whole=True).all():
                return None
        return Columns.of_matrix(matrix, self.names, ints)

    def from_columns(
        self, columns: Mapping[str, Any], *, unseen: UnseenPolicy = "reject", max_rows: int = 0
    ) -> Columns:
        """Validate one array/list per feature (MLServer's ``pd`` content type) into columns."""
        expected = set(self.names)
        if columns.keys() != expected:
            _raise_key_mismatch(columns, expected, self.names, None)
        lengths = {len(columns[n]) for n in self.names}
        if len(lengths) != 1:
            raise InvalidInput(f"columns have different lengths: {sorted(lengths)}")
        n_rows = lengths.pop()
        _check_count(n_rows, max_rows)
        return self._typed(dict(columns), n_rows, unseen)

    def from_matrix(
        self, matrix: npt.NDArray[Any], *, unseen: UnseenPolicy = "reject", max_rows: int = 0
    ) -> Columns:
        """Validate a 2-D array whose columns are the features in order."""
        if matrix.ndim != 2 or matrix.shape[1] != len(self.features):
            raise InvalidInput(f"expected shape [rows, {len(self.features)}], "
                               f"got {list(matrix.shape)}")
        _check_count(matrix.shape[0], max_rows)
        if self.matrix_ints is not None and matrix.dtype.kind in "iuf":
            fast = self._fitting_matrix(matrix.astype(np.float64, copy=False),
                                        self.matrix_ints)
            if fast is not None:
                return fast
        raw = {name: matrix[:, j] for j, name in enumerate(self.names)}
        return self._typed(raw, matrix.shape[0], unseen)

    def _typed(self, raw: Mapping[str, Any], n_rows: int, unseen: UnseenPolicy) -> Columns:
        """One column per feature, in signature order (the first feature that breaks a rule
        is the one the error names)."""
        return Columns({f.name: _column(f, raw[f.name], unseen) for f in self.features}, n_rows)


def numbers_only(json_text: bytes) -> bool:
    """Whether a JSON object's only strings are its keys (at most one key) and it holds no
    ``true``, ``false`` or ``null``: then every value in it is a number (or a list/object of
    numbers). Outside its one string, JSON text spells ``t``, ``f`` or ``n`` only in those
    words: a few byte searches (1 µs for 100 rows) instead of a type check of every value."""
    first = json_text.find(b'"')
    rest = json_text
    if first >= 0:
        second = json_text.find(b'"', first + 1)
        if second < 0 or json_text.find(b'"', second + 1) >= 0:
            return False
        rest = json_text[:first] + json_text[second + 1:]
    return b"t" not in rest and b"f" not in rest and b"n" not in rest


def _fits(value: float, whole: bool = False) -> bool:
    """What the fast paths take of a plain JSON number: within ±:data:`FLOAT_LIMIT` (so not
    NaN or infinite) and, for an integer feature (``whole``), a whole number. Every such value
    passes the general path's rules as it is. :func:`_fit_mask` is the same test for arrays."""
    return -FLOAT_LIMIT <= value <= FLOAT_LIMIT and (
        not whole or type(value) is int or value.is_integer())


def _fit_mask(values: npt.NDArray[np.float64], whole: bool = False) -> npt.NDArray[np.bool_]:
    """:func:`_fits` of each value of a float64 array."""
    ok: npt.NDArray[np.bool_] = np.abs(values) <= FLOAT_LIMIT
    return ok & (values == np.trunc(values)) if whole else ok


def _rows_fit(rows: Sequence[Sequence[float]], ints: tuple[int, ...]) -> bool:
    """Whether every value of a few rows :func:`_fits` its feature (``ints``: the integer
    features' positions)."""
    for row in rows:
        for v in row:
            if not _fits(v):
                return False
        for j in ints:
            if not _fits(row[j], whole=True):
                return False
    return True


def _check_count(n: int, max_rows: int) -> None:
    if n == 0:
        raise InvalidInput("the batch is empty: send at least one row")
    if max_rows and n > max_rows:
        raise InvalidInput(f"{n} rows is more than the limit of {max_rows} per request; "
                           "split the batch or use /predict/batch")


def _raise_key_mismatch(
    given: Mapping[str, Any], expected: frozenset[str] | set[str], order: Sequence[str],
    row: int | None,
) -> None:
    missing = [n for n in order if n not in given]
    if missing:
        raise InvalidInput("missing required feature", field=missing[0], row=row)
    unknown = sorted(str(k) for k in given if k not in expected)
    raise InvalidInput(f"unknown feature (expected one of: {', '.join(order)})",
                       field=unknown[0], row=row)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


def _column(feat: Feature, values: Any, unseen: UnseenPolicy) -> npt.NDArray[Any]:
    """One feature's values as its column: the fast path when it takes them, else the
    general path."""
    if type(values) in (list, tuple) and len(values) <= _FAST_MAX_ROWS:
        fast = _fast_column(feat, values, unseen)
        if fast is not None:
            return fast
    return _general_column(feat, values, unseen)


def _general_column(feat: Feature, values: Any, unseen: UnseenPolicy) -> npt.NDArray[Any]:
    """General path: every value judged by the feature's rules (module doc), the first
    breach raised with its row."""
    if isinstance(values, np.ndarray):
        arr = values
    elif feat.dtype == "int" and (exact := _int_column(feat, values)) is not None:
        arr = exact
    elif feat.dtype in ("float", "int") and not _NUMBER_TYPES.issuperset(map(type, values)):
        # numpy would turn booleans into numbers, or every value into a string: judge each
        arr = np.empty(len(values), dtype=object)
        arr[:] = list(values)
    else:
        arr = _as_array(values)
    if feat.dtype == "string":
        col = _string_column(feat, arr)
    elif feat.dtype == "bool":
        col = _bool_column(feat, arr)
    else:
        col = _numeric_column(feat, arr)
    if feat.categories is not None and unseen == "reject":
        _check_categories(feat, col)
    return col


def _fast_column(
    feat: Feature, values: Sequence[Any], unseen: UnseenPolicy
) -> npt.NDArray[Any] | None:
    """Fast path: the column when every value is a plain JSON scalar of the feature's type
    (numbers that :func:`_fits`) and a known category, else ``None``. Python-level set checks
    here beat numpy's per-call overhead up to a few thousand rows."""
    types, dtype = _FAST_TYPES[feat.dtype]
    present = set(map(type, values))
    if not types.issuperset(present):
        return None
    if dtype is np.float64 and not (_fits(min(values)) and _fits(max(values))
                                    and math.isfinite(sum(values))):  # NaN, anywhere
        return None
    if feat.categories is not None and unseen == "reject" and (
            feat.known is None or not feat.known.issuperset(values)):
        return None
    try:
        col: npt.NDArray[Any]
        if dtype is object:
            col = np.empty(len(values), dtype=object)
            col[:] = values
        else:
            col = np.array(values, dtype=dtype)
        return col
    except (OverflowError, TypeError, ValueError):  # ints past int64 and the like
        return None


def _int_column(feat: Feature, values: Sequence[Any]) -> npt.NDArray[Any] | None:
    """An integer feature's JSON numbers as int64, range-checked on the exact values (numpy
    would round a mix of large integers and floats to float64 first); None when some value is
    not a number (the general path words the error)."""
    if not _NUMBER_TYPES.issuperset(map(type, values)):
        return None
    arr = _as_array(values)
    if arr.dtype.kind == "i":
        return arr
    exact = []
    for i, value in enumerate(values):
        if type(value) is float:
            _check_whole(feat, value, i)
        elif not _INT64_MIN <= value <= _INT64_MAX:
            raise InvalidInput(f"{value} is outside the integer range (-2**63 to 2**63-1)",
                               field=feat.name, row=i)
        exact.append(int(value))
    return np.array(exact, dtype=np.int64)


def _check_whole(feat: Feature, value: float, row: int) -> None:
    """A float given for an integer feature: whole, and small enough to be exact (JSON
    integers past int64 arrive as floats: they must not pass as the nearest int64)."""
    if not value.is_integer():
        raise InvalidInput(f"expected an integer, got {value}", field=feat.name, row=row)
    if abs(value) >= _INT_EXACT:
        raise InvalidInput(f"{value:.0f} is too large to be exact as a float (an integer of "
                           "2**53 or more must be written as an integer, within int64)",
                           field=feat.name, row=row)


def _as_array(values: Sequence[Any]) -> npt.NDArray[Any]:
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError):  # ragged nested lists
        arr = np.empty(len(values), dtype=object)
        arr[:] = list(values)
    if arr.ndim != 1:
        arr = np.empty(len(values), dtype=object)
        arr[:] = list(values)
    return arr


def _numeric_column(feat: Feature, arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    if arr.dtype.kind in "iuf":
        col = arr.astype(np.float64, copy=False) if feat.dtype == "float" else arr
    else:
        col = _numeric_slow(feat, arr)
    if col.dtype.kind == "f":
        within = _fit_mask(col)
        if not within.all():
            for i in np.flatnonzero(~within):
                if not (feat.nullable and math.isnan(col[i])):
                    raise InvalidInput(_unfit(col[i]), field=feat.name, row=int(i))
    if feat.dtype == "int":
        _check_int64(feat, col)
        if col.dtype.kind != "f":
            col = col.astype(np.int64, copy=False)
        elif not feat.nullable:
            col = col.astype(np.int64)
    return col


def _unfit(value: float) -> str:
    """Why a number is refused (``value`` may be an integer too large for a float)."""
    if isinstance(value, float) and math.isnan(value):
        return "missing value (null/NaN) is not accepted by this model"
    if isinstance(value, float) and math.isinf(value):
        return "infinite value is not accepted by this model"
    digits = str(value)
    shown = f"{value:g}" if isinstance(value, float) else f"{digits[:12]}… ({len(digits)} digits)"
    return (f"{shown} is out of range: a number may be at most 2**53-1 "
            f"({FLOAT_LIMIT:.0f}) in magnitude")


def _check_int64(feat: Feature, col: npt.NDArray[Any]) -> None:
    """Integer values must be whole and within int64 (a cast would wrap them silently);
    floats also exact (see :func:`_check_whole`)."""
    if col.dtype.kind == "f":
        bad = np.isfinite(col) & ~_fit_mask(col, whole=True)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            _check_whole(feat, float(col[j]), j)
    elif col.dtype.kind == "u" and (col > _INT64_MAX).any():
        j = int(np.flatnonzero(col > _INT64_MAX)[0])
        raise InvalidInput(f"{col[j]} is outside the integer range (-2**63 to 2**63-1)",
                           field=feat.name, row=j)


def _numeric_slow(feat: Feature, arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    out = np.empty(len(arr), dtype=np.float64)
    for i, v in enumerate(arr):
        if v is None:
            if not feat.nullable:
                raise InvalidInput("missing value (null) is not accepted by this model",
                                   field=feat.name, row=i)
            out[i] = np.nan
        elif isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.number)):
            raise InvalidInput(f"expected a number, got {_kind(v)}", field=feat.name, row=i)
        elif isinstance(v, int) and not _fits(v):  # maybe past what a float holds
            raise InvalidInput(_unfit(v), field=feat.name, row=i)
        else:
            out[i] = v
    return out


def _bool_column(feat: Feature, arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    if arr.dtype.kind == "b":
        return arr
    if arr.dtype.kind in "iu" and np.isin(arr, (0, 1)).all():
        return arr.astype(np.bool_)
    for i, v in enumerate(arr):
        if not isinstance(v, (bool, np.bool_)):
            raise InvalidInput(f"expected true or false, got {_kind(v)}", field=feat.name, row=i)
    return arr.astype(np.bool_)


def _string_column(feat: Feature, arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    if arr.dtype.kind == "U":
        return arr.astype(object)
    if arr.dtype.kind == "S":
        return np.char.decode(arr, "utf-8").astype(object)
    for i, v in enumerate(arr):
        if v is None and feat.nullable:
            continue
        if not isinstance(v, str):
            raise InvalidInput(f"expected a string, got {_kind(v)}", field=feat.name, row=i)
    return arr.astype(object, copy=False)


def _check_categories(feat: Feature, col: npt.NDArray[Any]) -> None:
    assert feat.categories is not None
    known = np.asarray(feat.categories, dtype=object if feat.dtype == "string" else None)
    ok = np.isin(col, known)
    if feat.nullable and col.dtype.kind in "fO":
        ok |= np.asarray([v is None or (isinstance(v, float) and math.isnan(v)) for v in col])
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        shown = ", ".join(repr(_plain(c)) for c in feat.categories[:20])
        raise InvalidInput(f"unseen category {_plain(col[i])!r} (known: {shown})",
                           field=feat.name, row=i)


def _plain(value: Any) -> Any:
    """A numpy scalar as the plain Python value (for YAML/JSON)."""
    return value.item() if isinstance(value, np.generic) else value
