"""Every flavor the suite trains, served by one ``modelport serve``, answers tritonclient.grpc
with what the flavor's own library predicts in process (the heart example's scikit-learn
Pipeline is checked in test_conformance)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton

from tests.grpc.conftest import Served, serving
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
from tests.server.test_flavor_protocols import FLAVORS, _library_outputs

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def flavors_server(request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server holding a model of every flavor, each named after its fixture."""
    config = tmp_path_factory.mktemp("flavors-config") / "models.yaml"
    lines = ["models:"]
    for flavor in FLAVORS:
        saved: Saved = request.getfixturevalue(flavor)
        lines += [f"  - name: {flavor}", f"    path: {saved.path}"]
    config.write_text("\n".join(lines) + "\n")
    served = serving(str(config))
    yield served
    assert served.stop() == 0


@pytest.fixture(scope="module")
def client(flavors_server: Served) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(flavors_server.target) as c:
        yield c


def _inputs(meta: Any, frame: Any) -> list[triton.InferInput]:
    inputs = []
    for i, spec in enumerate(meta.inputs):
        column = frame[spec.name] if spec.name in frame else frame.iloc[:, i]
        arr = column.to_numpy().astype(
            object if spec.datatype == "BYTES" else
            np.int64 if spec.datatype == "INT64" else np.float64)
        tensor = triton.InferInput(spec.name, [len(frame)], spec.datatype)
        tensor.set_data_from_numpy(arr)
        inputs.append(tensor)
    return inputs


def _text(values: Any) -> list[Any]:
    return [v.decode() if isinstance(v, bytes) else v for v in np.asarray(values).tolist()]


@pytest.mark.parametrize("flavor", FLAVORS)
def test_every_flavor_answers_grpc_as_its_library(flavor: str, client: triton.InferenceServerClient,
                                                  request: pytest.FixtureRequest) -> None:
    saved: Saved = request.getfixturevalue(flavor)
    labels, proba = _library_outputs(flavor, saved)
    frame = saved.frame.head(12)
    meta = client.get_model_metadata(flavor)
    result = client.infer(flavor, _inputs(meta, frame))
    tol = 1e-5 if flavor.startswith("onnx") else 1e-6  # float32 outputs travel as float32
    got = result.as_numpy("predict")
    if proba is None:
        np.testing.assert_allclose(got.astype(float), labels, rtol=tol, atol=tol)
        assert result.as_numpy("predict_proba") is None
    else:
        assert _text(got) == _text(labels)
        np.testing.assert_allclose(result.as_numpy("predict_proba"), proba, atol=tol)


def test_np_content_type_takes_one_rows_by_features_tensor(
        client: triton.InferenceServerClient, request: pytest.FixtureRequest) -> None:
    """``parameters.content_type: np``: one [rows, features] tensor, features in order."""
    saved: Saved = request.getfixturevalue("xgb_binary")
    labels, proba = _library_outputs("xgb_binary", saved)
    frame = saved.frame.head(12)
    tensor = triton.InferInput("x", list(frame.shape), "FP64")
    tensor.set_data_from_numpy(frame.to_numpy(dtype=np.float64))
    result = client.infer("xgb_binary", [tensor], parameters={"content_type": "np"})
    assert result.as_numpy("predict").tolist() == np.asarray(labels).tolist()
    np.testing.assert_allclose(result.as_numpy("predict_proba"), proba, atol=1e-6)
