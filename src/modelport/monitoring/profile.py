"""The reference profile: what "normal" looks like, fitted once from training-like data.

Per numeric feature: bin edges at the reference quantiles (``bins`` of them, 10 by default; a
column with at most ``bins`` distinct values gets one bin per value), plus an underflow bin
(below the reference minimum), an overflow bin (above the maximum) and a missing bin; the
reference *counts* per bin (shares are counts / rows; counts are kept because chi-square
homogeneity needs them); moments. Per categorical feature (string, bool, or with a known
vocabulary): the vocabulary (the encoder's when the signature has one, else the
``max_categories`` most frequent values), an ``__other__`` bin for anything else and a missing
bin. The same for the model's outputs: the predicted class (or value), and the probability of
each class (of the positive class only for binary models).

Counting a batch into these bins is :meth:`NumericProfile.bin_index` /
:meth:`CategoricalProfile.bin_index`: vectorised numpy (binary searches), no per-row Python.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from itertools import pairwise
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from modelport.errors import ConfigError, InvalidInput
from modelport.signature import Feature, Signature
from modelport.types import Outputs

__all__ = [
    "OTHER",
    "CategoricalProfile",
    "FeatureProfile",
    "Moments",
    "NumericProfile",
    "ReferenceProfile",
    "build_profile",
]

OTHER = "__other__"
FORMAT = 1
PREDICTIONS = -1
"""``ReferenceProfile.output_sources`` entry meaning "the predicted labels/values"."""
IntArray = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Moments:
    """Summary numbers of one reference column (``count`` excludes missing values)."""

    count: int
    missing: int
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    distinct: int | None = None


@dataclass(frozen=True)
class NumericProfile:
    """Quantile bins of a numeric column.

    Bin order: underflow (``< low``), the ``len(cuts) + 1`` in-range bins split at ``cuts``
    (a value equal to a cut belongs to the bin above it), overflow (``> high``), missing.
    ``centers`` holds a representative value of every bin but missing (the reference mean of
    the bin; ``low``/``high`` for under/overflow) and positions bins for binned Wasserstein.
    """

    name: str
    low: float
    high: float
    cuts: tuple[float, ...]
    counts: tuple[int, ...]
    centers: tuple[float, ...]
    moments: Moments
    discrete: bool = False
    """One bin per distinct reference value (the column had at most ``bins`` of them)."""
    kind: Literal["numeric"] = "numeric"
    _cuts: FloatArray = field(default_factory=lambda: np.empty(0), init=False, repr=False,
                              compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_cuts", np.asarray(self.cuts, dtype=np.float64))

    @property
    def n_bins(self) -> int:
        """Bins including underflow, overflow and missing."""
        return len(self.cuts) + 4

    @property
    def out_of_range_bins(self) -> tuple[int, ...]:
        """Underflow and overflow."""
        return (0, self.n_bins - 2)

    def bin_index(self, values: npt.NDArray[Any]) -> IntArray:
        """The bin of every value (vectorised)."""
        x = _as_float(values)
        idx = np.searchsorted(self._cuts, x, side="right") + 1
        idx[x < self.low] = 0
        idx[x > self.high] = self.n_bins - 2
        idx[np.isnan(x)] = self.n_bins - 1
        return idx

    def labels(self) -> tuple[str, ...]:
        """A short human label per bin."""
        edges = [self.low, *self.cuts, self.high]
        if self.discrete:
            inner = [_fmt(e) for e in edges[:-1]]
        else:
            inner = [f"[{_fmt(a)}, {_fmt(b)})" for a, b in pairwise(edges[:-1])]
            inner.append(f"[{_fmt(edges[-2])}, {_fmt(edges[-1])}]")
        return (f"< {_fmt(self.low)}", *inner, f"> {_fmt(self.high)}", "missing")


@dataclass(frozen=True)
class CategoricalProfile:
    """Vocabulary of a categorical column. Bin order: each category, ``__other__``, missing."""

    name: str
    vocabulary: tuple[Any, ...]
    counts: tuple[int, ...]
    moments: Moments
    kind: Literal["categorical"] = "categorical"
    _cache: list[_Lookup] = field(default_factory=list, init=False, repr=False, compare=False)

    @property
    def n_bins(self) -> int:
        """Bins including ``__other__`` and missing."""
        return len(self.vocabulary) + 2

    @property
    def out_of_range_bins(self) -> tuple[int, ...]:
        """The ``__other__`` bin: categories outside the vocabulary."""
        return (len(self.vocabulary),)

    def bin_index(self, values: npt.NDArray[Any]) -> IntArray:
        """The bin of every value: a binary search in the sorted vocabulary (vectorised)."""
        if not self._cache:
            self._cache.append(_Lookup.of(self.vocabulary))
        look = self._cache[0]
        arr = np.asarray(values)
        missing = _missing(arr)
        keys: npt.NDArray[Any] = _as_float(arr) if look.numeric else arr.astype(str)
        other = len(self.vocabulary)
        if look.keys.size:
            pos = np.minimum(np.searchsorted(look.keys, keys), look.keys.size - 1)
            idx = np.where(look.keys[pos] == keys, look.order[pos], other)
        else:
            idx = np.full(arr.shape, other, dtype=np.intp)
        idx[missing] = other + 1
        return idx.astype(np.intp, copy=False)

    def labels(self) -> tuple[str, ...]:
        """A short human label per bin."""
        return (*(str(v) for v in self.vocabulary), OTHER, "missing")


FeatureProfile = NumericProfile | CategoricalProfile


@dataclass(frozen=True)
class _Lookup:
    """A vocabulary as sorted keys (numbers, or strings when any category is a string)."""

    keys: npt.NDArray[Any]
    order: IntArray
    numeric: bool

    @classmethod
    def of(cls, vocabulary: tuple[Any, ...]) -> _Lookup:
        numeric = all(isinstance(v, (bool, int, float)) for v in vocabulary)
        raw = np.asarray(vocabulary, dtype=np.float64 if numeric else str)
        order = np.argsort(raw, kind="stable").astype(np.intp)
        return cls(raw[order], order, numeric)


def _missing(arr: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    """None or NaN, elementwise in C (``x != x`` only for NaN)."""
    if arr.dtype.kind != "O":
        return np.isnan(arr) if arr.dtype.kind == "f" else np.zeros(arr.shape, dtype=bool)
    try:
        # elementwise on an object array; only NaN differs from itself
        found = (arr == None) | (arr != arr)  # noqa: E711, PLR0124
        return np.asarray(found, dtype=np.bool_)
    except TypeError:  # pandas.NA and friends refuse to be compared
        import pandas as pd

        return np.asarray(pd.isna(arr), dtype=np.bool_)


@dataclass(frozen=True)
class ReferenceProfile:
    """Bins and reference counts of every feature and output of one model.

    ``output_sources[i]`` says where ``outputs[i]`` reads from: ``-1`` the predictions,
    ``j >= 0`` column ``j`` of the probabilities.
    """

    features: tuple[FeatureProfile, ...]
    outputs: tuple[FeatureProfile, ...] = ()
    output_sources: tuple[int, ...] = ()
    rows: int = 0
    format: int = FORMAT

    def output_columns(self, outputs: Outputs) -> dict[str, npt.NDArray[Any]]:
        """The values each output profile bins, taken from one model call's ``outputs``."""
        cols: dict[str, npt.NDArray[Any]] = {}
        proba = outputs.probabilities
        for prof, src in zip(self.outputs, self.output_sources, strict=True):
            if src == PREDICTIONS:
                cols[prof.name] = np.asarray(outputs.predictions)
            elif proba is not None and proba.ndim == 2 and src < proba.shape[1]:
                cols[prof.name] = proba[:, src]
        return cols

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready)."""
        return {
            "format": self.format,
            "rows": self.rows,
            "features": [_prof_dict(p) for p in self.features],
            "outputs": [_prof_dict(p) for p in self.outputs],
            "output_sources": list(self.output_sources),
        }

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): the content of ``reference.json``."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=1, allow_nan=False)

    def digest(self) -> str:
        """sha256 (hex) of :meth:`to_json`: counters from different profiles never merge."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferenceProfile:
        """Inverse of :meth:`to_dict`."""
        if data.get("format") != FORMAT:
            raise ConfigError(f"reference profile format {data.get('format')!r} is not "
                              f"supported (expected {FORMAT}); rebuild it: modelport profile")
        return cls(
            features=tuple(_prof_from(p) for p in data["features"]),
            outputs=tuple(_prof_from(p) for p in data.get("outputs", [])),
            output_sources=tuple(int(s) for s in data.get("output_sources", [])),
            rows=int(data["rows"]),
        )

    @classmethod
    def from_json(cls, text: str) -> ReferenceProfile:
        """Inverse of :meth:`to_json`."""
        try:
            return cls.from_dict(json.loads(text))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"not a valid reference profile: {exc!r}") from exc


def build_profile(
    frame: Any,
    signature: Signature,
    outputs: Outputs | None = None,
    *,
    bins: int = 10,
    max_categories: int = 50,
) -> ReferenceProfile:
    """Fit the reference profile of ``frame`` (a pandas DataFrame with the signature's
    features; other columns are ignored) and, when given, of the model's ``outputs`` on it.

    Use held-out data, not the training rows: a model is more confident on rows it was fitted
    on, which would show up as prediction drift on any fresh data."""
    if bins < 2 or max_categories < 1:
        raise ConfigError("bins must be at least 2 and max_categories at least 1")
    if len(frame) == 0:
        raise InvalidInput("the reference data has no rows")
    absent = [n for n in signature.names if n not in frame.columns]
    if absent:
        raise InvalidInput("the reference data lacks a feature the model takes",
                           field=absent[0])
    features = tuple(_profile_column(f, frame[f.name], bins, max_categories)
                     for f in signature.features)
    if outputs is None:
        return ReferenceProfile(features, rows=len(frame))
    if len(outputs.predictions) != len(frame):
        raise InvalidInput(f"outputs have {len(outputs.predictions)} rows, the reference "
                           f"data {len(frame)}", field="outputs")
    outs, sources = _profile_outputs(signature, outputs, bins, max_categories)
    return ReferenceProfile(features, outs, sources, rows=len(frame))


def _profile_column(feat: Feature, col: Any, bins: int, max_categories: int) -> FeatureProfile:
    import pandas as pd

    if feat.dtype in ("string", "bool") or feat.categories is not None:
        values = col.to_numpy(dtype=object, na_value=None)
        vocab = feat.categories
        if vocab is None and feat.dtype == "bool":
            vocab = (False, True)
        return categorical_profile(feat.name, values, vocab, max_categories)
    try:
        numbers = pd.to_numeric(col, errors="raise")
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"expected numbers in the reference data: {exc}",
                           field=feat.name) from exc
    return numeric_profile(feat.name, numbers.to_numpy(dtype=np.float64, na_value=np.nan), bins)


def numeric_profile(name: str, values: npt.NDArray[Any], bins: int = 10) -> NumericProfile:
    """Quantile bins of ``values`` (NaN = missing)."""
    x = _as_float(values)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        raise InvalidInput("the reference data has no values for this feature (all missing)",
                           field=name)
    low, high = float(finite.min()), float(finite.max())
    distinct = np.unique(finite)
    discrete = distinct.size <= bins
    if discrete:
        cuts = distinct[1:]
    else:
        cuts = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
        cuts = cuts[cuts > low]
    moments = Moments(
        count=int(finite.size), missing=int(np.isnan(x).sum()), mean=float(finite.mean()),
        std=float(finite.std(ddof=1)) if finite.size > 1 else 0.0, min=low, max=high,
        distinct=int(distinct.size),
    )
    shell = NumericProfile(name, low, high, tuple(float(c) for c in cuts), (), (), moments,
                           discrete)
    idx = shell.bin_index(x)
    counts = np.bincount(idx, minlength=shell.n_bins)
    return NumericProfile(name, low, high, shell.cuts, tuple(int(c) for c in counts),
                          _centers(shell, idx, x), moments, discrete)


def _centers(shell: NumericProfile, idx: IntArray, x: FloatArray) -> tuple[float, ...]:
    """The reference mean of each in-range bin (its midpoint when empty); low/high outside."""
    inside = np.isfinite(x) & (idx > 0) & (idx < shell.n_bins - 2)
    n = shell.n_bins - 1
    sums = np.bincount(idx[inside], weights=x[inside], minlength=n)[:n]
    counts = np.bincount(idx[inside], minlength=n)[:n]
    edges = [shell.low, *shell.cuts, shell.high]
    mids = [shell.low, *((a + b) / 2 for a, b in pairwise(edges)), shell.high]
    out = [float(sums[i] / counts[i]) if counts[i] else float(mids[i]) for i in range(n)]
    out[0], out[-1] = shell.low, shell.high
    return tuple(out)


def categorical_profile(
    name: str, values: npt.NDArray[Any], vocabulary: tuple[Any, ...] | None,
    max_categories: int = 50,
) -> CategoricalProfile:
    """Counts of ``values`` over ``vocabulary`` (when ``None``: the most frequent values)."""
    import pandas as pd

    arr = np.asarray(values, dtype=object)
    missing = pd.isna(arr)
    present = pd.Series(arr[~missing], dtype=object)
    freq = present.value_counts(sort=False)
    if vocabulary is None:
        ranked = sorted(freq.items(), key=lambda kv: (-kv[1], str(kv[0])))
        vocabulary = tuple(sorted((k for k, _ in ranked[:max_categories]), key=_sort_key))
    shell = CategoricalProfile(name, tuple(_plain(v) for v in vocabulary), (), Moments(0, 0))
    counts = np.bincount(shell.bin_index(arr), minlength=shell.n_bins)
    moments = Moments(count=int((~missing).sum()), missing=int(missing.sum()),
                      distinct=len(freq))
    return CategoricalProfile(name, shell.vocabulary, tuple(int(c) for c in counts), moments)


def _profile_outputs(
    signature: Signature, outputs: Outputs, bins: int, max_categories: int
) -> tuple[tuple[FeatureProfile, ...], tuple[int, ...]]:
    preds = np.asarray(outputs.predictions)
    profs: list[FeatureProfile] = []
    if signature.task == "classification" or preds.dtype.kind in "OUSb":
        profs.append(categorical_profile("prediction", preds, signature.classes,
                                         max_categories))
    else:
        profs.append(numeric_profile("prediction", preds, bins))
    sources = [PREDICTIONS]
    proba = outputs.probabilities
    if proba is not None and proba.ndim == 2:
        classes = list(outputs.classes or signature.classes or range(proba.shape[1]))
        columns = [1] if proba.shape[1] == 2 else list(range(min(proba.shape[1], 20)))
        for j in columns:
            profs.append(numeric_profile(f"proba[{classes[j]}]", proba[:, j], bins))
            sources.append(j)
    return tuple(profs), tuple(sources)


def _as_float(values: npt.NDArray[Any]) -> FloatArray:
    arr = np.asarray(values)
    if arr.dtype.kind in "fiub":
        return arr.astype(np.float64, copy=False)
    import pandas as pd

    out: FloatArray = pd.to_numeric(pd.Series(arr, dtype=object), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan)
    return out


def _prof_dict(prof: FeatureProfile) -> dict[str, Any]:
    data = {f.name: getattr(prof, f.name) for f in fields(prof) if f.init}
    data["moments"] = {k: v for k, v in asdict(prof.moments).items() if v is not None}
    return data


def _prof_from(data: Mapping[str, Any]) -> FeatureProfile:
    moments = Moments(**data["moments"])
    if data["kind"] == "numeric":
        return NumericProfile(
            str(data["name"]), float(data["low"]), float(data["high"]),
            tuple(float(c) for c in data["cuts"]), tuple(int(c) for c in data["counts"]),
            tuple(float(c) for c in data["centers"]), moments, bool(data.get("discrete")))
    if data["kind"] == "categorical":
        return CategoricalProfile(str(data["name"]), tuple(data["vocabulary"]),
                                  tuple(int(c) for c in data["counts"]), moments)
    raise ValueError(f"unknown profile kind {data['kind']!r}")


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _sort_key(value: Any) -> tuple[str, Any]:
    return (type(value).__name__, value if isinstance(value, (int, float, str)) else str(value))


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if 1e4 <= abs(value) < 1e12 else f"{value:.4g}"
