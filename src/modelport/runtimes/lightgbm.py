"""LightGBM flavor: boosters saved with ``booster.save_model`` (text, ``.txt``/``.lgb``).

The task comes from the objective recorded in the model (``binary``, ``multiclass``,
``multiclassova`` are classifiers over ``0..k-1`` — LGBMClassifier encodes its labels that
way —, everything else predicts a number). Features come from ``feature_name()``; LightGBM
handles missing values natively, so every feature is nullable. Categorical features trained from
pandas keep their categories in the model file: requests send the category values and the
runtime turns them into the codes the trees split on. Prediction is one call on a float64 matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from modelport.errors import ModelLoadError
from modelport.runtimes import require
from modelport.signature import Feature, FeatureType, Signature
from modelport.types import Columns, Outputs

__all__ = ["LightGBMRuntime", "infer_signature", "load"]

Kind = Literal["binary", "multi", "regression"]
_KINDS: dict[str, Kind] = {
    "binary": "binary", "multiclass": "multi", "softmax": "multi", "multiclassova": "multi",
    "multiclass_ova": "multi", "ova": "multi", "ovr": "multi",
}


@dataclass(frozen=True)
class LightGBMRuntime:
    """A ``lightgbm.Booster`` behind the :class:`~modelport.runtimes.Runtime` seam."""

    booster: Any
    signature: Signature
    kind: Kind
    codes: dict[str, tuple[Any, ...]]
    """Categorical features and their categories, in the order of the codes the model uses."""
    flavor: str = "lightgbm"

    def predict(self, batch: Columns) -> Outputs:
        """One ``Booster.predict`` for the whole batch."""
        x = (batch.stacked(self.signature.names) if not self.codes else
             np.column_stack([self._column(batch, n) for n in self.signature.names]))
        raw = np.asarray(self.booster.predict(x, num_threads=1))
        if self.kind == "regression":
            return Outputs(raw)
        proba = np.column_stack([1.0 - raw, raw]) if self.kind == "binary" else raw
        classes = list(self.signature.classes or range(proba.shape[1]))
        return Outputs(np.asarray(classes)[proba.argmax(axis=1)], proba, classes)

    def _column(self, batch: Columns, name: str) -> npt.NDArray[np.float64]:
        col = batch.data[name]
        cats = self.codes.get(name)
        if cats is None:
            return np.asarray(col, dtype=np.float64)
        import pandas as pd

        codes: npt.NDArray[np.float64] = np.asarray(
            pd.Categorical(col, categories=list(cats)).codes, dtype=np.float64)
        codes[codes < 0] = np.nan  # unseen or missing: LightGBM's missing branch
        return codes


def load(path: Path, *, signature: Signature | None = None) -> LightGBMRuntime:
    """Load a booster saved with ``save_model`` and read its objective and features."""
    lgb = require("lightgbm", "lightgbm")
    try:
        booster = lgb.Booster(model_file=str(path))
    except lgb.basic.LightGBMError as exc:
        raise ModelLoadError(f"'{path.name}' is not a LightGBM model saved with save_model: "
                             f"{exc}") from exc
    sig = signature or infer_signature(booster)
    return LightGBMRuntime(booster, sig, objective_kind(booster), categorical_codes(booster))


def objective_kind(booster: Any) -> Kind:
    """What the booster's objective makes of its output."""
    objective = str(booster.params.get("objective", "regression")).split()[0]
    return _KINDS.get(objective, "regression")


def categorical_codes(booster: Any) -> dict[str, tuple[Any, ...]]:
    """Categorical features trained from pandas, with their categories in code order."""
    names = booster.feature_name()
    indices = booster.params.get("categorical_feature") or []
    recorded = getattr(booster, "pandas_categorical", None) or []
    if isinstance(indices, (int, str)):
        indices = [indices]
    return {names[int(i)]: tuple(cats) for i, cats in zip(indices, recorded, strict=False)}


def infer_signature(booster: Any) -> Signature:
    """Features and classes as the booster records them."""
    codes = categorical_codes(booster)
    features = tuple(_feature(n, codes.get(n)) for n in booster.feature_name())
    kind = objective_kind(booster)
    if kind == "regression":
        return Signature(features, "array", "regression")
    n_classes = 2 if kind == "binary" else int(booster.num_model_per_iteration())
    return Signature(features, "array", "classification", tuple(range(n_classes)),
                     has_proba=True)


def _feature(name: str, categories: tuple[Any, ...] | None) -> Feature:
    if categories is None:
        return Feature(name, "float", nullable=True)
    dtype: FeatureType = "string" if any(isinstance(c, str) for c in categories) else "int"
    return Feature(name, dtype, categories, nullable=True, example=categories[0])
