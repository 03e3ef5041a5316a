"""A deliberately slow model, importable by a server subprocess (for shutdown tests)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np


class SlowSum:
    """Sums its two inputs after sleeping ``delay`` seconds per call."""

    n_features_in_ = 2

    def __init__(self, delay: float = 0.4) -> None:
        self.delay = delay

    def predict(self, x: Any) -> Any:
        time.sleep(self.delay)
        return np.asarray(x).sum(axis=1)
