"""For every flavor, every protocol answers what the library itself predicts in process."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from modelport.config import Settings
from modelport.package import load_model
from modelport.server.app import create_app
from tests.runtimes.conftest import (  # noqa: F401  (fixtures shared with the runtime tests)
    Saved,
    lgb_binary,
    lgb_multi,
    lgb_regressor,
    models_dir,
    onnx_columns,
    onnx_numeric,
    onnx_regressor,
    tabular,
    xgb_binary,
    xgb_multi,
    xgb_regressor,
)
from tests.server.conftest import v2_columns

FLAVORS = ["xgb_binary", "xgb_multi", "xgb_regressor", "lgb_binary", "lgb_multi",
           "lgb_regressor", "onnx_numeric", "onnx_columns", "onnx_regressor"]


def _library_outputs(name: str, saved: Saved) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels and probabilities straight from the flavor's own library."""
    frame = saved.frame.head(12)
    if name.startswith("xgb"):
        if name == "xgb_regressor":
            return saved.model.predict(frame.to_numpy()), None
        return saved.model.predict(frame.to_numpy()), saved.model.predict_proba(frame.to_numpy())
    if name.startswith("lgb"):
        if hasattr(saved.model, "predict_proba"):
            return saved.model.predict(frame), saved.model.predict_proba(frame)
        raw = saved.model.predict(frame)
        if name == "lgb_regressor":
            return raw, None
        proba = np.column_stack([1 - raw, raw]) if raw.ndim == 1 else raw
        return proba.argmax(axis=1), proba
    import onnxruntime as ort

    sess = ort.InferenceSession(str(saved.path), providers=["CPUExecutionProvider"])
    inputs = sess.get_inputs()
    if len(inputs) == 1:
        feed = {inputs[0].name: frame.to_numpy().astype(np.float32)}
    else:
        feed = {i.name: frame[[i.name]].to_numpy().astype(
            object if "string" in i.type else (np.int64 if "int64" in i.type else np.float32))
            for i in inputs}
    outs = sess.run(None, feed)
    if len(outs) == 1:
        return outs[0].ravel(), None
    labels, proba = outs
    if isinstance(proba, list):  # ZipMap
        keys = list(proba[0])
        proba = np.asarray([[row[k] for k in keys] for row in proba])
    return labels, proba


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            for row in frame.astype(object).to_dict("records")]


@pytest.mark.parametrize("flavor", FLAVORS)
def test_every_protocol_matches_the_library(flavor: str, request: pytest.FixtureRequest) -> None:
    saved: Saved = request.getfixturevalue(flavor)
    labels, proba = _library_outputs(flavor, saved)
    loaded = load_model(saved.path, name="m")
    rows = _records(saved.frame.head(12))
    names = loaded.signature.names
    rows = [r if set(r) == set(names) else dict(zip(names, r.values(), strict=True))
            for r in rows]
    with TestClient(create_app([loaded], Settings())) as c:
        native = c.post("/predict", json={"instances": rows})
        assert native.status_code == 200, native.text
        v1 = c.post("/v1/models/m:predict", json={"instances": rows}).json()
        v2 = c.post("/v2/models/m/infer", json=v2_columns(rows))
        assert v2.status_code == 200, v2.text
    body = native.json()
    tol = 1e-5 if flavor.startswith("onnx") else 1e-6  # float32 outputs travel as float32
    if proba is None:
        np.testing.assert_allclose(body["predictions"], labels, rtol=tol, atol=tol)
    else:
        assert np.asarray(body["predictions"]).tolist() == np.asarray(labels).tolist()
        np.testing.assert_allclose(body["probabilities"], proba, atol=tol)
    assert v1["predictions"] == body["predictions"]
    v2_out = {o["name"]: o["data"] for o in v2.json()["outputs"]}
    if proba is None:
        np.testing.assert_allclose(v2_out["predict"], labels, rtol=tol, atol=tol)
    else:
        assert v2_out["predict"] == body["predictions"]
    if proba is not None:
        np.testing.assert_allclose(np.reshape(v2_out["predict_proba"], np.shape(proba)), proba,
                                   atol=tol)
