"""The model the issue's numbers were measured with: ``Pipeline(StandardScaler,
GradientBoostingClassifier(100))`` on the 13 heart-disease features, all numeric.

The rows are the bundled example's synthetic data (``examples/heart/train.py``), with ``thal``
coded as in the UCI file (3 normal, 6 fixed defect, 7 reversible defect) so that every feature
is a number and the pipeline needs no encoder.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import joblib
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "heart" / "train.py"
THAL_CODES = {"normal": 3, "fixed": 6, "reversible": 7}


def train(out: Path) -> tuple[Path, Path, list[str]]:
    """Write ``heart.csv`` and ``model.joblib`` into ``out``; return them and the features."""
    spec = importlib.util.spec_from_file_location("heart_example", EXAMPLE)
    assert spec and spec.loader
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    features: list[str] = list(example.FEATURES)
    df = example.make_data()
    df["thal"] = df["thal"].map(THAL_CODES)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "heart.csv"
    df.to_csv(csv, index=False)
    model = Pipeline([("scale", StandardScaler()),
                      ("clf", GradientBoostingClassifier(n_estimators=100, random_state=0))])
    model.fit(df[features], df["condition"])
    path = out / "model.joblib"
    joblib.dump(model, path)
    return path, csv, features
