"""Train the bundled example: a heart-disease classifier on SYNTHETIC data.

The data is generated here, deterministically (fixed seed); it is shaped like the UCI Cleveland
heart-disease data (the 13 features with their real names, ranges and types) but it is not that
data and says nothing about real patients.

    python examples/heart/train.py            # writes heart.csv, model.joblib and package/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

HERE = Path(__file__).resolve().parent
NUMERIC = ["age", "trestbps", "chol", "thalach", "oldpeak", "ca"]
CATEGORICAL = ["sex", "cp", "fbs", "restecg", "exang", "slope", "thal"]
FEATURES = ["age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang",
            "oldpeak", "slope", "ca", "thal"]


def make_data(n: int = 1000, seed: int = 42) -> pd.DataFrame:
    """Synthetic rows with UCI heart-disease names and ranges; ``condition`` is the target."""
    rng = np.random.default_rng(seed)
    age = rng.integers(29, 78, n)
    sex = rng.choice([0, 1], n, p=[0.32, 0.68])
    cp = rng.choice([0, 1, 2, 3], n, p=[0.47, 0.17, 0.28, 0.08])
    trestbps = np.clip(rng.normal(131, 17, n).round(), 94, 200).astype(int)
    chol = np.clip(rng.normal(246, 51, n).round(), 126, 564).astype(int)
    fbs = rng.choice([0, 1], n, p=[0.85, 0.15])
    restecg = rng.choice([0, 1, 2], n, p=[0.49, 0.49, 0.02])
    thalach = np.clip(rng.normal(150 - 0.5 * (age - 54), 21, n).round(), 71, 202).astype(int)
    exang = rng.choice([0, 1], n, p=[0.67, 0.33])
    oldpeak = np.clip(rng.gamma(1.2, 0.9, n), 0, 6.2).round(1)
    slope = rng.choice([0, 1, 2], n, p=[0.07, 0.46, 0.47])
    ca = rng.choice([0, 1, 2, 3], n, p=[0.58, 0.22, 0.13, 0.07])
    thal = rng.choice(["normal", "fixed", "reversible"], n, p=[0.55, 0.07, 0.38])
    risk = (0.04 * (age - 54) + 0.8 * sex - 0.6 * (cp == 2) - 0.9 * (cp == 1)
            + 0.01 * (trestbps - 131) + 0.003 * (chol - 246) - 0.03 * (thalach - 150)
            + 1.0 * exang + 0.6 * oldpeak + 0.7 * ca + 1.2 * (thal == "reversible")
            + 0.8 * (thal == "fixed") - 1.6 + rng.normal(0, 0.8, n))
    condition = (risk > 0).astype(int)
    df = pd.DataFrame({"age": age, "sex": sex, "cp": cp, "trestbps": trestbps, "chol": chol,
                       "fbs": fbs, "restecg": restecg, "thalach": thalach, "exang": exang,
                       "oldpeak": oldpeak, "slope": slope, "ca": ca, "thal": thal})
    df["condition"] = condition
    return df


def make_pipeline() -> Pipeline:
    """ColumnTransformer(StandardScaler, OneHotEncoder) + GradientBoostingClassifier."""
    pre = ColumnTransformer([
        ("num", StandardScaler(), NUMERIC),
        ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
    ])
    return Pipeline([("pre", pre), ("clf", GradientBoostingClassifier(random_state=0))])


def train(out: Path = HERE) -> Path:
    """Write ``heart.csv`` and ``model.joblib`` into ``out``; return the model's path."""
    out.mkdir(parents=True, exist_ok=True)
    df = make_data()
    df.to_csv(out / "heart.csv", index=False)
    model = make_pipeline().fit(df[FEATURES], df["condition"])
    path = out / "model.joblib"
    joblib.dump(model, path)
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    print(train(parser.parse_args().out))
