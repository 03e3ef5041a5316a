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
