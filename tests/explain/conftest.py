"""Tiny real models of every flavor the explainers read, with their training data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("shap")

N = 400


def frame(seed: int = 3) -> pd.DataFrame:
    """Three numbers, one string category and a binary target that depends on all of them."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "x1": rng.normal(size=N), "x2": rng.normal(size=N), "x3": rng.integers(0, 10, N),
        "colour": rng.choice(["red", "green", "blue"], N)})
    logit = df.x1 - 0.5 * df.x2 + 0.1 * df.x3 + (df.colour == "red") * 1.2 - 0.6
    df["y"] = (logit + rng.normal(0, 0.5, N) > 0).astype(int)
    return df


@pytest.fixture(scope="session")
def data() -> pd.DataFrame:
    """Training data: ``x1, x2, x3, colour`` and the target ``y``."""
    return frame()


def pipeline(final: Any) -> Any:
    """One-hot ``colour``, scale ``x1, x2``, pass ``x3`` through; then ``final``."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pre = ColumnTransformer([("num", StandardScaler(), ["x1", "x2"]),
                             ("cat", OneHotEncoder(handle_unknown="ignore"), ["colour"])],
                            remainder="passthrough")
    return Pipeline([("pre", pre), ("model", final)])


@pytest.fixture(scope="session")
def packages(data: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Packages (with a reference profile) of: ``rf`` a RandomForest pipeline, ``gb`` a
    GradientBoosting pipeline, ``logreg`` a LogisticRegression pipeline (kernel), ``xgb`` an
    XGBoost booster and ``lgbm`` a LightGBM booster (numbers only)."""
    import joblib
    import lightgbm as lgb
    import xgboost as xgb
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    from modelport.package import pack

    out = tmp_path_factory.mktemp("explain")
    feats = ["x1", "x2", "x3", "colour"]
    x, y = data[feats], data["y"]
    ref = out / "reference.csv"
    data.to_csv(ref, index=False)
    numbers = data[["x1", "x2", "x3"]].astype(float)
    ref_numbers = out / "reference-numbers.csv"
    numbers.assign(y=data["y"]).to_csv(ref_numbers, index=False)
    models = {
        "rf": pipeline(RandomForestClassifier(n_estimators=15, max_depth=5, random_state=0)),
        "gb": pipeline(GradientBoostingClassifier(n_estimators=30, random_state=0)),
        "logreg": pipeline(LogisticRegression()),
    }
    paths: dict[str, Path] = {}
    for name, model in models.items():
        joblib.dump(model.fit(x, y), out / f"{name}.joblib")
        paths[name] = pack(out / f"{name}.joblib", out / name, name=name, reference=ref,
                           target="y").root
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
                        xgb.DMatrix(numbers.to_numpy(np.float32), y,
                                    feature_names=["x1", "x2", "x3"]), 20)
    booster.save_model(out / "xgb.json")
    paths["xgb"] = pack(out / "xgb.json", out / "xgb", name="xgb", reference=ref_numbers,
                        target="y").root
    lgbm = lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1},
                     lgb.Dataset(numbers, y), 20)
    lgbm.save_model(out / "lgbm.txt")
    paths["lgbm"] = pack(out / "lgbm.txt", out / "lgbm", name="lgbm", reference=ref_numbers,
                         target="y").root
    return paths
