"""Model flavors behind one small protocol: a :class:`Runtime` is a signature plus ``predict``.

Each flavor lives in its own module and imports its library inside ``load()`` only, so
``import modelport`` stays light. A missing library raises
:class:`~modelport.errors.MissingExtra` with the exact ``pip install`` line.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from modelport.errors import ConfigError, MissingExtra
from modelport.signature import Signature
from modelport.types import Columns, Outputs

__all__ = ["FLAVORS", "Runtime", "detect_flavor", "library_versions", "load_runtime"]


@runtime_checkable
class Runtime(Protocol):
    """A loaded model: what it takes (``signature``) and how to call it (``predict``)."""

    flavor: str
    signature: Signature

    def predict(self, batch: Columns) -> Outputs:
        """Labels (and probabilities when the model has them) for every row of ``batch``."""
        ...


# flavor -> (module, extra to install, the library's distribution names)
FLAVORS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "sklearn": ("modelport.runtimes.sklearn", "all", ("scikit-learn", "joblib", "numpy")),
    "onnx": ("modelport.runtimes.onnx", "onnx", ("onnxruntime", "numpy")),
    "xgboost": ("modelport.runtimes.xgboost", "xgboost", ("xgboost", "numpy")),
    "lightgbm": ("modelport.runtimes.lightgbm", "lightgbm", ("lightgbm", "numpy")),
}

_SUFFIXES = {
    ".joblib": "sklearn",
    ".pkl": "sklearn",
    ".pickle": "sklearn",
    ".onnx": "onnx",
    ".ubj": "xgboost",
    ".json": "xgboost",
    ".xgb": "xgboost",
    ".txt": "lightgbm",
    ".lgb": "lightgbm",
}


def detect_flavor(path: Path) -> str:
    """The flavor of a model file, from its suffix."""
    flavor = _SUFFIXES.get(path.suffix.lower())
    if flavor is None:
        known = ", ".join(sorted(_SUFFIXES))
        raise ConfigError(f"cannot tell the model flavor of '{path.name}' (known suffixes: "
                          f"{known}); pass --flavor")
    return flavor


def load_runtime(path: Path, flavor: str, *, signature: Signature | None = None) -> Runtime:
    """Load ``path`` with the flavor's module; ``signature`` overrides the inferred one."""
    module = _flavor_module(flavor)
    runtime: Runtime = module.load(path, signature=signature)
    return runtime


def library_versions(flavor: str) -> dict[str, str]:
    """Installed versions of the libraries a flavor needs (recorded in packages, pinned in
    Docker images)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for dist in FLAVORS[flavor][2]:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def _flavor_module(flavor: str) -> Any:
    if flavor not in FLAVORS:
        raise ConfigError(f"unknown flavor '{flavor}' (known: {', '.join(FLAVORS)})")
    return importlib.import_module(FLAVORS[flavor][0])


def require(module: str, extra: str) -> Any:
    """Import a flavor's library, or say exactly what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(extra, module) from exc
