"""The baseline: a FastAPI model server as the tutorials write it.

Pydantic request models, a sync endpoint (FastAPI runs it in its thread pool), a one-row
DataFrame, ``predict`` and then ``predict_proba``. Run by ``benchmarks/serving.py`` as
``uvicorn tutorial:app`` with ``BENCH_MODEL`` naming the joblib file.
"""

from __future__ import annotations

import os
from typing import Any

import joblib
import pandas as pd
from fastapi import FastAPI
from heart_schema import Many, One

app = FastAPI(title="heart (tutorial)")
model = joblib.load(os.environ["BENCH_MODEL"])


@app.get("/health")
def health() -> dict[str, str]:
    """Liveness."""
    return {"status": "ok"}


@app.post("/predict")
def predict(body: One) -> dict[str, Any]:
    """One row: label and class probabilities."""
    frame = pd.DataFrame([body.features.model_dump()])
    label = model.predict(frame)[0]
    proba = model.predict_proba(frame)[0]
    return {"prediction": int(label), "probabilities": proba.tolist()}


@app.post("/predict/batch")
def predict_batch(body: Many) -> dict[str, Any]:
    """Several rows: labels and class probabilities."""
    frame = pd.DataFrame([row.model_dump() for row in body.instances])
    labels = model.predict(frame)
    proba = model.predict_proba(frame)
    return {"predictions": labels.tolist(), "probabilities": proba.tolist()}
