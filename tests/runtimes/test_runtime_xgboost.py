"""The XGBoost flavor answers exactly what XGBoost's own sklearn wrapper answers."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelport.errors import MissingExtra, ModelLoadError
from modelport.runtimes import load_runtime


@pytest.mark.parametrize("name", ["xgb_binary", "xgb_multi", "xgb_softmax"])
def test_classifier_matches_predict_proba(name: str, request: Any, records: Any) -> None:
    saved = request.getfixturevalue(name)
    rt = load_runtime(saved.path, "xgboost")
    out = rt.predict(rt.signature.from_records(records(saved.frame)))
    x = saved.frame.to_numpy() if name == "xgb_multi" else saved.frame
    np.testing.assert_allclose(out.probabilities, saved.model.predict_proba(x), rtol=1e-6)
    np.testing.assert_array_equal(out.predictions, saved.model.predict(x))


def test_regressor_matches_predict(xgb_regressor: Any, records: Any) -> None:
    rt = load_runtime(xgb_regressor.path, "xgboost")
    out = rt.predict(rt.signature.from_records(records(xgb_regressor.frame)))
    np.testing.assert_allclose(out.predictions, xgb_regressor.model.predict(xgb_regressor.frame),
                               rtol=1e-6)
    assert out.probabilities is None


def test_signature_has_booster_feature_names_all_nullable(xgb_binary: Any) -> None:
    sig = load_runtime(xgb_binary.path, "xgboost").signature
    assert sig.names == ("x0", "x1", "x2", "x3")
    assert all(f.nullable and f.dtype == "float" for f in sig.features)
    assert (sig.task, sig.classes, sig.has_proba) == ("classification", (0, 1), True)


def test_signature_of_matrix_model_names_f0_to_fn(xgb_multi: Any) -> None:
    sig = load_runtime(xgb_multi.path, "xgboost").signature
    assert sig.names == ("f0", "f1", "f2", "f3")
    assert sig.classes == (0, 1, 2)


def test_signature_of_regressor_has_no_classes(xgb_regressor: Any) -> None:
    sig = load_runtime(xgb_regressor.path, "xgboost").signature
    assert (sig.task, sig.classes, sig.has_proba) == ("regression", None, False)


def test_missing_values_reach_the_booster(xgb_binary: Any) -> None:
    rt = load_runtime(xgb_binary.path, "xgboost")
    row = {"x0": None, "x1": 0.5, "x2": float("nan"), "x3": 1.0}
    out = rt.predict(rt.signature.from_records([row]))
    expected = xgb_binary.model.predict_proba(np.array([[np.nan, 0.5, np.nan, 1.0]]))
    np.testing.assert_allclose(out.probabilities, expected, rtol=1e-6)


def test_categorical_feature_takes_category_values(xgb_categorical: Any, records: Any) -> None:
    rt = load_runtime(xgb_categorical.path, "xgboost")
    color = rt.signature.feature("color")
    assert (color.dtype, set(color.categories or ())) == ("string", {"red", "green", "blue"})
    out = rt.predict(rt.signature.from_records(records(xgb_categorical.frame)))
    np.testing.assert_allclose(out.probabilities,
                               xgb_categorical.model.predict_proba(xgb_categorical.frame),
                               rtol=1e-6)


def test_not_a_model_file_is_a_load_error(tmp_path: Path) -> None:
    bad = tmp_path / "model.json"
    bad.write_text('{"hello": 1}')
    with pytest.raises(ModelLoadError, match="not an XGBoost model"):
        load_runtime(bad, "xgboost")


def test_missing_xgboost_names_the_pip_line(xgb_binary: Any,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "xgboost", None)
    with pytest.raises(MissingExtra, match=r"pip install 'modelport\[xgboost\]'"):
        load_runtime(xgb_binary.path, "xgboost")


def test_hinge_classifier_gives_labels_without_probabilities(
    tabular: Any, tmp_path: Path, records: Any
) -> None:
    import xgboost as xgb

    x = tabular[["x0", "x1", "x2", "x3"]]
    model = xgb.XGBClassifier(n_estimators=4, objective="binary:hinge").fit(x, tabular["binary"])
    model.save_model(tmp_path / "hinge.json")
    rt = load_runtime(tmp_path / "hinge.json", "xgboost")
    out = rt.predict(rt.signature.from_records(records(x)))
    assert (rt.signature.has_proba, out.probabilities) == (False, None)
    np.testing.assert_array_equal(out.predictions, model.predict(x))
