"""The request bodies of the two FastAPI comparison apps, written the way tutorials do.

``{"features": [63, 1, ...]}`` for one row (the 13 features in the model's order) and
``{"instances": [[...], ...]}`` for a batch: modelport's native route takes the same JSON, so
every server reads identical bytes.
"""

from __future__ import annotations

from pydantic import BaseModel


class One(BaseModel):
    """One row: the 13 feature values."""

    features: list[float]


class Many(BaseModel):
    """Several rows."""

    instances: list[list[float]]
