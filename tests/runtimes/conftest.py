"""Tiny real models of every flavor, trained once per session and saved the way users save them."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

FEATURES = ["x0", "x1", "x2", "x3"]


@dataclass(frozen=True)
class Saved:
    """A model saved to ``path``, the in-process model it came from, and rows to score."""

    path: Path
    model: Any
    frame: pd.DataFrame


@pytest.fixture(scope="session")
def tabular() -> pd.DataFrame:
    """Four numeric features and three targets (binary, three classes, a number)."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(240, 4))
    frame = pd.DataFrame(x, columns=FEATURES)
    frame["binary"] = (x[:, 0] + x[:, 1] > 0).astype(int)
    frame["multi"] = np.digitize(x[:, 0] - x[:, 2], [-0.6, 0.6])
    frame["number"] = 3 * x[:, 0] - 2 * x[:, 3] + rng.normal(0, 0.1, 240)
    return frame


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("flavors")


def _x(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[FEATURES]


@pytest.fixture(scope="session")
def xgb_binary(tabular: pd.DataFrame, models_dir: Path) -> Saved:
    """XGBClassifier fitted on a DataFrame (named features), saved as JSON."""
    import xgboost as xgb

    model = xgb.XGBClassifier(n_estimators=8, max_depth=3).fit(_x(tabular), tabular["binary"])
    model.save_model(models_dir / "xgb_binary.json")
    return Saved(models_dir / "xgb_binary.json", model, _x(tabular))


@pytest.fixture(scope="session")
def xgb_multi(tabular: pd.DataFrame, models_dir: Path) -> Saved:
    """XGBClassifier (multi:softprob) fitted on a bare matrix, saved as UBJSON."""
    import xgboost as xgb

    model = xgb.XGBClassifier(n_estimators=8, max_depth=3)
    model.fit(_x(tabular).to_numpy(), tabular["multi"])
    model.save_model(models_dir / "xgb_multi.ubj")
    unnamed = _x(tabular).set_axis([f"f{i}" for i in range(4)], axis=1)
    return Saved(models_dir / "xgb_multi.ubj", model, unnamed)


@pytest.fixture(scope="session")
def xgb_softmax(tabular: pd.DataFrame, models_dir: Path) -> Saved:
    """XGBClassifier with multi:softmax (the booster predicts labels, not probabilities)."""
    import xgboost as xgb

    model = xgb.XGBClassifier(n_estimators=8, max_depth=3, objective="multi:softmax")
    model.fit(_x(tabular), tabular["multi"])
    model.save_model(models_dir / "xgb_softmax.json")
    return Saved(models_dir / "xgb_softmax.json", model, _x(tabular))


@pytest.fixture(scope="session")
def xgb_regressor(tabular: pd.DataFrame, models_dir: Path) -> Saved:
    import xgboost as xgb

    model = xgb.XGBRegressor(n_estimators=8, max_depth=3).fit(_x(tabular), tabular["number"])
    model.save_model(models_dir / "xgb_reg.json")
    return Saved(models_dir / "xgb_reg.json", model, _x(tabular))


@pytest.fixture(scope="session")
def xgb_categorical(models_dir: Path) -> Saved:
    """XGBClassifier with a pandas categorical feature (categories stored in the model)."""
    import xgboost as xgb

    frame = _categorical_frame()
    model = xgb.XGBClassifier(n_estimators=6, max_depth=3, enable_categorical=True)
    model.fit(frame[["a", "color"]], frame["y"])
    model.save_model(models_dir / "xgb_cat.json")
    return Saved(models_dir / "xgb_cat.json", model, frame[["a", "color"]])


def _categorical_frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    a = rng.normal(size=300)
    color = rng.choice(["red", "green", "blue"], 300)
    y = ((a > 0) ^ (color == "green")).astype(int)
    return pd.DataFrame({"a": a, "color": pd.Categorical(color), "y": y})


def _lgb(params: dict[str, Any], frame: pd.DataFrame, target: pd.Series, path: Path) -> Any:
    import lightgbm as lgb

    cls = lgb.LGBMRegressor if params.pop("regressor", False) else lgb.LGBMClassifier
    model = cls(n_estimators=8, num_leaves=7, min_child_samples=5, verbose=-1, **params)
    model.fit(frame, target)
    model.booster_.save_model(path)
    return model


@pytest.fixture(scope="session")
def lgb_binary(tabular: pd.DataFrame, models_dir: Path) -> Saved:
    path = models_dir / "lgb_binary.txt"
    return Saved(path, _lgb({}, _x(tabular), tabular["binary"], path), _x(tabular))


@pytest.fixture(scope="session")
def lgb_multi(tabular: pd.DataFrame, models_dir: Path) -> Saved:
    path = models_dir / "lgb_multi.txt"
    return Saved(path, _lgb({}, _x(tabular), tabular["multi"], path), _x(tabular))


@pytest.fixture(scope="session")
def lgb_regressor(tabular: pd.DataFrame, models_dir: Path) -> Saved:
    path = models_dir / "lgb_reg.txt"
    model = _lgb({"regressor": True}, _x(tabular), tabular["number"], path)
    return Saved(path, model, _x(tabular))


@pytest.fixture(scope="session")
def lgb_categorical(models_dir: Path) -> Saved:
    frame = _categorical_frame()
    path = models_dir / "lgb_cat.txt"
    model = _lgb({"min_data_per_group": 5, "cat_smooth": 1}, frame[["a", "color"]],
                 frame["y"], path)
    return Saved(path, model, frame[["a", "color"]])


@pytest.fixture(scope="session")
def onnx_numeric(tabular: pd.DataFrame, models_dir: Path) -> Saved:
    """StandardScaler + LogisticRegression with string labels, as one float matrix input
    (skl2onnx's default ZipMap left on)."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = _x(tabular).to_numpy()
    labels = np.where(tabular["binary"] == 1, "yes", "no")
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, labels)
    onx = to_onnx(model, x[:1].astype(np.float32))
    path = models_dir / "numeric.onnx"
    path.write_bytes(onx.SerializeToString())
    return Saved(path, model, _x(tabular))


@pytest.fixture(scope="session")
def onnx_columns(models_dir: Path) -> Saved:
    """A DataFrame Pipeline (one-hot + scaler + trees) converted with one input per column."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = _categorical_frame()
    frame["color"] = frame["color"].astype(object)
    frame["n"] = np.arange(len(frame)) % 5
    x = frame[["a", "color", "n"]]
    pre = ColumnTransformer([("num", StandardScaler(), ["a", "n"]),
                             ("cat", OneHotEncoder(handle_unknown="ignore"), ["color"])])
    model = Pipeline([("pre", pre), ("rf", RandomForestClassifier(n_estimators=5,
                                                                  random_state=0))])
    model.fit(x, frame["y"])
    types = [("a", FloatTensorType([None, 1])), ("color", StringTensorType([None, 1])),
             ("n", Int64TensorType([None, 1]))]
    path = models_dir / "columns.onnx"
    path.write_bytes(convert_sklearn(model, initial_types=types).SerializeToString())
    return Saved(path, model, x)


@pytest.fixture(scope="session")
def onnx_regressor(tabular: pd.DataFrame, models_dir: Path) -> Saved:
    from skl2onnx import to_onnx
    from sklearn.linear_model import Ridge

    x = _x(tabular).to_numpy()
    model = Ridge().fit(x, tabular["number"])
    path = models_dir / "ridge.onnx"
    path.write_bytes(to_onnx(model, x[:1].astype(np.float32)).SerializeToString())
    return Saved(path, model, _x(tabular))


@pytest.fixture(scope="session")
def mlp_package(tabular: pd.DataFrame, models_dir: Path) -> Path:
    """A packaged numeric MLPClassifier (a neural network: something to quantize)."""
    import joblib
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    from modelport.package import pack

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MLPClassifier(hidden_layer_sizes=(32,), max_iter=60, random_state=0)
        model.fit(_x(tabular), tabular["binary"])
    joblib.dump(model, models_dir / "mlp.joblib")
    tabular[[*FEATURES, "binary"]].to_csv(models_dir / "mlp.csv", index=False)
    out = models_dir / "mlp_pkg"
    pack(models_dir / "mlp.joblib", out, name="mlp", reference=models_dir / "mlp.csv",
         target="binary")
    return out


@pytest.fixture(scope="session")
def records() -> Any:
    """Turns DataFrame rows into JSON-like request records (what a client sends)."""

    def convert(frame: pd.DataFrame) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = frame.astype(object).to_dict("records")
        return out

    return convert
