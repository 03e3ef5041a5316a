"""Contributions plus the base value equal what the model outputs, for every tree flavor and
for the kernel explainer; one-hot columns are summed back to their feature."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelport.explain import Explanation, background_from_profile, build_explainer
from modelport.monitoring.profile import ReferenceProfile
from modelport.package import LoadedModel, load_model

ROWS = 12


def explain(loaded: LoadedModel, rows: pd.DataFrame, *, samples: int = 512) -> Explanation:
    sig = loaded.signature
    background = None
    pkg = loaded.package
    if pkg is not None and pkg.reference_path is not None:
        profile = ReferenceProfile.from_json(pkg.reference_path.read_text())
        background = background_from_profile(profile, sig, rows=40)
    batch = sig.from_columns({n: rows[n].tolist() for n in sig.names})
    return build_explainer(loaded.runtime, background=background, samples=samples
                           ).explain(batch)


def additive(found: Explanation, expected: np.ndarray, atol: float = 1e-6) -> None:
    got = found.base_values[None, :] + found.contributions.sum(axis=2)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=atol, rtol=0)
    np.testing.assert_allclose(found.values, expected, atol=atol, rtol=0)


@pytest.fixture(scope="module")
def rows(data: pd.DataFrame) -> pd.DataFrame:
    return data.sample(ROWS, random_state=1)


def test_sklearn_gradient_boosting_margin_per_original_feature(packages: dict[str, Path],
                                                               rows: pd.DataFrame) -> None:
    loaded = load_model(packages["gb"])
    found = explain(loaded, rows)
    assert (found.method, found.output, found.outputs) == ("tree", "margin", ("1",))
    assert found.features == ("x1", "x2", "x3", "colour")  # 3 one-hot columns: one feature
    model = loaded.runtime.model  # type: ignore[attr-defined]
    additive(found, model.decision_function(rows[list(found.features)])[:, None])


def test_heart_example_thirteen_features(heart_package: Path,
                                         heart_features: pd.DataFrame) -> None:
    loaded = load_model(heart_package)
    sample = heart_features.head(ROWS)
    found = explain(loaded, sample)
    assert found.features == tuple(heart_features.columns)
    additive(found, loaded.runtime.model.decision_function(sample)[:, None])  # type: ignore[attr-defined]


def test_one_hot_columns_are_summed_back(packages: dict[str, Path], rows: pd.DataFrame) -> None:
    """The ``colour`` contribution is the sum of SHAP's values of its three one-hot
    columns, computed here with SHAP directly on the transformed matrix."""
    import shap

    loaded = load_model(packages["gb"])
    found = explain(loaded, rows)
    model = loaded.runtime.model  # type: ignore[attr-defined]
    pre, final = model[:-1], model[-1]
    matrix = pre.transform(rows[["x1", "x2", "x3", "colour"]])
    direct = shap.TreeExplainer(final).shap_values(np.asarray(matrix, dtype=float))
    names = list(pre.get_feature_names_out())
    onehot = [i for i, n in enumerate(names) if n.startswith("cat__colour_")]
    assert len(onehot) == 3
    np.testing.assert_allclose(found.contributions[:, 0, 3], direct[:, onehot].sum(axis=1),
                               atol=1e-9)
    np.testing.assert_allclose(found.contributions[:, 0, 2],
                               direct[:, names.index("remainder__x3")], atol=1e-9)


def test_sklearn_random_forest_probabilities(packages: dict[str, Path],
                                             rows: pd.DataFrame) -> None:
    loaded = load_model(packages["rf"])
    found = explain(loaded, rows)
    assert (found.method, found.output, found.outputs) == ("tree", "probability", ("0", "1"))
    model = loaded.runtime.model  # type: ignore[attr-defined]
    additive(found, model.predict_proba(rows[list(found.features)]))


def test_xgboost_booster_margin(packages: dict[str, Path], rows: pd.DataFrame) -> None:
    import xgboost as xgb

    loaded = load_model(packages["xgb"])
    found = explain(loaded, rows)
    assert (found.method, found.output, found.features) == ("tree", "margin", ("x1", "x2", "x3"))
    booster = loaded.runtime.booster  # type: ignore[attr-defined]
    matrix = xgb.DMatrix(rows[["x1", "x2", "x3"]].to_numpy(np.float32),
                         feature_names=["x1", "x2", "x3"])
    additive(found, booster.predict(matrix, output_margin=True)[:, None], atol=1e-4)


def test_lightgbm_booster_raw_score(packages: dict[str, Path], rows: pd.DataFrame) -> None:
    loaded = load_model(packages["lgbm"])
    found = explain(loaded, rows)
    assert (found.method, found.output) == ("tree", "margin")
    booster = loaded.runtime.booster  # type: ignore[attr-defined]
    expected = booster.predict(rows[["x1", "x2", "x3"]].to_numpy(float), raw_score=True)
    additive(found, expected[:, None])


def test_kernel_explainer_on_a_linear_pipeline(packages: dict[str, Path],
                                               rows: pd.DataFrame) -> None:
    """Not a tree: the kernel explainer, over the original features (strings included),
    with a background drawn from the reference profile; exact in the sum."""
    loaded = load_model(packages["logreg"])
    found = explain(loaded, rows.head(4), samples=128)
    assert (found.method, found.output, found.outputs) == ("kernel", "probability", ("0", "1"))
    assert found.features == ("x1", "x2", "x3", "colour")
    model = loaded.runtime.model  # type: ignore[attr-defined]
    additive(found, model.predict_proba(rows.head(4)[list(found.features)]))
    # the feature that drives the model most moves the output most on average
    mean_abs = np.abs(found.contributions[:, 1, :]).mean(axis=0)
    assert mean_abs[found.features.index("x1")] > mean_abs[found.features.index("x3")]


def test_background_follows_the_reference_profile(packages: dict[str, Path],
                                                  data: pd.DataFrame) -> None:
    loaded = load_model(packages["logreg"])
    assert loaded.package is not None and loaded.package.reference_path is not None
    profile = ReferenceProfile.from_json(loaded.package.reference_path.read_text())
    bg = background_from_profile(profile, loaded.signature, rows=400, seed=1)
    assert bg is not None and bg.n_rows == 400
    colours = pd.Series(bg.data["colour"]).value_counts(normalize=True)
    truth = data["colour"].value_counts(normalize=True)
    for colour in truth.index:
        assert abs(colours[colour] - truth[colour]) < 0.08
    assert abs(float(np.mean(bg.data["x1"])) - float(data["x1"].mean())) < 0.2
    assert set(np.unique(bg.data["x3"])) <= set(range(10))  # integers stay integers
