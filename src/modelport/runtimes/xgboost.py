"""XGBoost flavor: boosters saved with ``save_model`` (``.json``, ``.ubj``, ``.xgb``).

The task comes from the booster's objective (``save_config()``): ``binary:logistic`` gives
probabilities ``[1 - p, p]`` over classes ``(0, 1)``, ``multi:softprob``/``multi:softmax`` give
``(n, k)`` probabilities over ``0..k-1`` (XGBClassifier requires those labels), anything else is
a regression. Features and their types come from the booster (``feature_names``,
``feature_types``; ``f0..`` when it was trained on a bare matrix); XGBoost handles missing
values natively, so every feature is nullable. Prediction is one ``inplace_predict`` on a
float32 matrix, or on a DataFrame when the model has categorical features.

The booster's ``device`` follows the placement: ``cuda`` when XGBoost was built with CUDA and a
GPU is visible (``auto`` falls back to the CPU and logs it; an explicit ``cuda`` that cannot be
met is an error at load).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from modelport.errors import ConfigError, ModelLoadError
from modelport.runtimes import require
from modelport.runtimes.devices import CPU, Placement, choose, cuda_device_count
from modelport.signature import Feature, FeatureType, Signature
from modelport.types import Columns, Outputs

__all__ = ["XGBoostRuntime", "infer_signature", "load"]

Kind = Literal["binary", "binary_margin", "multi", "multi_margin", "labels", "regression"]
_KINDS: dict[str, Kind] = {
    "binary:logistic": "binary", "binary:logitraw": "binary_margin",
    "multi:softprob": "multi", "multi:softmax": "multi_margin", "binary:hinge": "labels",
}
_TYPES: dict[str, FeatureType] = {"int": "int", "i": "bool", "c": "string"}


@dataclass(frozen=True)
class XGBoostRuntime:
    """An ``xgboost.Booster`` behind the :class:`~modelport.runtimes.Runtime` seam."""

    booster: Any
    signature: Signature
    kind: Kind
    categorical: tuple[str, ...] = ()
    flavor: str = "xgboost"
    device: str = "cpu"

    def predict(self, batch: Columns) -> Outputs:
        """One ``inplace_predict`` for the whole batch."""
        x = self._input(batch)
        margin = self.kind.endswith("_margin")
        raw = np.asarray(self.booster.inplace_predict(
            x, predict_type="margin" if margin else "value"))
        if self.kind == "regression":
            return Outputs(raw)
        if self.kind == "labels":
            return Outputs(raw.astype(np.int64), None, list(self.signature.classes or ()))
        proba = _proba(raw, self.kind)
        classes = list(self.signature.classes or range(proba.shape[1]))
        return Outputs(np.asarray(classes)[proba.argmax(axis=1)], proba, classes)

    def _input(self, batch: Columns) -> Any:
        if not self.categorical:
            return batch.stacked(self.signature.names).astype(np.float32, copy=False)
        import pandas as pd

        frame = {}
        for feat in self.signature.features:
            col = batch.data[feat.name]
            if feat.name in self.categorical:
                frame[feat.name] = pd.Categorical(col, categories=feat.categories)
            else:
                frame[feat.name] = np.asarray(col, dtype=np.float32)
        return pd.DataFrame(frame, copy=False)


def load(path: Path, *, signature: Signature | None = None,
         placement: Placement = CPU) -> XGBoostRuntime:
    """Load a booster saved with ``save_model``, on the device ``placement`` allows, and read
    its objective and features."""
    xgb = require("xgboost", "xgboost")
    booster = xgb.Booster()
    try:
        booster.load_model(str(path))
    except xgb.core.XGBoostError as exc:
        raise ModelLoadError(f"'{path.name}' is not an XGBoost model saved with save_model: "
                             f"{str(exc).splitlines()[0]}") from exc
    booster.set_param({"nthread": 1})  # one call per thread: serving runs many at once
    device = _device(xgb, placement, path.name)
    if device != "cpu":
        booster.set_param({"device": device})
    sig = signature or infer_signature(booster)
    types = booster.feature_types or ()
    categorical = tuple(n for n, t in zip(sig.names, types, strict=False) if t == "c")
    return XGBoostRuntime(booster, sig, objective_kind(booster), categorical, device=device)


def _device(xgb: Any, placement: Placement, name: str) -> str:
    if placement.providers:
        raise ConfigError("--providers lists ONNX Runtime execution providers; an XGBoost "
                          "model takes --device")
    built = bool(xgb.build_info().get("USE_CUDA"))
    missing = ("no CUDA device is visible" if built else
               "this XGBoost was built without CUDA")
    return choose(placement, what=f"'{name}' (xgboost)", usable=built and cuda_device_count() > 0,
                  missing=missing)


def objective_kind(booster: Any) -> Kind:
    """What the booster's objective makes of its raw output."""
    name = str(json.loads(booster.save_config())["learner"]["objective"]["name"])
    return _KINDS.get(name, "regression")


def infer_signature(booster: Any) -> Signature:
    """Features, types and classes as the booster records them."""
    names = booster.feature_names or [f"f{i}" for i in range(booster.num_features())]
    types = booster.feature_types or ["float"] * len(names)
    cats = _categories(booster) if "c" in types else {}
    features = tuple(_feature(n, t, cats.get(n)) for n, t in zip(names, types, strict=True))
    kind = objective_kind(booster)
    if kind == "regression":
        return Signature(features, "array", "regression", array_dtype="float32")
    # XGBClassifier.save_model records only its estimator type: its classes are 0..k-1
    config = json.loads(booster.save_config())["learner"]["learner_model_param"]
    n_classes = max(2, int(config.get("num_class", "0")))
    return Signature(features, "array", "classification", tuple(range(n_classes)),
                     has_proba=kind != "labels", array_dtype="float32")


def _feature(name: str, xgb_type: str, categories: tuple[Any, ...] | None) -> Feature:
    dtype = _TYPES.get(xgb_type, "float")
    if categories is not None and not any(isinstance(c, str) for c in categories):
        dtype = "int"
    return Feature(name, dtype, categories, nullable=True)


def _categories(booster: Any) -> dict[str, tuple[Any, ...]]:
    """Categories stored with the model (XGBoost >= 3.1 keeps them; needs pyarrow)."""
    try:
        pairs = booster.get_categories(export_to_arrow=True).to_arrow()
    except (AttributeError, TypeError, ImportError):  # older XGBoost or no pyarrow
        return {}
    return {name: tuple(arr.to_pylist()) for name, arr in pairs if arr is not None}


def _proba(raw: npt.NDArray[Any], kind: Kind) -> npt.NDArray[np.floating[Any]]:
    if kind.startswith("binary"):
        p = raw.ravel() if kind == "binary" else 1.0 / (1.0 + np.exp(-raw.ravel()))
        return np.column_stack([1.0 - p, p])
    if kind == "multi":
        return raw
    shifted = np.exp(raw - raw.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]
