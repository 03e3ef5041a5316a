"""Plain value types shared by every layer (no modelport or framework imports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Columns", "Outputs", "PredictionEvent"]


@dataclass(frozen=True)
class Columns:
    """A validated batch: one numpy array per feature, all of length ``n_rows``.

    Columnar on purpose: validation, drift counting and DataFrame construction are vectorised
    per feature, so no per-row Python objects exist on large batches.
    """

    data: dict[str, npt.NDArray[Any]]
    n_rows: int

    def take(self, start: int, stop: int) -> Columns:
        """The rows ``start:stop`` as a new batch (views, no copies)."""
        stop = min(stop, self.n_rows)
        return Columns({k: v[start:stop] for k, v in self.data.items()}, max(0, stop - start))

    @staticmethod
    def concat(parts: list[Columns]) -> Columns:
        """Stack batches with the same features into one."""
        if len(parts) == 1:
            return parts[0]
        names = parts[0].data.keys()
        return Columns(
            {k: np.concatenate([p.data[k] for p in parts]) for k in names},
            sum(p.n_rows for p in parts),
        )


@dataclass(frozen=True)
class Outputs:
    """What one model call returns for a batch.

    ``predictions`` has one entry per row; ``probabilities`` is ``(n_rows, n_classes)`` with
    columns in the order of ``classes`` when the model is a probabilistic classifier.
    """

    predictions: npt.NDArray[Any]
    probabilities: npt.NDArray[np.floating[Any]] | None = None
    classes: list[Any] | None = field(default=None)

    def take(self, start: int, stop: int) -> Outputs:
        """The rows ``start:stop`` (used to hand each request its slice of a micro-batch)."""
        proba = None if self.probabilities is None else self.probabilities[start:stop]
        return Outputs(self.predictions[start:stop], proba, self.classes)

    @staticmethod
    def concat(parts: list[Outputs]) -> Outputs:
        """Stack the outputs of several calls of the same model."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        proba = None
        if first.probabilities is not None:
            proba = np.concatenate([p.probabilities for p in parts if p.probabilities is not None])
        return Outputs(np.concatenate([p.predictions for p in parts]), proba, first.classes)


@dataclass(frozen=True)
class PredictionEvent:
    """One answered prediction request, as the server hands it to monitoring callbacks.

    Callbacks (``Callable[[PredictionEvent], None]``) run on the event loop right after the
    response is computed: they must be O(rows x features) and never block (queue I/O instead).
    """

    request_id: str
    timestamp: float
    """Unix time (seconds) the request arrived."""
    model: str
    version: str
    inputs: Columns
    outputs: Outputs
    latency_s: float
    """Time spent in validation + queue + model, seconds."""
    route: str = "native"
    """Which protocol answered: ``native``, ``v2``, ``v1``."""
    arm: str | None = None
    """Traffic arm (A/B, canary, shadow) when a policy chose the version."""
