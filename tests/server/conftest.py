"""An in-process app serving the example package, and helpers to build request bodies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from modelport.config import Settings
from modelport.package import LoadedModel, load_model
from modelport.server.app import create_app


@pytest.fixture(scope="session")
def heart_loaded(heart_package: Path) -> LoadedModel:
    """The example package, loaded once."""
    return load_model(heart_package)


@pytest.fixture(scope="session")
def client(heart_loaded: LoadedModel) -> Iterator[TestClient]:
    """A TestClient on an app serving the example model with default settings."""
    app = create_app([heart_loaded], Settings(max_batch_rows=100, max_body_bytes=200_000))
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="session")
def records(heart_features: pd.DataFrame) -> list[dict[str, Any]]:
    """Twenty rows of the example data as JSON-ready records."""
    import json

    return json.loads(heart_features.head(20).to_json(orient="records"))  # type: ignore[no-any-return]


def v2_columns(records: list[dict[str, Any]]) -> dict[str, Any]:
    """A V2 request with one tensor per feature (MLServer's ``pd`` content type)."""
    names = list(records[0])
    inputs = []
    for n in names:
        values = [r[n] for r in records]
        dt = "BYTES" if isinstance(values[0], str) else (
            "FP64" if isinstance(values[0], float) else "INT64")
        inputs.append({"name": n, "shape": [len(values)], "datatype": dt, "data": values})
    return {"parameters": {"content_type": "pd"}, "inputs": inputs}


def quiet_log(x: Any) -> Any:
    """``np.log`` without its RuntimeWarning: -inf at zero, NaN below (a pipeline step that turns
    rows into NaN, as a user's broken model does). Importable, so a pickled pipeline loads in a
    server subprocess."""
    import numpy as np

    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(x)


def quiet_log1p(x: Any) -> Any:
    """``np.log1p`` without its RuntimeWarning: finite at zero, -inf at -1, NaN below."""
    import numpy as np

    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log1p(x)


@pytest.fixture(scope="session")
def broken_pipelines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Pipelines whose middle step is a log (``FunctionTransformer``) before a LogisticRegression,
    saved as joblib files: ``log`` fails on every row with a value <= 0 (the all-zero example
    row included: it cannot warm up); ``log1p`` warms up and fails on every row with a value
    <= -1 (in process: ``Input X contains NaN`` / ``infinity``)."""
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    rng = np.random.default_rng(11)
    x = rng.uniform(0.5, 5.0, size=(200, 3))
    y = (x[:, 0] > 2.5).astype(int)
    out = tmp_path_factory.mktemp("broken")
    paths = {}
    for name, func in (("log", quiet_log), ("log1p", quiet_log1p)):
        model = make_pipeline(FunctionTransformer(func), LogisticRegression()).fit(x, y)
        paths[name] = out / f"broken_{name}.joblib"
        joblib.dump(model, paths[name])
    return paths
