"""The floor: the tutorial's FastAPI stack with the model taken out.

Same request models and routes as ``tutorial.py`` (the body is parsed and validated by
pydantic), but the endpoints are ``async`` and return a constant: no thread hop, no model. What
is left is the cost of HTTP, routing, validation and JSON in FastAPI — the most a model server
on this stack could do.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from heart_schema import Many, One

app = FastAPI(title="heart (floor)")
_ROW = {"prediction": 0, "probabilities": [0.5, 0.5]}


@app.get("/health")
async def health() -> dict[str, str]:
    """Liveness."""
    return {"status": "ok"}


@app.post("/predict")
async def predict(body: One) -> dict[str, Any]:
    """One row: a constant answer."""
    return _ROW


@app.post("/predict/batch")
async def predict_batch(body: Many) -> dict[str, Any]:
    """Several rows: a constant answer per row."""
    n = len(body.instances)
    return {"predictions": [0] * n, "probabilities": [[0.5, 0.5]] * n}
