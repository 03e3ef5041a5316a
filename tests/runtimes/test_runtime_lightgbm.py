"""The LightGBM flavor answers exactly what LightGBM's own sklearn wrapper answers."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelport.errors import MissingExtra, ModelLoadError
from modelport.runtimes import load_runtime


@pytest.mark.parametrize("name", ["lgb_binary", "lgb_multi", "lgb_categorical"])
def test_classifier_matches_predict_proba(name: str, request: Any, records: Any) -> None:
    saved = request.getfixturevalue(name)
    rt = load_runtime(saved.path, "lightgbm")
    out = rt.predict(rt.signature.from_records(records(saved.frame)))
    np.testing.assert_allclose(out.probabilities, saved.model.predict_proba(saved.frame),
                               rtol=1e-9)
    np.testing.assert_array_equal(out.predictions, saved.model.predict(saved.frame))


def test_regressor_matches_predict(lgb_regressor: Any, records: Any) -> None:
    rt = load_runtime(lgb_regressor.path, "lightgbm")
    out = rt.predict(rt.signature.from_records(records(lgb_regressor.frame)))
    np.testing.assert_allclose(out.predictions, lgb_regressor.model.predict(lgb_regressor.frame),
                               rtol=1e-9)
    assert out.probabilities is None


@pytest.mark.parametrize(("name", "task", "classes"), [
    ("lgb_binary", "classification", (0, 1)),
    ("lgb_multi", "classification", (0, 1, 2)),
    ("lgb_regressor", "regression", None),
], ids=["binary", "multiclass", "regression"])
def test_signature_task_and_classes_come_from_the_objective(
        name: str, task: str, classes: Any, request: Any) -> None:
    sig = load_runtime(request.getfixturevalue(name).path, "lightgbm").signature
    assert (sig.task, sig.classes, sig.has_proba) == (task, classes, classes is not None)


def test_signature_names_features_as_the_booster_does(lgb_binary: Any) -> None:
    sig = load_runtime(lgb_binary.path, "lightgbm").signature
    assert sig.names == ("x0", "x1", "x2", "x3")
    assert all(f.nullable and f.dtype == "float" for f in sig.features)


def test_pandas_categorical_feature_keeps_its_categories(lgb_categorical: Any) -> None:
    color = load_runtime(lgb_categorical.path, "lightgbm").signature.feature("color")
    assert (color.dtype, color.categories) == ("string", ("blue", "green", "red"))


def test_missing_values_reach_the_booster(lgb_binary: Any) -> None:
    rt = load_runtime(lgb_binary.path, "lightgbm")
    out = rt.predict(rt.signature.from_records([{"x0": None, "x1": 1.0, "x2": 0.0, "x3": 0.0}]))
    frame = lgb_binary.frame.head(1).copy()
    frame.loc[:, :] = [[np.nan, 1.0, 0.0, 0.0]]
    np.testing.assert_allclose(out.probabilities, lgb_binary.model.predict_proba(frame))


def test_not_a_model_file_is_a_load_error(tmp_path: Path) -> None:
    bad = tmp_path / "model.txt"
    bad.write_text("hello\n")
    with pytest.raises(ModelLoadError, match="not a LightGBM model"):
        load_runtime(bad, "lightgbm")


def test_missing_lightgbm_names_the_pip_line(lgb_binary: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lightgbm", None)
    with pytest.raises(MissingExtra, match=r"pip install 'modelport\[lightgbm\]'"):
        load_runtime(lgb_binary.path, "lightgbm")
