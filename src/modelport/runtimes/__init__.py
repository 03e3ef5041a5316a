"""Model flavors behind one small protocol: a :class:`Runtime` is a signature plus ``predict``.

Each flavor lives in its own module and imports its library inside ``load()`` only, so
``import modelport`` stays light. A missing library raises
:class:`~modelport.errors.MissingExtra` with the exact ``pip install`` line.

A runtime answers what its library answers, NaN and infinity included; what serves it wraps it
in :func:`checked`, which refuses such answers (:class:`~modelport.errors.NonFiniteOutput`) and
turns what the model raises into a :class:`~modelport.errors.PredictionError`.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from modelport.errors import (
    ConfigError,
    MissingExtra,
    ModelportError,
    NonFiniteOutput,
    PredictionError,
)
from modelport.runtimes.devices import CPU, Placement, refuse_accelerator
from modelport.signature import Signature
from modelport.types import Columns, Outputs

__all__ = ["FLAVORS", "CheckedRuntime", "Example", "Runtime", "check_finite", "checked",
           "detect_flavor", "device_of", "library_versions", "load_runtime"]


@runtime_checkable
class Runtime(Protocol):
    """A loaded model: what it takes (``signature``) and how to call it (``predict``)."""

    @property
    def flavor(self) -> str:
        """The flavor's name (``sklearn``, ``onnx``, ...)."""
        ...

    @property
    def signature(self) -> Signature:
        """What the model takes and returns."""
        ...

    def predict(self, batch: Columns) -> Outputs:
        """Labels (and probabilities when the model has them) for every row of ``batch``."""
        ...


@runtime_checkable
class Placed(Protocol):
    """A runtime that knows where it runs (flavors with accelerators: torch, ONNX, XGBoost)."""

    @property
    def device(self) -> str:
        """``cpu`` or ``cuda``."""
        ...


def device_of(runtime: Runtime) -> str:
    """Where ``runtime`` runs: its own ``device``, ``cpu`` for flavors without accelerators."""
    return runtime.device if isinstance(runtime, Placed) else "cpu"


@dataclass(frozen=True)
class Example:
    """An example input for a model file that does not say what it takes (TorchScript): a
    ``.npy``/``.npz``/``.csv`` batch, and what the model's output is (``auto`` guesses:
    ``logits``, ``probabilities`` or ``values``)."""

    path: Path
    outputs: str = "auto"


@dataclass(frozen=True)
class CheckedRuntime:
    """A runtime as a server calls it: its answers go through :func:`check_finite`, and what
    the model raises becomes a :class:`~modelport.errors.PredictionError` (a 500 whose message
    names the error's type; the model's own message stays on ``__cause__``, for the log)."""

    runtime: Runtime
    flavor: str
    signature: Signature
    device: str = "cpu"

    def predict(self, batch: Columns) -> Outputs:
        """The runtime's outputs for ``batch``, refused when any of them is NaN or infinite."""
        try:
            outputs = self.runtime.predict(batch)
        except ModelportError:
            raise
        except Exception as exc:
            raise PredictionError(f"the model failed on this input ({type(exc).__name__})"
                                  ) from exc
        return check_finite(outputs)


def checked(runtime: Runtime) -> CheckedRuntime:
    """``runtime`` as a server calls it (:class:`CheckedRuntime`); itself when it already is."""
    if isinstance(runtime, CheckedRuntime):
        return runtime
    return CheckedRuntime(runtime, runtime.flavor, runtime.signature, device_of(runtime))


def check_finite(outputs: Outputs) -> Outputs:
    """``outputs`` unchanged when every float in them is finite; a model that answered NaN or
    infinity has failed, and saying so (500) beats passing on a made-up number. Only float
    arrays are looked at: labels that are strings, objects or integers cannot be NaN."""
    for arr in (outputs.predictions, outputs.probabilities):
        if arr is not None and arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            raise NonFiniteOutput()
    return outputs


# flavor -> (module, extra to install, the library's distribution names)
FLAVORS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "sklearn": ("modelport.runtimes.sklearn", "all", ("scikit-learn", "joblib", "numpy")),
    "onnx": ("modelport.runtimes.onnx", "onnx", ("onnxruntime", "numpy")),
    "xgboost": ("modelport.runtimes.xgboost", "xgboost", ("xgboost", "numpy")),
    "lightgbm": ("modelport.runtimes.lightgbm", "lightgbm", ("lightgbm", "numpy")),
    "torch": ("modelport.runtimes.torch", "torch", ("torch", "numpy")),
    "skops": ("modelport.runtimes.skops", "skops", ("scikit-learn", "skops", "numpy")),
    "pyfunc": ("modelport.runtimes.pyfunc", "mlflow", ("mlflow", "numpy")),
}
_ACCELERATED = frozenset({"torch", "onnx", "xgboost"})
"""Flavors whose ``load`` takes a :class:`~modelport.runtimes.devices.Placement`."""

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
    ".pt": "torch",
    ".pt2": "torch",
    ".pth": "torch",
    ".skops": "skops",
}


def detect_flavor(path: Path) -> str:
    """The flavor of a model file, from its suffix."""
    flavor = _SUFFIXES.get(path.suffix.lower())
    if flavor is None:
        known = ", ".join(sorted(_SUFFIXES))
        raise ConfigError(f"cannot tell the model flavor of '{path.name}' (known suffixes: "
                          f"{known}); pass --flavor")
    return flavor


def load_runtime(path: Path, flavor: str, *, signature: Signature | None = None,
                 placement: Placement | None = None, example: Example | None = None,
                 trusted: Sequence[str] = ()) -> Runtime:
    """Load ``path`` with the flavor's module; ``signature`` overrides the inferred one,
    ``placement`` says where it may run (default: the CPU), ``example`` describes the inputs of
    a torch model without a sidecar, ``trusted`` names the types the operator trusts in a
    ``.skops`` file beyond skops' own (:mod:`modelport.runtimes.skops`)."""
    module = _flavor_module(flavor)
    if example is not None and flavor != "torch":
        raise ConfigError(f"--example describes a torch model's inputs; a {flavor} model "
                          "carries its own signature")
    placement = placement or CPU
    extra: dict[str, Any] = {} if example is None else {"example": example}
    if flavor in _ACCELERATED:
        extra["placement"] = placement
    else:
        refuse_accelerator(placement, what=f"'{path.name}'", flavor=flavor)
    if flavor == "skops":
        extra["trusted"] = tuple(trusted)
    runtime: Runtime = module.load(path, signature=signature, **extra)
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
