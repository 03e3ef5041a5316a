"""MLflow ``python_function`` flavor: a model only mlflow can load, loaded by mlflow.

The fallback for MLflow model directories without a flavor modelport loads itself
(:mod:`modelport.mlflow_model`): custom ``mlflow.pyfunc.PythonModel`` subclasses and flavors
of other libraries. ``mlflow.pyfunc.load_model`` loads the directory and ``predict`` is given a
DataFrame with the signature's columns, as ``mlflow models serve`` gives it. Needs
``pip install 'modelport[mlflow]'``; without mlflow the load fails naming the package.

The signature comes from the MLmodel file (its columns, else its input example): a pyfunc
model has no fitted attributes to read it from. Its answer is taken as it comes: one value per
row (a one-column DataFrame or a 2-D array with one column is flattened), or one row of values
per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import ConfigError
from modelport.runtimes import require
from modelport.signature import Signature
from modelport.types import Columns, Outputs

__all__ = ["PyfuncRuntime", "load"]


@dataclass(frozen=True)
class PyfuncRuntime:
    """An ``mlflow.pyfunc.PyFuncModel`` behind the :class:`~modelport.runtimes.Runtime` seam."""

    model: Any
    signature: Signature
    flavor: str = "pyfunc"

    def predict(self, batch: Columns) -> Outputs:
        """``model.predict`` on a DataFrame of the batch's columns."""
        import pandas as pd

        frame = pd.DataFrame({n: batch.data[n] for n in self.signature.names}, copy=False)
        answer = self.model.predict(frame)
        values = answer.to_numpy() if hasattr(answer, "to_numpy") else np.asarray(answer)
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        return Outputs(np.asarray(values))


def load(path: Path, *, signature: Signature | None = None) -> PyfuncRuntime:
    """Load the MLflow model directory ``path`` with ``mlflow.pyfunc.load_model``."""
    if signature is None:
        raise ConfigError(f"'{path}': a python_function model needs its signature from the "
                          "MLmodel file (modelport.mlflow_model)")
    require("mlflow", "mlflow")  # the error names the package, not its submodule
    pyfunc = require("mlflow.pyfunc", "mlflow")
    return PyfuncRuntime(pyfunc.load_model(str(path)), signature)
