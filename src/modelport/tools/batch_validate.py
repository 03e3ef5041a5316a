"""Validation of a chunk of rows that rejects bad rows instead of failing the whole chunk.

The signature's own validation stops at the first problem; here each feature is first checked
for the common problems in one vectorised pass (text where a number belongs, missing values,
infinities, fractions in integer features, unseen categories), every bad row is flagged with
its first problem, and the remaining rows go through the signature's validation unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from modelport.errors import ConfigError, InvalidInput
from modelport.package import LoadedModel
from modelport.signature import Feature, Signature
from modelport.types import Columns, Outputs

__all__ = ["REJECT_COLUMNS", "empty_rejects", "score_frame"]

REJECT_COLUMNS = ("source", "row", "field", "message")
"""Columns of a rejects file: input file name, 0-based data row in it, feature, problem."""


@dataclass
class _Problems:
    """Rows found bad so far in one chunk, each with its first problem."""

    bad: npt.NDArray[np.bool_]
    rows: list[int] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def flag(self, mask: npt.NDArray[np.bool_], name: str,
             message: str | Callable[[Any], str], values: Any = None) -> None:
        """Record every row of ``mask`` not already bad; ``message`` may format the value."""
        new = np.flatnonzero(mask & ~self.bad)
        if not len(new):
            return
        self.rows += new.tolist()
        self.fields += [name] * len(new)
        self.messages += ([message] * len(new) if isinstance(message, str)
                          else [message(values[i]) for i in new])
        self.bad[new] = True


def score_frame(model: LoadedModel, frame: Any, id_cols: Sequence[str], *, source: str = "",
                offset: int = 0) -> tuple[Any, Any]:
    """Validate and score one DataFrame: (scored rows, rejected rows) as Arrow tables."""
    sig = model.signature
    _check_columns(sig, frame, id_cols, source)
    problems = _Problems(np.zeros(len(frame), dtype=np.bool_))
    cols = {f.name: _precheck(f, frame[f.name], problems) for f in sig.features}
    batch = _validate_rest(sig, cols, problems)
    good = ~problems.bad
    outputs = None if batch is None else model.runtime.predict(batch)
    return _output_table(sig, frame, id_cols, good, outputs), _rejects(source, offset, problems)


def _check_columns(sig: Signature, frame: Any, id_cols: Sequence[str], source: str) -> None:
    missing = [n for n in sig.names if n not in frame.columns]
    if missing:
        raise InvalidInput(f"the input '{source}' lacks a feature the model takes",
                           field=missing[0])
    absent = [c for c in id_cols if c not in frame.columns]
    if absent:
        raise ConfigError(f"id column '{absent[0]}' is not in '{source}' "
                          f"(its columns: {', '.join(map(str, frame.columns))})")


def _precheck(feat: Feature, series: Any, problems: _Problems) -> npt.NDArray[Any]:
    """The column as an array, with its bad rows flagged in one vectorised pass."""
    if feat.dtype == "string":
        return _precheck_text(feat, series, problems)
    if feat.dtype == "bool":
        return np.asarray(series.to_numpy())  # rare: the signature's own check sorts it out
    return _precheck_number(feat, series, problems)


def _precheck_number(feat: Feature, series: Any, problems: _Problems) -> npt.NDArray[Any]:
    import pandas as pd

    raw = np.asarray(series.to_numpy())
    if raw.dtype.kind in "iu":
        if feat.categories is not None:
            problems.flag(~np.isin(raw, feat.categories), feat.name, _unseen(feat), raw)
        return raw
    if raw.dtype.kind == "f":
        num = raw
    else:
        num = pd.to_numeric(series, errors="coerce").to_numpy(np.float64, na_value=np.nan)
        problems.flag(series.notna().to_numpy() & np.isnan(num), feat.name,
                      lambda v: f"expected a number, got {v!r}", raw)
    if not feat.nullable:
        problems.flag(np.isnan(num), feat.name, "missing value (null/NaN) is not accepted by "
                      "this model")
    problems.flag(np.isinf(num), feat.name, "infinite value is not accepted by this model")
    if feat.dtype == "int":
        frac = np.isfinite(num) & (num != np.round(num))
        problems.flag(frac, feat.name, lambda v: f"expected an integer, got {v}", num)
    if feat.categories is not None:
        known = np.isin(num, feat.categories) | (feat.nullable & np.isnan(num))
        problems.flag(~known, feat.name, _unseen(feat), num)
    return num


def _precheck_text(feat: Feature, series: Any, problems: _Problems) -> npt.NDArray[Any]:
    obj = np.asarray(series.to_numpy(dtype=object, na_value=None))
    missing = np.asarray(series.isna().to_numpy())
    if not feat.nullable:
        problems.flag(missing, feat.name, "missing value (null) is not accepted by this model")
    text = np.fromiter((isinstance(v, str) for v in obj), dtype=np.bool_, count=len(obj))
    problems.flag(~text & ~missing, feat.name, lambda v: f"expected a string, got {v!r}", obj)
    if feat.categories is not None:
        known = np.asarray(series.isin(feat.categories).to_numpy()) | missing
        problems.flag(~known, feat.name, _unseen(feat), obj)
    return obj


def _unseen(feat: Feature) -> Callable[[Any], str]:
    shown = ", ".join(repr(c) for c in (feat.categories or ())[:20])
    return lambda v: f"unseen category {_plain(v)!r} (known: {shown})"


def _plain(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value.item() if isinstance(value, np.generic) else value


def _validate_rest(sig: Signature, cols: dict[str, npt.NDArray[Any]],
                   problems: _Problems) -> Columns | None:
    """The signature's own validation of the rows the precheck passed.

    Should it still find a problem, that feature is checked row by row (slow, but only for
    what the vectorised precheck does not know) and the rest validated again.
    """
    while True:
        good = ~problems.bad
        if not good.any():
            return None
        try:
            return sig.from_columns({k: v[good] for k, v in cols.items()})
        except InvalidInput as exc:
            if exc.row is None or exc.field is None:
                raise
            _rowwise(sig.feature(exc.field), cols[exc.field], problems)


def _rowwise(feat: Feature, col: npt.NDArray[Any], problems: _Problems) -> None:
    one = Signature((feat,))
    for i in np.flatnonzero(~problems.bad):
        try:
            one.from_columns({feat.name: col[i:i + 1]})
        except InvalidInput as exc:
            message = exc.message.split(": ", 1)[-1]
            problems.flag(np.arange(len(col)) == i, feat.name, message)


def _output_table(sig: Signature, frame: Any, id_cols: Sequence[str],
                  good: npt.NDArray[np.bool_], outputs: Outputs | None) -> Any:
    import pyarrow as pa

    n = int(good.sum())
    data = {c: pa.Array.from_pandas(frame[c][good]) for c in id_cols}
    kind = _prediction_dtype(sig)
    preds = np.empty(0, kind) if outputs is None else np.asarray(outputs.predictions)
    data["prediction"] = pa.array(preds.astype(kind, copy=False))
    if sig.has_proba and sig.classes is not None:
        proba = np.empty((n, len(sig.classes))) if outputs is None or outputs.probabilities is \
            None else np.asarray(outputs.probabilities, dtype=np.float64)
        for j, cls in enumerate(sig.classes):
            data[f"proba_{cls}"] = pa.array(proba[:, j])
    return pa.table(data)


def _prediction_dtype(sig: Signature) -> Any:
    if sig.task != "classification" or not sig.classes:
        return np.float64
    kind = np.asarray(sig.classes).dtype
    return object if kind.kind in "OUS" else kind


def _rejects(source: str, offset: int, problems: _Problems) -> Any:
    import pyarrow as pa

    order = np.argsort(problems.rows, kind="stable")
    return pa.table({
        "source": pa.array([source] * len(order), pa.string()),
        "row": pa.array(np.asarray(problems.rows, dtype=np.int64)[order] + offset, pa.int64()),
        "field": pa.array([problems.fields[i] for i in order], pa.string()),
        "message": pa.array([problems.messages[i] for i in order], pa.string()),
    })


def empty_rejects() -> Any:
    """A rejects table with no rows (gives the rejects file its schema up front)."""
    return _rejects("", 0, _Problems(np.zeros(0, dtype=np.bool_)))
