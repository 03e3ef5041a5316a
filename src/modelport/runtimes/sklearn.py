"""scikit-learn flavor: pickled/joblib estimators and Pipelines.

The signature comes from the fitted estimator: ``feature_names_in_``, ``n_features_in_``, the
columns a ``ColumnTransformer`` routes to its encoders, ``OneHotEncoder.categories_`` and
``classes_``. Prediction runs under scikit-learn's default configuration, with every check it
makes in process (no global switch: a step that turns a row into NaN raises, as it does in
process).

A classifier is called once, ``predict_proba``, when its final estimator is known to predict
the most probable class: labels are the probabilities' argmax, except that a row whose top
probability is a tie gets the model's own ``predict`` (at ``[0.5, 0.5]`` a LogisticRegression
predicts the second class when its decision is above zero, the argmax the first). Other
classifiers are asked ``predict`` too.

A model fitted on a DataFrame of plain numbers, made only of scikit-learn's own estimators that
do not pick columns by name, is given the batch as a 2-D array (features in its fitted order)
instead of a DataFrame: building the DataFrame and scikit-learn's checks of it cost about three
times the model itself on small batches. The load proves the two inputs answer the same on the
signature's example row before taking that path.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from modelport.runtimes import require
from modelport.signature import Feature, FeatureType, Signature
from modelport.types import Columns, Outputs

__all__ = ["SklearnRuntime", "from_estimator", "infer_signature", "load"]

_ARGMAX_LABELS = frozenset({
    "LogisticRegression", "LogisticRegressionCV", "DecisionTreeClassifier", "ExtraTreeClassifier",
    "RandomForestClassifier", "ExtraTreesClassifier", "GradientBoostingClassifier",
    "HistGradientBoostingClassifier", "BaggingClassifier", "CalibratedClassifierCV",
    "GaussianNB", "MultinomialNB", "BernoulliNB", "ComplementNB", "CategoricalNB",
    "LinearDiscriminantAnalysis", "QuadraticDiscriminantAnalysis", "MLPClassifier",
    "KNeighborsClassifier", "XGBClassifier", "LGBMClassifier"})
"""Final estimators whose ``predict`` is the class of the largest ``predict_proba`` whenever
that largest probability is unique (they predict from the same scores, and the probabilities
are a monotone function of them). Others (SVC's Platt scaling, tuned thresholds, search
wrappers, custom estimators) are asked ``predict`` as well."""
_BY_NAME = {"ColumnTransformer", "FunctionTransformer"}
"""Steps that may select or compute by column name: their model keeps its DataFrame."""
_NAN_TOLERANT = ("HistGradientBoosting", "SimpleImputer", "KNNImputer", "IterativeImputer",
                 "XGB", "LGBM")


@dataclass(frozen=True)
class SklearnRuntime:
    """A fitted scikit-learn estimator behind the :class:`~modelport.runtimes.Runtime` seam."""

    model: Any
    signature: Signature
    flavor: str = "sklearn"
    takes_array: bool = False
    """Whether the model (fitted on a DataFrame) is given a 2-D array (see the module doc)."""

    def predict(self, batch: Columns) -> Outputs:
        """One model call for the whole batch, with every check scikit-learn makes in process
        (a step that meets NaN raises here as it would there)."""
        x = to_model_input(self.signature, batch, as_array=self.takes_array)
        if not self.signature.has_proba:
            return Outputs(np.asarray(self.model.predict(x)))
        proba = np.asarray(self.model.predict_proba(x))
        if _final_name(self.model) not in _ARGMAX_LABELS:
            return Outputs(np.asarray(self.model.predict(x)), proba,
                           list(self.signature.classes or ()))
        labels = np.asarray(self.model.classes_)[proba.argmax(axis=1)]
        tied = _tied_rows(proba)
        if tied.size:  # a tie's label is the model's own call (e.g. LogisticRegression: > 0)
            labels[tied] = self.model.predict(x.iloc[tied] if hasattr(x, "iloc") else x[tied])
        return Outputs(labels, proba, list(self.signature.classes or ()))


def load(path: Path, *, signature: Signature | None = None) -> SklearnRuntime:
    """Unpickle ``path`` (joblib or pickle) and infer its signature."""
    joblib = require("joblib", "all")
    require("sklearn", "all")
    return from_estimator(joblib.load(path), signature, what=path.name)


def from_estimator(model: Any, signature: Signature | None = None, *,
                   what: str = "the model") -> SklearnRuntime:
    """A fitted estimator (however it was read: joblib, skops) behind the runtime seam."""
    if not hasattr(model, "predict"):
        from modelport.errors import ModelLoadError

        raise ModelLoadError(f"'{what}' holds a {type(model).__name__}, not a model with "
                             "predict()")
    runtime = SklearnRuntime(model, signature or infer_signature(model))
    if _array_safe(runtime):
        # scikit-learn warns on every call that an array has no feature names; the columns are
        # in the fitted order by construction, so that warning says nothing here
        warnings.filterwarnings("ignore", message="X does not have valid feature names",
                                category=UserWarning)
        runtime = replace(runtime, takes_array=True)
    return runtime


def _array_safe(runtime: SklearnRuntime) -> bool:
    """Whether a DataFrame-fitted model answers a 2-D array exactly as the DataFrame."""
    model, sig = runtime.model, runtime.signature
    names = getattr(model, "feature_names_in_", None)
    if (sig.input_kind != "dataframe" or sig.matrix_ints is None or names is None
            or tuple(str(n) for n in names) != sig.names):
        return False
    for step in _walk(model):
        kind = type(step)
        if not kind.__module__.startswith("sklearn.") or kind.__name__ in _BY_NAME:
            return False
    batch = sig.from_records([sig.example_record()])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frame, array = runtime.predict(batch), replace(runtime, takes_array=True).predict(
                batch)
    except Exception:  # the model needs its DataFrame after all
        return False
    same = np.array_equal(frame.predictions, array.predictions)
    if frame.probabilities is not None and array.probabilities is not None:
        same = same and np.array_equal(frame.probabilities, array.probabilities)
    return bool(same)


def to_model_input(signature: Signature, batch: Columns, *, as_array: bool = False) -> Any:
    """A DataFrame with the signature's columns, or a 2-D array, as the model was fitted on
    (a 2-D array also when ``as_array``)."""
    if signature.input_kind == "dataframe" and not as_array:
        import pandas as pd

        return pd.DataFrame({n: batch.data[n] for n in signature.names}, copy=False)
    return batch.stacked(signature.names).astype(signature.array_dtype, copy=False)


def infer_signature(model: Any) -> Signature:
    """What the fitted ``model`` takes and returns, read from its fitted attributes."""
    names = getattr(model, "feature_names_in_", None)
    kinds = _column_kinds(model)
    nullable = _tolerates_nan(model)
    if names is not None:
        features = tuple(_feature(str(n), kinds, nullable) for n in names)
        kind: Literal["dataframe", "array"] = "dataframe"
    else:
        n = int(getattr(model, "n_features_in_", 0))
        features = tuple(Feature(f"f{i}", "float", nullable=nullable) for i in range(n))
        kind = "array"
    classes = getattr(model, "classes_", None)
    return Signature(
        features=features,
        input_kind=kind,
        task="classification" if classes is not None else "regression",
        classes=None if classes is None else tuple(c.item() if hasattr(c, "item") else c
                                                   for c in classes),
        has_proba=classes is not None and hasattr(model, "predict_proba"),
    )


def _feature(name: str, kinds: dict[str, Feature], nullable: bool) -> Feature:
    found = kinds.get(name)
    if found is not None:
        return found if not nullable else Feature(found.name, found.dtype, found.categories, True)
    return Feature(name, "float", nullable=nullable)


def _column_kinds(model: Any) -> dict[str, Feature]:
    """Features a ColumnTransformer routes to an encoder with ``categories_``."""
    out: dict[str, Feature] = {}
    for ct in _walk(model):
        for _name, trans, cols in getattr(ct, "transformers_", []):
            cats = _categories(trans)
            if cats is None or not isinstance(cols, (list, tuple, np.ndarray)):
                continue
            for col, values in zip(cols, cats, strict=False):
                if not isinstance(col, str):
                    continue
                vals = tuple(v.item() if hasattr(v, "item") else v for v in values
                             if not (isinstance(v, float) and np.isnan(v)))
                dtype: FeatureType = "string" if any(isinstance(v, str) for v in vals) else (
                    "int" if all(isinstance(v, (int, np.integer)) for v in vals) else "float")
                out[col] = Feature(col, dtype, vals, example=vals[0] if vals else None)
    return out


def _categories(trans: Any) -> list[Any] | None:
    for step in _walk(trans):
        cats = getattr(step, "categories_", None)
        if cats is not None:
            return list(cats)
    return None


def _walk(model: Any) -> list[Any]:
    """The estimator and every step nested in it (Pipelines, ColumnTransformers)."""
    seen = [model]
    for _name, step in getattr(model, "steps", []):
        seen += _walk(step)
    for _name, trans, _cols in getattr(model, "transformers_", []):
        if not isinstance(trans, str):
            seen += _walk(trans)
    return seen


def _tolerates_nan(model: Any) -> bool:
    return any(type(s).__name__.startswith(_NAN_TOLERANT) for s in _walk(model))


def _tied_rows(proba: npt.NDArray[Any]) -> npt.NDArray[np.intp]:
    """Rows whose largest probability is shared by two classes or more."""
    if proba.ndim == 2 and proba.shape[1] == 2:
        return np.flatnonzero(proba[:, 0] == proba[:, 1])
    top = proba.max(axis=1, keepdims=True)
    return np.flatnonzero(np.count_nonzero(proba == top, axis=1) > 1)


def _final_name(model: Any) -> str:
    steps = getattr(model, "steps", None)
    return type(steps[-1][1] if steps else model).__name__
