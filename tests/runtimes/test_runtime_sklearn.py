"""scikit-learn runtime: a DataFrame-fitted model of plain numbers takes a 2-D array only when
that answers exactly as its DataFrame does."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from modelport.package import LoadedModel, load_model
from modelport.runtimes.sklearn import SklearnRuntime


class _PicksByName(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """A user transformer that reads a column by name (an array would break it)."""

    def fit(self, x: Any, y: Any = None) -> _PicksByName:
        self.feature_names_in_ = np.asarray(x.columns, dtype=object)
        self.n_features_in_ = x.shape[1]
        return self

    def transform(self, x: Any) -> Any:
        return np.column_stack([x["a"] * 2, x["b"]])


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame({"a": rng.integers(0, 50, 300), "b": rng.normal(0, 1, 300).round(2)})


def _save(model: Any, frame: pd.DataFrame, target: Any, path: Path) -> LoadedModel:
    joblib.dump(model.fit(frame, target), path)
    return load_model(path)


def test_numeric_pipeline_takes_the_array_and_answers_as_with_the_frame(
        frame: pd.DataFrame, tmp_path: Path) -> None:
    target = (frame["a"] > 25).astype(int)
    model = Pipeline([("s", StandardScaler()),
                      ("c", GradientBoostingClassifier(n_estimators=20, random_state=0))])
    runtime = _save(model, frame, target, tmp_path / "m.joblib").runtime
    assert isinstance(runtime, SklearnRuntime) and runtime.takes_array
    batch = runtime.signature.from_rows(frame.to_numpy().tolist())
    assert batch.matrix is not None
    with warnings.catch_warnings(record=True) as seen:  # the feature-name warning is filtered
        out = runtime.predict(batch)
    assert not seen
    np.testing.assert_array_equal(out.probabilities, model.predict_proba(frame))  # type: ignore[arg-type]
    np.testing.assert_array_equal(out.predictions, model.predict(frame))


@pytest.mark.parametrize("step", [
    FunctionTransformer(np.abs), _PicksByName(),
], ids=["function-transformer", "user-transformer"])
def test_models_that_may_need_names_keep_their_dataframe(
        step: Any, frame: pd.DataFrame, tmp_path: Path) -> None:
    model = Pipeline([("t", step), ("r", LinearRegression())])
    loaded = _save(model, frame, frame["a"] * 0.5 + frame["b"], tmp_path / "m.joblib")
    runtime = loaded.runtime
    assert isinstance(runtime, SklearnRuntime) and not runtime.takes_array
    batch = runtime.signature.from_rows(frame.head(5).to_numpy().tolist())
    np.testing.assert_allclose(runtime.predict(batch).predictions, model.predict(frame.head(5)))


def test_column_transformer_example_keeps_its_dataframe(heart_package: Path) -> None:
    runtime = load_model(heart_package, runtime="native").runtime
    assert isinstance(runtime, SklearnRuntime) and not runtime.takes_array
