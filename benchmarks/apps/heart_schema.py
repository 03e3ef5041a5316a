"""The request bodies of the two FastAPI comparison apps, written the way tutorials do.

Same JSON as modelport's native route: ``{"features": {...}}`` for one row and
``{"instances": [{...}, ...]}`` for a batch, so every server reads identical bytes.
"""

from __future__ import annotations

from pydantic import BaseModel


class Heart(BaseModel):
    """The 13 features of the bundled heart-disease example."""

    age: int
    sex: int
    cp: int
    trestbps: int
    chol: int
    fbs: int
    restecg: int
    thalach: int
    exang: int
    oldpeak: float
    slope: int
    ca: int
    thal: int


class One(BaseModel):
    """One row."""

    features: Heart


class Many(BaseModel):
    """Several rows."""

    instances: list[Heart]
