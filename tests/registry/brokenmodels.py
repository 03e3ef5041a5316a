"""Models of the example's signature that fail on purpose, saved as users save theirs.

Importable by a server process (joblib pickles the classes and functions by reference).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.pipeline import Pipeline


def quiet_log(x: Any) -> Any:
    """``np.log`` without numpy's warnings: NaN for negatives, -inf for zeros, silently."""
    with np.errstate(all="ignore"):
        return np.log(x)


def log_pipeline(heart_dir: Path, out: Path) -> Path:
    """The issue's broken Pipeline: the example's preprocessing, then a log step (every scaled
    row has a negative value, so every row turns NaN), then a classifier fitted without it."""
    import joblib
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import FunctionTransformer

    frame = pd.read_csv(heart_dir / "heart.csv")
    pre = joblib.load(heart_dir / "model.joblib").named_steps["pre"]
    x = frame.drop(columns="condition")
    clf = LogisticRegression(max_iter=1000).fit(pre.transform(x), frame["condition"])
    model = Pipeline([("pre", pre), ("log", FunctionTransformer(quiet_log)), ("clf", clf)])
    joblib.dump(model, out)
    return out


class FailsAbove(Pipeline):
    """The example Pipeline, except that it raises ``ValueError`` when a batch holds a value of
    ``feature`` above ``limit`` (a model that breaks only on some inputs)."""

    feature = "age"
    limit = float("inf")

    def _check(self, x: Any) -> None:
        top = float(np.max(np.asarray(x[self.feature], dtype=float)))
        if top > self.limit:
            raise ValueError(f"{self.feature}={top:g} is above {self.limit:g}")

    def predict(self, X: Any, **params: Any) -> Any:
        """Refuse, or answer as the example model."""
        self._check(X)
        return super().predict(X, **params)

    def predict_proba(self, X: Any, **params: Any) -> Any:
        """Refuse, or answer as the example model."""
        self._check(X)
        return super().predict_proba(X, **params)


def fails_above(heart_dir: Path, out: Path, *, feature: str, limit: float) -> Path:
    """The example model as a :class:`FailsAbove`, saved to ``out``."""
    import joblib

    model = FailsAbove(joblib.load(heart_dir / "model.joblib").steps)
    model.feature, model.limit = feature, limit
    joblib.dump(model, out)
    return out
