"""The torch flavor: TorchScript, torch.export and whole-module files answer as in process."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from modelport.errors import ConfigError, ModelLoadError
from modelport.package import load_model, open_package, pack
from modelport.runtimes import Example, device_of, load_runtime
from modelport.runtimes.devices import Placement
from modelport.runtimes.torch import TorchIO, sidecar_path
from tests.runtimes.torch_nets import (
    MLP_FEATURES,
    TorchModels,
    lstm_names,
    reference,
    trained,
)

torch = pytest.importorskip("torch")


@pytest.fixture(scope="session")
def torch_models(tmp_path_factory: pytest.TempPathFactory) -> TorchModels:
    return trained(tmp_path_factory)


def _pack(models: TorchModels, tmp_path: Path, file: str, example: str | None,
          **kwargs: object) -> Path:
    out = tmp_path / file.replace(".", "_")
    pack(models.path(file), out, name=file.split(".", maxsplit=1)[0],
         example=None if example is None else Example(models.path(example)),
         **kwargs)  # type: ignore[arg-type]
    return out


def _answers(pkg: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    loaded = load_model(pkg)
    batch = loaded.signature.from_matrix(x.reshape(len(x), -1).astype(np.float64))
    out = loaded.runtime.predict(batch)
    assert out.probabilities is not None
    return out.predictions, out.probabilities


@pytest.mark.parametrize("file", ["mlp.pt", "mlp.pth", "mlp.pt2"],
                         ids=["torchscript", "whole-module", "torch-export"])
def test_mlp_package_answers_what_the_module_answers(torch_models: TorchModels, tmp_path: Path,
                                                     file: str) -> None:
    pkg = _pack(torch_models, tmp_path, file, "mlp_example.csv")
    x = torch_models.mlp_x[600:700]
    labels, proba = _answers(pkg, x)
    want_labels, want_proba = reference(torch_models.mlp, x)
    assert (labels == want_labels).all()
    np.testing.assert_allclose(proba, want_proba, rtol=0, atol=1e-12)


@pytest.mark.parametrize("file", ["lstm.pt", "lstm.pth", "lstm.pt2"],
                         ids=["torchscript", "whole-module", "torch-export"])
def test_lstm_package_answers_what_the_module_answers(torch_models: TorchModels,
                                                      tmp_path: Path, file: str) -> None:
    example = None if file.endswith(".pt2") else "lstm_example.npy"
    pkg = _pack(torch_models, tmp_path, file, example)
    x = torch_models.lstm_x[500:600]
    labels, proba = _answers(pkg, x)
    want_labels, want_proba = reference(torch_models.lstm, x)
    assert (labels == want_labels).all()
    np.testing.assert_allclose(proba, want_proba, rtol=0, atol=1e-12)


def test_pack_writes_the_sidecar_and_the_signature(torch_models: TorchModels,
                                                   tmp_path: Path) -> None:
    pkg = open_package(_pack(torch_models, tmp_path, "lstm.pt", "lstm_example.npy"))
    assert "model.pt.json" in pkg.manifest.files
    io = TorchIO.from_dict(json.loads((pkg.root / "model.pt.json").read_text()))
    assert [(t.name, t.dtype, t.shape) for t in io.inputs] == [("x", "float32", (-1, 10, 3))]
    assert io.outputs == "logits" and io.width == 2
    sig = pkg.signature
    assert list(sig.names) == lstm_names()
    assert sig.task == "classification" and sig.classes == (0, 1) and sig.has_proba
    assert sig.features[0].example == pytest.approx(float(torch_models.lstm_x[0, 0, 0]))


def test_csv_example_names_the_features(torch_models: TorchModels, tmp_path: Path) -> None:
    pkg = open_package(_pack(torch_models, tmp_path, "mlp.pt", "mlp_example.csv"))
    assert list(pkg.signature.names) == MLP_FEATURES


def test_reference_data_gives_drift_a_profile(torch_models: TorchModels, tmp_path: Path) -> None:
    pkg = open_package(_pack(torch_models, tmp_path, "mlp.pt", "mlp_example.csv",
                             reference=torch_models.path("mlp_data.csv"), target="label"))
    assert pkg.reference_path is not None and pkg.reference_path.is_file()
    assert len(pkg.golden()["inputs"]) == 8  # type: ignore[index]


def test_npz_example_maps_inputs_by_name(torch_models: TorchModels, tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", x=torch_models.lstm_x[:4])
    runtime = load_runtime(torch_models.path("lstm.pt"), "torch",
                           example=Example(tmp_path / "x.npz"))
    assert runtime.signature.names[:2] == ("x_0_0", "x_0_1")


@pytest.mark.parametrize(("outputs", "task", "width"), [
    ("probabilities", "classification", 3), ("values", "regression", None),
], ids=["probabilities", "values"])
def test_outputs_can_be_stated_when_the_guess_is_wrong(torch_models: TorchModels,
                                                       outputs: str, task: str,
                                                       width: int | None) -> None:
    runtime = load_runtime(torch_models.path("mlp.pt"), "torch",
                           example=Example(torch_models.path("mlp_example.csv"), outputs))
    assert runtime.signature.task == task
    out = runtime.predict(runtime.signature.from_matrix(torch_models.mlp_x[:5].astype(float)))
    if width is None:
        assert out.probabilities is None and out.predictions.shape == (5, 3)
    else:
        assert out.probabilities is not None and out.probabilities.shape == (5, width)


def test_torchscript_without_sidecar_or_example_says_what_to_do(
        torch_models: TorchModels) -> None:
    with pytest.raises(ModelLoadError, match="--example"):
        load_runtime(torch_models.path("mlp.pt"), "torch")


def test_bare_file_uses_a_sidecar_beside_it(torch_models: TorchModels, tmp_path: Path) -> None:
    pkg = _pack(torch_models, tmp_path, "mlp.pt", "mlp_example.csv")
    bare = tmp_path / "bare.pt"
    bare.write_bytes((pkg / "model.pt").read_bytes())
    sidecar_path(bare).write_text((pkg / "model.pt.json").read_text())
    assert load_model(bare).signature.names == tuple(MLP_FEATURES)


def test_an_example_the_model_cannot_take_is_refused(torch_models: TorchModels,
                                                    tmp_path: Path) -> None:
    np.save(tmp_path / "wrong.npy", np.zeros((2, 5), dtype=np.float32))
    with pytest.raises(ModelLoadError, match="fails on the example input"):
        load_runtime(torch_models.path("mlp.pt"), "torch", example=Example(tmp_path / "wrong.npy"))


def test_a_state_dict_is_not_a_model(torch_models: TorchModels, tmp_path: Path) -> None:
    torch.save(torch_models.mlp.state_dict(), tmp_path / "weights.pth")
    with pytest.raises(ModelLoadError, match="not a module"):
        load_runtime(tmp_path / "weights.pth", "torch",
                     example=Example(torch_models.path("mlp_example.csv")))


def test_example_for_another_flavor_is_refused(torch_models: TorchModels,
                                               heart_model_path: Path) -> None:
    with pytest.raises(ConfigError, match="--example"):
        load_runtime(heart_model_path, "sklearn",
                     example=Example(torch_models.path("lstm_example.npy")))


def test_inference_runs_on_one_thread(torch_models: TorchModels, tmp_path: Path) -> None:
    _pack(torch_models, tmp_path, "mlp.pt", "mlp_example.csv")
    assert torch.get_num_threads() == 1


def test_auto_device_falls_back_to_the_cpu_and_logs_it(torch_models: TorchModels,
                                                       tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    pkg = _pack(torch_models, tmp_path, "mlp.pt", "mlp_example.csv")
    with caplog.at_level(logging.INFO, logger="modelport"):
        loaded = load_model(pkg, placement=Placement("auto"))
    assert device_of(loaded.runtime) == "cpu"
    assert "runs on cpu (--device auto: torch sees no CUDA device" in caplog.text


def test_explicit_cuda_without_a_gpu_is_a_start_up_error(torch_models: TorchModels,
                                                         tmp_path: Path) -> None:
    pkg = _pack(torch_models, tmp_path, "mlp.pt", "mlp_example.csv")
    with pytest.raises(ConfigError, match=r"--device cuda: 'model.pt' \(torch\) cannot run on a "
                                          r"GPU here: torch sees no CUDA device"):
        load_model(pkg, placement=Placement("cuda"))
