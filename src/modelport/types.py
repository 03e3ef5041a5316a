"""Plain value types shared by every layer (no modelport or framework imports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Columns", "Outputs", "PredictionEvent"]


class Columns:
    """A validated batch: one numpy array per feature (``data``), all of length ``n_rows``.

    Columnar on purpose: validation, drift counting and DataFrame construction are vectorised
    per feature, so no per-row Python objects exist on large batches. A batch of plain numbers
    can instead be backed by one ``(n_rows, n_features)`` float64 ``matrix`` (see
    :meth:`of_matrix`): one array per request instead of one per feature, stacked for a
    micro-batch in one call and fed to matrix-taking models as is; ``data`` is then derived from
    it on first use, integer features as int64 as on the per-feature path.
    """

    __slots__ = ("_data", "_ints", "matrix", "n_rows", "names")

    def __init__(self, data: dict[str, npt.NDArray[Any]], n_rows: int) -> None:
        self._data: dict[str, npt.NDArray[Any]] | None = data
        self.n_rows = n_rows
        self.matrix: npt.NDArray[np.float64] | None = None
        """Rows x features (float64), when the batch is matrix-backed."""
        self.names: tuple[str, ...] = tuple(data)
        self._ints: tuple[int, ...] = ()

    @classmethod
    def of_matrix(cls, matrix: npt.NDArray[np.float64], names: tuple[str, ...],
                  ints: tuple[int, ...] = ()) -> Columns:
        """A batch backed by ``matrix`` (rows x ``names``, float64); ``ints`` are the positions
        of integer features, whose ``data`` columns are int64."""
        batch = cls.__new__(cls)
        batch._data, batch.n_rows, batch.matrix = None, matrix.shape[0], matrix
        batch.names, batch._ints = names, ints
        return batch

    @property
    def data(self) -> dict[str, npt.NDArray[Any]]:
        """One array per feature."""
        if self._data is None:
            assert self.matrix is not None
            m = self.matrix
            data = {name: m[:, j] for j, name in enumerate(self.names)}
            for j in self._ints:
                data[self.names[j]] = m[:, j].astype(np.int64)
            self._data = data
        return self._data

    def stacked(self, names: tuple[str, ...]) -> npt.NDArray[Any]:
        """The features ``names`` side by side (rows x features): the matrix itself when it
        holds exactly these, in this order."""
        if self.matrix is not None and names == self.names:
            return self.matrix
        return np.column_stack([self.data[n] for n in names])

    def take(self, start: int, stop: int) -> Columns:
        """The rows ``start:stop`` as a new batch (views, no copies)."""
        stop = min(stop, self.n_rows)
        if self.matrix is not None:
            return Columns.of_matrix(self.matrix[start:stop], self.names, self._ints)
        return Columns({k: v[start:stop] for k, v in self.data.items()}, max(0, stop - start))

    @staticmethod
    def concat(parts: list[Columns]) -> Columns:
        """Stack batches with the same features into one."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        if first.matrix is not None and all(
                p.matrix is not None and p.names == first.names for p in parts):
            return Columns.of_matrix(np.concatenate([p.matrix for p in parts]),
                                     first.names, first._ints)
        names = first.data.keys()
        return Columns(
            {k: np.concatenate([p.data[k] for p in parts]) for k in names},
            sum(p.n_rows for p in parts),
        )


@dataclass(frozen=True)
class Outputs:
    """What one model call returns for a batch.

    ``predictions`` has one entry per row; ``probabilities`` is ``(n_rows, n_classes)`` with
    columns in the order of ``classes`` when the model is a probabilistic classifier. Labels
    that come as a numpy string array (a scikit-learn classifier fitted on one) are held as an
    object array of ``str``: what every encoder takes.
    """

    predictions: npt.NDArray[Any]
    probabilities: npt.NDArray[np.floating[Any]] | None = None
    classes: list[Any] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.predictions.dtype.kind in "US":
            labels = self.predictions.astype(str).astype(object)
            object.__setattr__(self, "predictions", labels)

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
