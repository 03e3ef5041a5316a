"""``modelport pack MODEL --format skops``: a joblib/pickle scikit-learn model repacked as a
``.skops`` file, with proof that it answers exactly as the original.

The original is loaded (it is the user's own file: unpickling it is what serving it would do
anyway), written with ``skops.io.dump``, and read back through the same trusted-types check a
server uses (:mod:`modelport.runtimes.skops`). The types skops does not trust by default are
those of the user's own object; the read-back trusts exactly those, and the command prints them:
serving the package needs ``--trust-type`` for each, said once by the operator.

The proof: both models answer the same rows -- the golden rows the package will keep (boundary
rows from the signature) and up to :data:`MAX_COMPARED` rows of the reference data -- and every
label and every probability must be *equal*, bit for bit, not close: skops stores the same
numpy arrays, so anything else is a conversion bug. Only then is the package written, as
:func:`modelport.package.pack` writes any package (golden rows, sha256s); its manifest's
``skops`` entry records what it was converted from and what was compared.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelport.errors import ConfigError, GoldenCheckFailed
from modelport.golden import boundary_records
from modelport.package import (
    Package,
    file_sha256,
    pack,
    read_table,
    refine_signature,
    write_manifest,
)
from modelport.runtimes import Runtime, detect_flavor, load_runtime
from modelport.types import Columns

__all__ = ["MAX_COMPARED", "SkopsConversion", "pack_skops"]

MAX_COMPARED = 10_000
"""Most rows of the reference data both models answer."""


@dataclass(frozen=True)
class SkopsConversion:
    """A package written in the skops format, and the proof it answers as the original."""

    package: Package
    rows_compared: int
    untrusted_types: tuple[str, ...]
    """Types skops does not trust by default: serving needs ``--trust-type`` for each."""


def pack_skops(model: Path, out: Path, *, name: str, version: str = "1.0.0",
               reference: Path | None = None, target: str | None = None) -> SkopsConversion:
    """Convert the joblib/pickle scikit-learn ``model`` to skops, prove equal answers, pack it."""
    from modelport.runtimes.skops import dump

    if detect_flavor(model) != "sklearn":
        raise ConfigError(f"--format skops converts scikit-learn joblib/pickle files; "
                          f"'{model.name}' is not one")
    from modelport.runtimes.sklearn import load as load_sklearn

    original = load_sklearn(model)
    frame = None
    if reference is not None:
        frame = read_table(reference)
        frame = frame.drop(columns=[c for c in (target,) if c and c in frame.columns])
    staging = Path(tempfile.mkdtemp(prefix=".skops-", dir=out.parent if out.parent.exists()
                                    else None))
    try:
        artifact = staging / f"{model.stem}.skops"
        found = dump(original.model, artifact)
        converted = load_runtime(artifact, "skops", trusted=found)
        rows = _compare(original, converted, frame, what=model.name)
        pkg = pack(artifact, out, name=name, version=version, reference=reference,
                   target=target, trusted=found)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    pkg = write_manifest(pkg, skops={
        "converted_from": model.name, "source_sha256": file_sha256(model),
        "rows_compared": rows, "equal": True, "untrusted_types": list(found)})
    return SkopsConversion(pkg, rows, tuple(found))


def _compare(original: Runtime, converted: Runtime, frame: object, *, what: str) -> int:
    """How many rows both answered identically; :class:`GoldenCheckFailed` naming the first row
    that differs."""
    sig = original.signature
    parts = [sig.from_records(boundary_records(sig), unseen="pass")]
    if frame is not None:
        sig = refine_signature(sig, frame)
        head = frame.head(MAX_COMPARED)  # type: ignore[attr-defined]
        parts.append(sig.from_columns({n: head[n].to_numpy() for n in sig.names},
                                      unseen="pass"))
    batch = Columns.concat(parts)
    a, b = original.predict(batch), converted.predict(batch)
    _same(np.asarray(a.predictions), np.asarray(b.predictions), "labels", what)
    if (a.probabilities is None) != (b.probabilities is None):
        raise GoldenCheckFailed(f"the skops copy of {what} does not give probabilities as "
                                "the original does")
    if a.probabilities is not None and b.probabilities is not None:
        _same(np.asarray(a.probabilities), np.asarray(b.probabilities), "probabilities", what)
    return batch.n_rows


def _same(a: np.ndarray, b: np.ndarray, what: str, model: str) -> None:
    equal = a.shape == b.shape and (np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if not equal:
        rows = (a != b).reshape(len(a), -1).any(axis=1) if a.shape == b.shape else [0]
        first = int(np.flatnonzero(rows)[0]) if len(np.flatnonzero(rows)) else 0
        raise GoldenCheckFailed(f"the skops copy of {model} answers differently from the "
                                f"original ({what}, first at row {first}); nothing was written")


def trusted_line(types: Sequence[str]) -> str:
    """The serve flags that trust ``types``."""
    return " ".join(f"--trust-type {t}" for t in types)
