"""A TorchScript MLP and an LSTM served by the real ``modelport serve``: native, V2 JSON, V2
binary (tritonclient) and V1 answer what the modules answer in process; batching, metrics and
drift work as for every flavor."""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from modelport.package import pack
from modelport.runtimes import Example
from tests.runtimes.torch_nets import (
    MLP_FEATURES,
    TorchModels,
    lstm_names,
    reference,
    trained,
)
from tests.server.test_e2e import start_server, stop

pytestmark = pytest.mark.e2e
ROWS = 24


@pytest.fixture(scope="session")
def torch_models(tmp_path_factory: pytest.TempPathFactory) -> TorchModels:
    return trained(tmp_path_factory)


@pytest.fixture(scope="module")
def server(torch_models: TorchModels, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server with both TorchScript packages (the MLP with a reference profile)."""
    root = tmp_path_factory.mktemp("torch_serving")
    pack(torch_models.path("mlp.pt"), root / "mlp", name="mlp",
         example=Example(torch_models.path("mlp_example.csv")),
         reference=torch_models.path("mlp_data.csv"), target="label")
    pack(torch_models.path("lstm.pt"), root / "lstm", name="lstm",
         example=Example(torch_models.path("lstm_example.npy")))
    proc, url = start_server(str(root / "mlp"), str(root / "lstm"), "--max-batch-wait-ms", "5")
    yield url
    stop(proc)


def _case(models: TorchModels, name: str) -> tuple[np.ndarray, list[str], Any]:
    if name == "mlp":
        return models.mlp_x[600:600 + ROWS], MLP_FEATURES, models.mlp
    return models.lstm_x[500:500 + ROWS].reshape(ROWS, -1), lstm_names(), models.lstm


def _expected(models: TorchModels, name: str) -> tuple[np.ndarray, np.ndarray]:
    x, _, module = _case(models, name)
    shaped = x if name == "mlp" else x.reshape(ROWS, 10, 3)
    return reference(module, shaped)


@pytest.mark.parametrize("name", ["mlp", "lstm"])
def test_native_records_answer_as_in_process(server: str, torch_models: TorchModels,
                                             name: str) -> None:
    x, names, _ = _case(torch_models, name)
    records = [dict(zip(names, map(float, row), strict=True)) for row in x]
    body = httpx.post(f"{server}/models/{name}/predict", json={"instances": records}).json()
    labels, proba = _expected(torch_models, name)
    assert body["predictions"] == labels.tolist()
    np.testing.assert_allclose(body["probabilities"], proba, rtol=0, atol=1e-12)
    assert body["classes"] == list(range(proba.shape[1]))


@pytest.mark.parametrize("name", ["mlp", "lstm"])
def test_v2_json_tensor_answers_as_in_process(server: str, torch_models: TorchModels,
                                              name: str) -> None:
    x, _, _ = _case(torch_models, name)
    request = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP64",
                           "data": x.astype(np.float64).ravel().tolist()}]}
    body = httpx.post(f"{server}/v2/models/{name}/infer", json=request).json()
    out = {o["name"]: o for o in body["outputs"]}
    labels, proba = _expected(torch_models, name)
    assert out["predict"]["data"] == labels.tolist()
    np.testing.assert_allclose(np.reshape(out["predict_proba"]["data"], proba.shape), proba,
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["mlp", "lstm"])
def test_v2_binary_tritonclient_answers_as_in_process(server: str, torch_models: TorchModels,
                                                      name: str) -> None:
    import tritonclient.http as triton

    x, _, _ = _case(torch_models, name)
    client = triton.InferenceServerClient(url=server.removeprefix("http://"))
    inp = triton.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(np.ascontiguousarray(x, dtype=np.float32))  # binary by default
    outputs = [triton.InferRequestedOutput("predict"), triton.InferRequestedOutput("predict_proba")]
    result = client.infer(name, [inp], outputs=outputs)
    labels, proba = _expected(torch_models, name)
    np.testing.assert_array_equal(result.as_numpy("predict"), labels)
    np.testing.assert_allclose(result.as_numpy("predict_proba"), proba, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["mlp", "lstm"])
def test_v1_rows_answer_as_in_process(server: str, torch_models: TorchModels, name: str) -> None:
    x, _, _ = _case(torch_models, name)
    body = httpx.post(f"{server}/v1/models/{name}:predict",
                      json={"instances": x.astype(np.float64).tolist()}).json()
    labels, _ = _expected(torch_models, name)
    assert body["predictions"] == labels.tolist()


def test_metadata_names_the_flavor_device_and_features(server: str) -> None:
    meta = httpx.get(f"{server}/v2/models/lstm").json()
    assert meta["platform"] == "torch" and meta["parameters"]["device"] == "cpu"
    assert [i["name"] for i in meta["inputs"]] == lstm_names()


def test_bad_input_is_a_422_naming_the_field(server: str) -> None:
    record = dict.fromkeys(MLP_FEATURES, 0.0) | {"s3": "abc"}
    answer = httpx.post(f"{server}/models/mlp/predict", json={"features": record})
    assert answer.status_code == 422 and answer.json()["field"] == "s3"


def test_concurrent_requests_are_batched_and_counted(server: str,
                                                     torch_models: TorchModels) -> None:
    rows = torch_models.mlp_x[600:664].astype(np.float64)

    def call(row: np.ndarray) -> int:
        with httpx.Client() as c:
            return c.post(f"{server}/models/mlp/predict",
                          json={"features": row.tolist()}).status_code

    with cf.ThreadPoolExecutor(16) as pool:
        assert set(pool.map(call, rows)) == {200}
    metrics = httpx.get(f"{server}/metrics").text
    assert 'modelport_predictions_total{model="mlp"' in metrics
    assert 'modelport_batch_size_count{model="mlp"' in metrics


def test_drift_is_monitored_from_the_reference_profile(server: str) -> None:
    status = httpx.get(f"{server}/monitoring/drift/mlp")
    assert status.status_code == 200
    assert "s0" in status.text
