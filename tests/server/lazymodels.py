"""Models for the many-models tests, importable by a server subprocess (they are pickled)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

SLOW_MARK = 999.0
"""A first feature of this value makes :class:`SlowWhenAsked` take ``delay`` seconds."""


class SlowWhenAsked:
    """Sums its two inputs; a batch whose first feature holds :data:`SLOW_MARK` sleeps
    ``delay`` seconds first (a request held in flight on purpose)."""

    n_features_in_ = 2

    def __init__(self, delay: float = 2.0) -> None:
        self.delay = delay

    def predict(self, x: Any) -> Any:
        arr = np.asarray(x, dtype=float)
        if (arr[:, 0] == SLOW_MARK).any():
            time.sleep(self.delay)
        return arr.sum(axis=1)


class SlowToLoad:
    """Sums its two inputs; unpickling it takes ``delay`` seconds (a load long enough for
    concurrent first requests to meet it)."""

    n_features_in_ = 2

    def __init__(self, delay: float = 0.6) -> None:
        self.delay = delay

    def __setstate__(self, state: dict[str, Any]) -> None:
        time.sleep(state["delay"])
        self.__dict__.update(state)

    def predict(self, x: Any) -> Any:
        return np.asarray(x, dtype=float).sum(axis=1)
