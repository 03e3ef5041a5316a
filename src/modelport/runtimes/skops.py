"""skops flavor: scikit-learn models saved with ``skops.io``, loaded without unpickling.

A ``.skops`` file is a zip of JSON schemas and numpy arrays; ``skops.io`` rebuilds from it only
objects of types it trusts (scikit-learn's estimators, numpy, scipy's sparse matrices, builtin
containers) and refuses everything else. A joblib or pickle file runs whatever code it names
while it loads; a ``.skops`` file cannot. That is why it is the format to take models from
people or places you do not fully trust.

Before anything is built, :func:`skops.io.get_untrusted_types` lists every type in the file
that skops does not trust by default. The load goes on only when each of them was trusted by
the operator (``modelport serve/pack --trust-type TYPE``, ``MODELPORT_TRUST_TYPES``), and that
list is handed to :func:`skops.io.load` as ``trusted=`` -- never the file's own list, and never
a blanket "trust everything". Otherwise :class:`UntrustedTypes` names each type and the flag
that trusts it: at ``serve`` or ``pack`` time, before the server starts, not as a 500 later.
(Some of scikit-learn's own internals are not on skops' default list, e.g. the
``TreePredictor`` inside ``HistGradientBoostingClassifier``; trusting one is one flag.)

Once loaded the estimator is served exactly as the scikit-learn flavor serves it
(:class:`~modelport.runtimes.sklearn.SklearnRuntime`, flavor ``skops``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from modelport.errors import ModelLoadError
from modelport.runtimes import require
from modelport.signature import Signature

if TYPE_CHECKING:
    from modelport.runtimes.sklearn import SklearnRuntime

__all__ = ["UntrustedTypes", "dump", "load", "untrusted_types"]


class UntrustedTypes(ModelLoadError):
    """A ``.skops`` file holds types that neither skops nor the operator trusts."""

    status: ClassVar[int] = 422

    def __init__(self, path: Path, types: Sequence[str]) -> None:
        flags = " ".join(f"--trust-type {t}" for t in types)
        super().__init__(
            f"'{path.name}' holds {len(types)} type{'s' if len(types) != 1 else ''} that skops "
            f"does not trust: {', '.join(types)}. Loading builds objects of these types; if you "
            f"trust them, say so with: {flags} (or MODELPORT_TRUST_TYPES={','.join(types)})")
        self.types = tuple(types)


def untrusted_types(path: Path) -> list[str]:
    """Types in ``path`` that skops does not trust by default (sorted)."""
    sio = require("skops.io", "skops")
    try:
        return sorted(sio.get_untrusted_types(file=path))
    except Exception as exc:  # not a zip, no schema, a newer protocol, ...
        raise ModelLoadError(f"'{path.name}' is not a readable skops file: "
                             f"{type(exc).__name__}: {exc}") from exc


def load(path: Path, *, signature: Signature | None = None,
         trusted: Sequence[str] = ()) -> SklearnRuntime:
    """The estimator in ``path`` behind the scikit-learn runtime; :class:`UntrustedTypes` when
    it holds a type outside skops' defaults and ``trusted``."""
    sio = require("skops.io", "skops")
    require("sklearn", "skops")
    found = untrusted_types(path)
    refused = [t for t in found if t not in set(trusted)]
    if refused:
        raise UntrustedTypes(path, refused)
    needed = [t for t in found if t in set(trusted)]  # what skops.io.load is told to trust
    try:
        model = sio.load(path, trusted=needed or None)
    except Exception as exc:
        raise ModelLoadError(f"'{path.name}' could not be loaded by skops: "
                             f"{type(exc).__name__}: {exc}") from exc
    from modelport.runtimes.sklearn import from_estimator

    return replace(from_estimator(model, signature, what=path.name), flavor="skops")


def dump(model: Any, path: Path) -> list[str]:
    """Write ``model`` to ``path`` with skops; returns the types in it that skops does not trust
    by default (each needs ``--trust-type`` to be loaded)."""
    sio = require("skops.io", "skops")
    try:
        sio.dump(model, path)
    except Exception as exc:  # a type skops cannot persist (a lambda, a custom class, ...)
        raise ModelLoadError(f"skops cannot save this {type(model).__name__}: "
                             f"{type(exc).__name__}: {exc}") from exc
    return untrusted_types(path)
