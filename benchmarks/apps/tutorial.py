"""The baseline: a FastAPI model server as the tutorials write it.

Pydantic request models (``list[float]``), a sync endpoint (FastAPI runs it in its thread
pool), ``predict`` and then ``predict_proba`` on the list of rows. Run by
``benchmarks/serving.py`` as ``uvicorn tutorial:app`` with ``BENCH_MODEL`` naming the joblib
file.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import joblib
from fastapi import FastAPI
from heart_schema import Many, One

app = FastAPI(title="heart (tutorial)")
model = joblib.load(os.environ["BENCH_MODEL"])
# fitted on a DataFrame, given lists: scikit-learn would warn on every call
warnings.filterwarnings("ignore", message="X does not have valid feature names")


@app.get("/health")
def health() -> dict[str, str]:
    """Liveness."""
    return {"status": "ok"}


@app.post("/predict")
def predict(body: One) -> dict[str, Any]:
    """One row: label and class probabilities."""
    label = model.predict([body.features])[0]
    proba = model.predict_proba([body.features])[0]
    return {"prediction": int(label), "probabilities": proba.tolist()}


@app.post("/predict/batch")
def predict_batch(body: Many) -> dict[str, Any]:
    """Several rows: labels and class probabilities."""
    labels = model.predict(body.instances)
    proba = model.predict_proba(body.instances)
    return {"predictions": labels.tolist(), "probabilities": proba.tolist()}
