"""Runtimes answer what their library answers: no switch hides a model's own error, labels are
the model's own at ties, and served answers with NaN/inf in them are refused."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import FixedThresholdClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from modelport.errors import NonFiniteOutput, PredictionError
from modelport.runtimes import CheckedRuntime, check_finite, checked
from modelport.runtimes.sklearn import SklearnRuntime, infer_signature
from modelport.runtimes.xgboost import load as load_xgboost
from modelport.types import Columns, Outputs
from tests.server.conftest import quiet_log


def _runtime(model: Any) -> SklearnRuntime:
    return SklearnRuntime(model, infer_signature(model))


def _batch(runtime: SklearnRuntime, rows: list[list[float]]) -> Columns:
    return runtime.signature.from_rows(rows)


@pytest.fixture(scope="module")
def positive() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    x = rng.uniform(0.5, 5.0, size=(120, 2))
    return x, (x[:, 0] > 2.5).astype(int)


def test_a_step_that_makes_nan_raises_as_it_does_in_process(
        positive: tuple[np.ndarray, np.ndarray]) -> None:
    """A log step turns a negative value into NaN; the classifier after it refuses NaN in
    process, and so it does behind the runtime (no assume_finite for every step)."""
    model = make_pipeline(FunctionTransformer(quiet_log), LogisticRegression()).fit(*positive)
    row = [[-1.0, 2.0]]
    with pytest.raises(ValueError, match="Input X contains NaN"):
        model.predict_proba(np.asarray(row))
    with pytest.raises(ValueError, match="Input X contains NaN"):
        _runtime(model).predict(_batch(_runtime(model), row))


def test_a_tie_gets_the_models_own_label() -> None:
    """At a decision of 1e-300 LogisticRegression predicts 'yes' while both probabilities are
    0.5 (their argmax says 'no')."""
    x = np.array([[-1.0], [1.0], [-2.0], [2.0]])
    model = LogisticRegression().fit(x, np.array(["no", "yes", "no", "yes"]))
    model.coef_[:] = 1.0
    model.intercept_[:] = 0.0
    runtime = _runtime(model)
    rows = [[1e-300], [-1e-300], [3.0], [-3.0]]
    out = runtime.predict(_batch(runtime, rows))
    assert out.probabilities is not None and out.probabilities[0].tolist() == [0.5, 0.5]
    assert out.predictions.tolist() == model.predict(np.asarray(rows)).tolist() == [
        "yes", "no", "yes", "no"]


def test_a_three_way_tie_gets_the_models_own_label() -> None:
    """Decisions 0, 1e-17 and -5e-17 are three equal probabilities once exponentiated: the
    model predicts the largest decision (class 'b'), the argmax would say 'a'."""
    x = np.array([[-1.0], [0.0], [1.0], [2.0], [-2.0], [0.5]])
    model = LogisticRegression().fit(x, np.array(["a", "b", "c", "a", "b", "c"]))
    model.coef_[:] = np.array([[0.0], [1.0], [-5.0]])
    model.intercept_[:] = 0.0
    runtime = _runtime(model)
    out = runtime.predict(_batch(runtime, [[1e-17]]))
    assert out.probabilities is not None and len(set(out.probabilities[0].tolist())) == 1
    assert out.predictions.tolist() == model.predict(np.array([[1e-17]])).tolist() == ["b"]


def test_a_classifier_not_known_to_predict_its_argmax_is_asked_predict(
        positive: tuple[np.ndarray, np.ndarray]) -> None:
    """A tuned threshold (0.9) moves labels away from the probabilities' argmax."""
    x, y = positive
    model = FixedThresholdClassifier(LogisticRegression(), threshold=0.9).fit(x, y)
    proba = model.predict_proba(x)
    assert (model.predict(x) != model.classes_[proba.argmax(axis=1)]).any()  # the premise
    runtime = _runtime(model)
    out = runtime.predict(_batch(runtime, x.tolist()))
    assert out.predictions.tolist() == model.predict(x).tolist()
    assert out.probabilities is not None and np.array_equal(out.probabilities, proba)


def test_xgboost_checks_the_frames_feature_names(xgb_categorical: Any) -> None:
    """A signature whose features are not the booster's, in its order, is refused by XGBoost
    (``validate_features``) instead of being scored column by column."""
    runtime = load_xgboost(xgb_categorical.path)
    swapped = runtime.signature.with_features(runtime.signature.features[::-1])
    wrong = replace(runtime, signature=swapped)
    record = {"a": 0.5, "color": "red"}
    assert runtime.predict(runtime.signature.from_records([record])).predictions.shape == (1,)
    with pytest.raises(ValueError, match="feature_names mismatch"):
        wrong.predict(swapped.from_records([record]))


NON_FINITE = [
    ("NaN probability", Outputs(np.array([0, 1]), np.array([[0.5, 0.5], [np.nan, 0.5]]))),
    ("inf prediction", Outputs(np.array([1.0, np.inf]))),
    ("-inf float32 prediction", Outputs(np.array([-np.inf], dtype=np.float32))),
]


@pytest.mark.parametrize("outputs", [c[1] for c in NON_FINITE], ids=[c[0] for c in NON_FINITE])
def test_non_finite_outputs_are_refused(outputs: Outputs) -> None:
    with pytest.raises(NonFiniteOutput, match="model returned non-finite output") as info:
        check_finite(outputs)
    assert info.value.status == 500


FINE = [
    ("finite floats", Outputs(np.array([0.0, -0.0, 1e308]), np.array([[5e-324, 1.0]] * 3))),
    ("string labels", Outputs(np.array(["no", "yes"], dtype=object))),
    ("integer labels", Outputs(np.array([0, 1]))),
]


@pytest.mark.parametrize("outputs", [c[1] for c in FINE], ids=[c[0] for c in FINE])
def test_finite_and_non_float_outputs_pass_unchanged(outputs: Outputs) -> None:
    assert check_finite(outputs) is outputs


def test_checked_runtime_refuses_nan_and_wraps_once(positive: tuple[np.ndarray, np.ndarray]
                                                    ) -> None:
    model = LogisticRegression().fit(*positive)
    model.intercept_[:] = np.nan  # scikit-learn raises nothing: every probability is NaN
    runtime = _runtime(model)
    guarded = checked(runtime)
    assert isinstance(guarded, CheckedRuntime) and checked(guarded) is guarded
    assert (guarded.flavor, guarded.signature) == (runtime.flavor, runtime.signature)
    batch = _batch(runtime, [[1.0, 1.0]])
    assert np.isnan(runtime.predict(batch).probabilities).all()  # type: ignore[arg-type]
    with pytest.raises(NonFiniteOutput):
        guarded.predict(batch)


def test_checked_runtime_turns_a_model_error_into_a_prediction_error(
        positive: tuple[np.ndarray, np.ndarray]) -> None:
    """The client's message names the error's type only; the model's words stay on the cause
    (for the log)."""
    model = make_pipeline(FunctionTransformer(quiet_log), LogisticRegression()).fit(*positive)
    guarded = checked(_runtime(model))
    with pytest.raises(PredictionError, match=r"^the model failed on this input \(ValueError\)$"
                       ) as info:
        guarded.predict(_batch(_runtime(model), [[-1.0, 2.0]]))
    assert "Input X contains NaN" in str(info.value.__cause__)


def test_string_labels_are_plain_strings(positive: tuple[np.ndarray, np.ndarray]) -> None:
    """A classifier fitted on a numpy string array labels with numpy strings, which orjson
    refuses (a 500 on every native request): outputs hold them as an object array of ``str``,
    which the encoders take."""
    x, y = positive
    model = LogisticRegression().fit(x, np.where(y == 1, "yes", "no"))
    assert model.classes_.dtype.kind == "U"  # the premise
    runtime = _runtime(model)
    out = runtime.predict(_batch(runtime, [[4.0, 1.0], [1.0, 1.0]]))
    assert out.predictions.dtype == object
    assert [type(v) for v in out.predictions] == [str, str]
    assert out.predictions.tolist() == ["yes", "no"]
