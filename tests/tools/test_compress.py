"""Compression with proof: INT8 and pruning report size, latency and the metric change, and a
copy whose metric drops too far is written but never served."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from modelport.cli import app
from modelport.errors import ConfigError
from modelport.package import load_model, open_package, pack
from modelport.registry.gate import check_candidate
from modelport.runtimes import Example
from modelport.runtimes.torch import TorchRuntime
from modelport.tools.compress_torch import compress
from modelport.tools.optimize import QUANTIZED, optimize
from tests.runtimes.conftest import mlp_package, models_dir, tabular  # noqa: F401
from tests.runtimes.torch_nets import TorchModels, reference, trained

torch = pytest.importorskip("torch")
EXAMPLES = {"mlp": "mlp_example.csv", "lstm": "lstm_example.npy"}


@pytest.fixture(scope="session")
def torch_models(tmp_path_factory: pytest.TempPathFactory) -> TorchModels:
    return trained(tmp_path_factory)


def _pkg(models: TorchModels, tmp_path: Path, file: str) -> Path:
    stem = file.split(".", maxsplit=1)[0]
    out = tmp_path / file.replace(".", "_")
    pack(models.path(file), out, name=stem, example=Example(models.path(EXAMPLES[stem])))
    return out


@pytest.mark.parametrize("stem", ["mlp", "lstm"])
def test_int8_report_shows_size_latency_and_accuracy(torch_models: TorchModels, tmp_path: Path,
                                                     stem: str) -> None:
    pkg = _pkg(torch_models, tmp_path, f"{stem}.pth")
    report = compress(pkg, quantize=True, data=torch_models.path(f"{stem}_data.csv"),
                      target="label")
    assert report.method == "int8" and report.artifact == "model.int8.pth"
    assert report.bytes_after < report.bytes_before
    assert [lat.rows for lat in report.latency] == [1, 100]
    assert all(lat.before_ms > 0 and lat.after_ms > 0 for lat in report.latency)
    m = report.metric
    assert m.metric == "accuracy" and m.rows == (300 if stem == "mlp" else 200)
    assert m.before > 0.8 and abs(m.drop) <= 0.01 and report.served


def test_int8_copy_holds_dynamically_quantized_layers_and_is_served(
        torch_models: TorchModels, tmp_path: Path) -> None:
    pkg = _pkg(torch_models, tmp_path, "lstm.pth")
    compress(pkg, quantize=True, data=torch_models.path("lstm_data.csv"), target="label")
    served = load_model(pkg).runtime
    assert isinstance(served, TorchRuntime)
    dynamic = {type(m).__name__ for m in served.module.modules()
               if type(m).__module__.startswith("torch.ao.nn.quantized.dynamic")}
    assert {"LSTM", "Linear"} <= dynamic
    manifest = open_package(pkg).manifest
    assert manifest.compressed is not None and manifest.compressed["served"] is True
    assert {"model.int8.pth", "model.int8.pth.json"} <= set(manifest.files)


def test_int8_answers_are_close_to_the_float_model(torch_models: TorchModels,
                                                   tmp_path: Path) -> None:
    pkg = _pkg(torch_models, tmp_path, "mlp.pth")
    compress(pkg, quantize=True)
    loaded = load_model(pkg)
    x = torch_models.mlp_x[600:]
    out = loaded.runtime.predict(loaded.signature.from_matrix(x.astype(np.float64)))
    labels, proba = reference(torch_models.mlp, x)
    assert np.mean(out.predictions == labels) > 0.97
    assert np.abs(out.probabilities - proba).mean() < 0.01  # type: ignore[operator]


def test_pruning_reports_sparsity_and_is_refused_past_the_limit(torch_models: TorchModels,
                                                                tmp_path: Path) -> None:
    pkg = _pkg(torch_models, tmp_path, "mlp.pth")
    report = compress(pkg, prune=0.5, data=torch_models.path("mlp_data.csv"), target="label")
    assert report.sparsity == pytest.approx(0.5, abs=0.01)
    assert report.metric.drop > 0.01 and not report.served
    assert (pkg / "model.pruned.pth").is_file()
    assert open_package(pkg).manifest.compressed["served"] is False  # type: ignore[index]
    served = load_model(pkg).runtime
    assert isinstance(served, TorchRuntime)
    assert not any(float((m.weight == 0).float().mean()) > 0.1 for m in served.module.modules()
                   if isinstance(m, torch.nn.Linear))  # the original, unpruned


def test_a_looser_limit_serves_the_pruned_copy(torch_models: TorchModels,
                                               tmp_path: Path) -> None:
    pkg = _pkg(torch_models, tmp_path, "mlp.pth")
    report = compress(pkg, prune=0.5, data=torch_models.path("mlp_data.csv"), target="label",
                      max_metric_drop=0.5)
    assert report.served
    served = load_model(pkg).runtime
    assert isinstance(served, TorchRuntime)
    weights = [m.weight for m in served.module.modules() if isinstance(m, torch.nn.Linear)]
    assert all(float((w == 0).float().mean()) == pytest.approx(0.5, abs=0.01) for w in weights)


def test_a_served_compressed_copy_passes_the_golden_gate(torch_models: TorchModels,
                                                         tmp_path: Path) -> None:
    """Its answers moved within the metric limit, not to the recorded ones: the gate before an
    alias move checks that it answers its golden inputs, not that it answers them equally."""
    pkg = _pkg(torch_models, tmp_path, "mlp.pth")
    compress(pkg, prune=0.5, data=torch_models.path("mlp_data.csv"), target="label",
             max_metric_drop=0.5)
    loaded = load_model(pkg)
    assert loaded.compressed
    assert check_candidate(loaded) > 0
    assert not load_model(pkg, runtime="native").compressed


def test_torchscript_linear_layers_are_pruned_in_place(torch_models: TorchModels,
                                                       tmp_path: Path) -> None:
    pkg = _pkg(torch_models, tmp_path, "lstm.pt")
    report = compress(pkg, prune=0.3, max_metric_drop=1.0)
    assert report.artifact == "model.pruned.pt" and report.sparsity == pytest.approx(0.3, abs=0.02)
    assert report.metric.metric == "agreement with the original"
    head = load_model(pkg).runtime.module.head  # type: ignore[attr-defined]
    assert float((head.weight == 0).float().mean()) == pytest.approx(0.3, abs=0.02)


def test_prune_then_quantize_in_one_step(torch_models: TorchModels, tmp_path: Path) -> None:
    pkg = _pkg(torch_models, tmp_path, "mlp.pth")
    report = compress(pkg, quantize=True, prune=0.2, max_metric_drop=1.0)
    assert report.method == "prune 0.2 + int8" and report.artifact == "model.pruned.int8.pth"


def test_a_new_copy_replaces_the_earlier_one(torch_models: TorchModels, tmp_path: Path) -> None:
    pkg = _pkg(torch_models, tmp_path, "mlp.pth")
    compress(pkg, quantize=True)
    compress(pkg, prune=0.1, max_metric_drop=1.0)
    assert not (pkg / "model.int8.pth").exists() and (pkg / "model.pruned.pth").exists()
    assert "model.int8.pth" not in open_package(pkg).manifest.files


@pytest.mark.parametrize(("file", "kwargs", "message"), [
    ("mlp.pt", {"quantize": True}, "TorchScript no longer holds"),
    ("lstm.pt2", {"prune": 0.5}, "holds no Linear/LSTM modules"),
    ("mlp.pth", {"prune": 1.5}, "between 0 and 1"),
    ("mlp.pth", {}, "nothing to do"),
    ("mlp.pth", {"quantize": True, "max_metric_drop": -0.1}, "--max-metric-drop"),
], ids=["torchscript-int8", "export-program", "prune-share", "no-method", "negative-limit"])
def test_impossible_requests_are_refused_clearly(torch_models: TorchModels, tmp_path: Path,
                                                 file: str, kwargs: dict[str, object],
                                                 message: str) -> None:
    stem = file.split(".", maxsplit=1)[0]
    out = tmp_path / "pkg"
    example = None if file.endswith(".pt2") else Example(torch_models.path(EXAMPLES[stem]))
    pack(torch_models.path(file), out, name=stem, example=example)
    with pytest.raises(ConfigError, match=message):
        compress(out, **kwargs)  # type: ignore[arg-type]
    assert open_package(out).manifest.compressed is None


@pytest.mark.parametrize("file", ["mlp.pt", "lstm.pth", "lstm.pt2"],
                         ids=["torchscript", "whole-module", "torch-export"])
def test_optimize_converts_a_torch_model_to_onnx_with_parity(torch_models: TorchModels,
                                                             tmp_path: Path, file: str) -> None:
    stem = file.split(".", maxsplit=1)[0]
    out = tmp_path / "pkg"
    example = None if file.endswith(".pt2") else Example(torch_models.path(EXAMPLES[stem]))
    pack(torch_models.path(file), out, name=stem, example=example)
    report = optimize(out, data=torch_models.path(f"{stem}_data.csv"))
    assert report.parity.passed and report.parity.label_mismatches == 0, report.parity
    assert report.converter.startswith("torch ")
    assert load_model(out).runtime.flavor == "onnx"


def test_cli_prints_the_report_and_exits_one_on_refusal(torch_models: TorchModels,
                                                        tmp_path: Path) -> None:
    pkg = _pkg(torch_models, tmp_path, "mlp.pth")
    args = ["optimize", str(pkg), "--data", str(torch_models.path("mlp_data.csv")),
            "--target", "label"]
    ok = CliRunner().invoke(app, [*args, "--quantize", "int8"])
    assert ok.exit_code == 0, ok.output
    assert "size: " in ok.output and "latency, 100 rows" in ok.output
    assert "accuracy on 300 rows" in ok.output and "now serves model.int8.pth" in ok.output
    refused = CliRunner().invoke(app, [*args, "--prune", "0.5"])
    assert refused.exit_code == 1
    assert "sparsity of the pruned layers: 50.0%" in refused.output
    assert "REFUSED" in refused.output


def test_cli_refuses_an_unknown_precision(torch_models: TorchModels, tmp_path: Path) -> None:
    pkg = _pkg(torch_models, tmp_path, "mlp.pth")
    result = CliRunner().invoke(app, ["optimize", str(pkg), "--quantize", "int4"])
    assert result.exit_code != 0 and "int4" in str(result.exception or result.output)


def test_onnx_int8_copy_gets_the_same_report_and_rule(request: pytest.FixtureRequest,
                                                      tmp_path: Path) -> None:
    source: Path = request.getfixturevalue("mlp_package")  # a packed MLPClassifier
    pkg = Path(shutil.copytree(source, tmp_path / "mlp"))
    data = source.parent / "mlp.csv"
    report = optimize(pkg, quantize=True, data=data, target="binary", tolerance=0.05)
    q = report.quantized
    assert q is not None and q.compression is not None
    c = q.compression
    assert c.metric.metric == "accuracy" and c.metric.rows == 240
    assert [lat.rows for lat in c.latency] == [1, 100] and c.bytes_after > 0 < c.bytes_before
    recorded = open_package(pkg).manifest.compressed
    assert recorded is not None and recorded["artifact"] == QUANTIZED
    assert recorded["served"] is c.served


@pytest.mark.parametrize(("limit", "served"), [(0.0, False), (0.5, True)],
                         ids=["past-the-limit", "within-the-limit"])
def test_onnx_int8_copy_is_served_only_within_the_limit(torch_models: TorchModels,
                                                        tmp_path: Path, limit: float,
                                                        served: bool) -> None:
    """A regression's INT8 outputs always move a little: R² against the float model is
    below 1, so a limit of 0 refuses it."""
    pkg = tmp_path / "pkg"
    pack(torch_models.path("mlp.pt"), pkg, name="mlp",
         example=Example(torch_models.path("mlp_example.csv"), "values"))
    report = optimize(pkg, quantize=True, max_metric_drop=limit)
    c = report.quantized.compression  # type: ignore[union-attr]
    assert c is not None and c.metric.metric == "R² against the original"
    assert c.metric.drop > 0 and c.served is served
    assert open_package(pkg).manifest.compressed["served"] is served  # type: ignore[index]
    loaded = load_model(pkg)
    batch = loaded.signature.from_matrix(torch_models.mlp_x[:50].astype(np.float64))
    from modelport.runtimes import load_runtime

    int8 = load_runtime(pkg / QUANTIZED, "onnx", signature=loaded.signature).predict(batch)
    got = loaded.runtime.predict(batch)
    assert np.array_equal(got.predictions, int8.predictions) is served
