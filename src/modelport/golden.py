"""Golden rows: requests a model must answer, kept with the answers it gave when packed.

Every package has them. With reference data they are its first rows; without, they are made
from the signature by :func:`boundary_records`: the example row, then rows that change one
feature at a time to a value the signature knows of (the first and the last category, the
other boolean, a missing value where the model takes one, 0 and 1 for a number: the signature
of a bare artifact knows no range).

Nothing goes live before it answers them: :func:`record` refuses to pack a model that raises
on a golden row or answers it with NaN/inf, and :func:`check_own` / :func:`check_inputs`
refuse a candidate version (an alias move, a load, a traffic change) that fails its own golden
rows or the live version's. Each refusal is a :class:`~modelport.errors.GoldenCheckFailed`
naming the model, the row, its values and the model's own error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelport.errors import GoldenCheckFailed, InvalidInput, ModelportError
from modelport.runtimes import Runtime
from modelport.signature import Feature, Signature
from modelport.types import Outputs

__all__ = ["DATA_ROWS", "MAX_GENERATED", "boundary_records", "check_inputs", "check_own",
           "for_package", "record", "signatures_match"]

DATA_ROWS = 8
"""Golden rows taken from the reference data (its first rows)."""
MAX_GENERATED = 32
"""At most this many generated rows (the example row included)."""
_PER_FEATURE = 2
_SHOWN = 240  # characters of a row's values quoted in an error


def boundary_records(sig: Signature, *, limit: int = MAX_GENERATED) -> list[dict[str, Any]]:
    """The signature's example row, then rows that each change one feature of it to a
    boundary value (at most two per feature; first the first value of every feature, then
    the second, so a wide model still gets one row per feature up to ``limit``)."""
    base = sig.example_record()
    rows = [base]
    options = [(f.name, _boundaries(f, base[f.name])) for f in sig.features]
    for turn in range(_PER_FEATURE):
        for name, values in options:
            if turn < len(values) and len(rows) < limit:
                rows.append(base | {name: values[turn]})
    return rows


def _boundaries(feat: Feature, example: Any) -> list[Any]:
    if feat.categories:  # the first and the last, then those between (one may be the example)
        cats = feat.categories
        values: list[Any] = [cats[0], cats[-1], *cats[1:-1]]
    elif feat.dtype == "bool":
        values = [not example]
    elif feat.dtype in ("int", "float"):
        values = [0, 1] if feat.dtype == "int" else [0.0, 1.0]
    else:
        values = []
    if feat.nullable:
        values.append(None)
    out: list[Any] = []
    for v in values:
        if not _same(v, example) and not any(_same(v, o) for o in out):
            out.append(v)
    return out[:_PER_FEATURE]


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and bool(a == b)


def for_package(runtime: Runtime, frame: Any, *, what: str) -> dict[str, Any]:
    """Golden rows for a new package: the first rows of ``frame`` (reference data, a
    DataFrame), or :func:`boundary_records` without it; see :func:`record`."""
    if frame is None:
        records = boundary_records(runtime.signature)
    else:
        rows = frame[list(runtime.signature.names)].head(DATA_ROWS)
        records = json.loads(rows.to_json(orient="records"))
    return record(runtime, records, what=what)


def record(runtime: Runtime, records: Sequence[Mapping[str, Any]], *,
           what: str) -> dict[str, Any]:
    """``golden.json``'s content: ``records`` and what ``runtime`` answered for them.
    :class:`GoldenCheckFailed` when it raises on a row or answers NaN/inf."""
    outputs = _answer(runtime, records, what=what)
    return {
        "inputs": [dict(r) for r in records],
        "predictions": np.asarray(outputs.predictions).tolist(),
        "probabilities": None if outputs.probabilities is None
        else np.asarray(outputs.probabilities).tolist(),
    }


def check_own(runtime: Runtime, golden: Mapping[str, Any] | None, *, what: str,
              atol: float = 1e-6) -> int:
    """Answer the package's golden rows and compare with the recorded outputs (a package
    without them is checked on :func:`boundary_records`); returns how many rows were checked."""
    inputs = (golden or {}).get("inputs") or boundary_records(runtime.signature)
    outputs = _answer(runtime, inputs, what=what)
    if golden and golden.get("inputs"):
        _compare(outputs, golden, what=what, atol=atol)
    return len(inputs)


def check_inputs(runtime: Runtime, records: Sequence[Mapping[str, Any]], *, what: str,
                 source: str) -> int:
    """Answer another version's golden inputs (``source`` names it): refused when the model
    raises or answers NaN/inf. Rows its signature rejects are skipped — the server answers
    those 4xx before the model sees them. Returns how many rows were checked."""
    sig = runtime.signature
    kept: list[int] = []
    for i, rec in enumerate(records):
        try:
            sig.from_records([rec])
        except InvalidInput:
            continue
        kept.append(i)
    if kept:
        _answer(runtime, [records[i] for i in kept], what=what, source=f"of {source}",
                numbers=kept)
    return len(kept)


def signatures_match(a: Signature, b: Signature) -> bool:
    """Whether two versions take the same features, by name. Types may differ (a version
    packed from data has integers where a bare one has floats): :func:`check_inputs` skips the
    rows the candidate's signature would reject."""
    return a.name_set == b.name_set


def _answer(runtime: Runtime, records: Sequence[Mapping[str, Any]], *, what: str,
            source: str = "", numbers: Sequence[int] | None = None) -> Outputs:
    """Outputs for ``records`` in one call; on a failure, row by row to name the first bad one
    (``numbers``: the rows' numbers in the golden set they came from)."""
    sig = runtime.signature
    numbers = numbers if numbers is not None else range(len(records))
    batch = sig.from_records(records, unseen="pass")
    try:
        outputs = runtime.predict(batch)
    except Exception:  # the model's own error: find the row and quote it
        for i, rec in enumerate(records):
            _answer_one(runtime, rec, what=what, source=source, number=numbers[i])
        try:  # every row alone is answered: the batch of them is not
            return runtime.predict(batch)
        except Exception as exc:
            where = f" {source}" if source else ""
            raise GoldenCheckFailed(f"{what} refused: it raises on the {len(records)} golden "
                                    f"rows{where} together (each alone is answered): "
                                    f"{_raised(exc)}") from exc
    if (bad := _non_finite(outputs)) is not None:
        raise _refusal(what, source, numbers[bad[0]], records[bad[0]], bad[1])
    return outputs


def _answer_one(runtime: Runtime, rec: Mapping[str, Any], *, what: str, source: str,
                number: int) -> None:
    try:
        outputs = runtime.predict(runtime.signature.from_records([rec], unseen="pass"))
    except Exception as exc:
        raise _refusal(what, source, number, rec, _raised(exc)) from exc
    if (bad := _non_finite(outputs)) is not None:
        raise _refusal(what, source, number, rec, bad[1])


def _non_finite(outputs: Outputs) -> tuple[int, str] | None:
    """The first row answered with NaN/inf, and what was non-finite."""
    for name, values in (("probabilities", outputs.probabilities),
                         ("prediction", outputs.predictions)):
        arr = None if values is None else np.asarray(values)
        if arr is None or arr.dtype.kind not in "fc" or not len(arr):
            continue
        finite = np.isfinite(arr).reshape(len(arr), -1).all(axis=1)
        if not finite.all():
            row = int(np.flatnonzero(~finite)[0])
            return row, f"the model returned non-finite {name} {arr[row].tolist()}"
    return None


def _compare(outputs: Outputs, golden: Mapping[str, Any], *, what: str, atol: float) -> None:
    got = np.asarray(outputs.predictions).tolist()
    recorded = list(golden["predictions"])
    differ = [i for i in range(max(len(got), len(recorded)))
              if i >= len(got) or i >= len(recorded) or not _equal(got[i], recorded[i], atol)]
    if differ:
        raise GoldenCheckFailed(
            f"golden check failed for {what}: {len(differ)} of {len(recorded)} golden rows "
            f"(first: row {differ[0]}) predict differently from what was recorded at pack time")
    expected = golden.get("probabilities")
    if expected is not None and outputs.probabilities is not None and not np.allclose(
            outputs.probabilities, np.asarray(expected), atol=atol, rtol=0):
        raise GoldenCheckFailed(f"golden check failed for {what}: probabilities differ from "
                                f"the recorded ones by more than {atol}")


def _equal(got: Any, recorded: Any, atol: float) -> bool:
    if isinstance(got, float) and isinstance(recorded, (int, float)):
        return abs(got - recorded) <= atol + 1e-9 * abs(recorded)
    return bool(got == recorded)


def _refusal(what: str, source: str, row: int, values: Mapping[str, Any],
             problem: str) -> GoldenCheckFailed:
    shown = json.dumps(dict(values), default=str)
    if len(shown) > _SHOWN:
        shown = shown[:_SHOWN] + "…}"
    where = f" {source}" if source else ""
    return GoldenCheckFailed(f"{what} refused: golden row {row}{where} {shown}: {problem}")


def _raised(exc: BaseException) -> str:
    """The model's own error: what a serving wrapper raised it as is unwrapped
    (``PredictionError`` keeps it on ``__cause__``); modelport's own verdicts are quoted."""
    while isinstance(exc, ModelportError) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, ModelportError):
        return exc.message
    text = str(exc).strip().splitlines()
    return f"the model raised {type(exc).__name__}: {text[0] if text else '(no message)'}"
