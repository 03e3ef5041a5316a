"""``modelport export --edge``: an ORT-format model, a standalone ``predict.py`` and a README;
run in a fresh virtual environment that has numpy and onnxruntime but not modelport, it
answers exactly what the server answers."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from modelport.cli import app
from modelport.errors import ConfigError
from modelport.package import pack
from modelport.runtimes import Example
from modelport.tools.edge import MODEL_FILE, edge_bundle
from modelport.tools.optimize import optimize
from tests.runtimes.torch_nets import MLP_FEATURES, TorchModels, trained
from tests.server.test_e2e import start_server, stop

pytest.importorskip("torch")


@pytest.fixture(scope="session")
def torch_models(tmp_path_factory: pytest.TempPathFactory) -> TorchModels:
    return trained(tmp_path_factory)


@pytest.fixture(scope="module")
def mlp_pkg(torch_models: TorchModels, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The TorchScript MLP, converted to ONNX (parity proven): the server serves that."""
    out = tmp_path_factory.mktemp("edge") / "mlp"
    pack(torch_models.path("mlp.pt"), out, name="mlp",
         example=Example(torch_models.path("mlp_example.csv")))
    assert optimize(out).parity.passed
    return out


@pytest.fixture(scope="module")
def heart_onnx(heart_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example Pipeline (strings, one-hot categories), converted to ONNX."""
    import shutil

    out = Path(shutil.copytree(heart_package, tmp_path_factory.mktemp("edge") / "heart"))
    assert optimize(out).parity.passed
    return out


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with only numpy and onnxruntime (the versions here, from the
    machine's pip configuration): no modelport, no scikit-learn, no torch."""
    root = tmp_path_factory.mktemp("edge-venv")
    venv.create(root, with_pip=True)
    python = root / "bin" / "python"
    pins = [f"numpy=={version('numpy')}", f"onnxruntime=={version('onnxruntime')}"]
    subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", *pins], check=True, timeout=600,
                   capture_output=True)
    return python


def _export(pkg: Path, out: Path, *args: str) -> Path:
    result = CliRunner().invoke(app, ["export", str(pkg), "--edge", "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    return out


def _run(python: Path, bundle: Path, *args: str, stdin: str | None = None) -> \
        subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), str(bundle / "predict.py"), *args], input=stdin,
                          capture_output=True, text=True, timeout=120, check=False,
                          cwd=bundle.parent, env={"PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def served(mlp_pkg: Path, heart_onnx: Path) -> Iterator[str]:
    proc, url = start_server(str(mlp_pkg), str(heart_onnx))
    yield url
    stop(proc)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(frame.to_json(orient="records"))  # type: ignore[no-any-return]


def test_fresh_venv_has_no_modelport(fresh_python: Path) -> None:
    probe = subprocess.run([str(fresh_python), "-c", "import modelport"], capture_output=True,
                           text=True, check=False)
    assert probe.returncode == 1 and "No module named 'modelport'" in probe.stderr


@pytest.fixture(params=["mlp", "heart"])
def case(request: pytest.FixtureRequest, mlp_pkg: Path, heart_onnx: Path,
         torch_models: TorchModels, heart_features: pd.DataFrame) -> tuple[str, Path, list[Any]]:
    """(model name, package, 80 request rows) for the MLP and for the example Pipeline."""
    if request.param == "mlp":
        frame = pd.DataFrame(torch_models.mlp_x[600:680], columns=MLP_FEATURES)
        return "mlp", mlp_pkg, _records(frame)
    return "heart", heart_onnx, _records(heart_features.head(80))


def test_bundle_answers_exactly_what_the_server_answers(
        case: tuple[str, Path, list[Any]], fresh_python: Path, served: str,
        tmp_path: Path) -> None:
    model, pkg, rows = case
    bundle = _export(pkg, tmp_path / "edge", "--no-int8")
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    run = _run(fresh_python, bundle, str(tmp_path / "rows.json"))
    assert run.returncode == 0, run.stderr
    edge = json.loads(run.stdout)
    server = httpx.post(f"{served}/models/{model}/predict", json={"instances": rows}).json()
    assert edge["predictions"] == server["predictions"]
    assert edge["classes"] == server["classes"]
    np.testing.assert_allclose(edge["probabilities"], server["probabilities"], rtol=0,
                               atol=1e-6)


def test_bundle_is_a_module_and_reads_stdin(fresh_python: Path, mlp_pkg: Path,
                                            tmp_path: Path) -> None:
    bundle = _export(mlp_pkg, tmp_path / "edge")
    row = dict.fromkeys(MLP_FEATURES, 0.5)
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from predict import predict; "
            f"print(json.dumps(predict([{row!r}, {list(row.values())!r}])))")
    as_module = subprocess.run([str(fresh_python), "-c", code, str(bundle)], capture_output=True,
                               text=True, check=True, timeout=120)
    answer = json.loads(as_module.stdout)
    assert len(answer["predictions"]) == 2 and answer["predictions"][0] == answer["predictions"][1]
    from_stdin = _run(fresh_python, bundle, "-", stdin=json.dumps(row))
    assert json.loads(from_stdin.stdout)["predictions"] == answer["predictions"][:1]


@pytest.mark.parametrize(("row", "message"), [
    ({"s0": 1.0}, "row 0, field 's1': missing required feature"),
    (dict.fromkeys(MLP_FEATURES, 0.0) | {"s2": "abc"}, "row 0, field 's2': expected float"),
    (dict.fromkeys(MLP_FEATURES, 0.0) | {"extra": 1}, "field 'extra': not a feature"),
    ([0.0, 1.0], "row 0: 2 values, the model takes 8"),
], ids=["missing", "wrong-type", "unknown-field", "short-row"])
def test_bundle_refuses_rows_that_do_not_fit_naming_the_field(
        fresh_python: Path, mlp_pkg: Path, tmp_path: Path, row: Any, message: str) -> None:
    bundle = _export(mlp_pkg, tmp_path / "edge")
    run = _run(fresh_python, bundle, json.dumps(row))
    assert run.returncode == 2 and message in run.stderr, run.stderr


def test_bundle_refuses_an_unknown_category(fresh_python: Path, heart_onnx: Path,
                                            heart_features: pd.DataFrame,
                                            tmp_path: Path) -> None:
    bundle = _export(heart_onnx, tmp_path / "edge")
    row = _records(heart_features.head(1))[0] | {"thal": "purple"}
    run = _run(fresh_python, bundle, json.dumps(row))
    assert run.returncode == 2 and "field 'thal': 'purple' is not one of" in run.stderr


def test_int8_is_chosen_when_the_metric_holds(mlp_pkg: Path, torch_models: TorchModels) -> None:
    bundle = edge_bundle(mlp_pkg, data=torch_models.path("mlp_data.csv"), target="label",
                         max_metric_drop=0.05)
    assert bundle.precision == "int8" and bundle.int8 is not None
    assert bundle.int8.metric == "accuracy" and bundle.int8.rows == 300
    float_bundle = edge_bundle(mlp_pkg, int8=False)
    assert bundle.model_bytes < float_bundle.model_bytes
    readme = bundle.files["README.md"].decode()
    assert "Precision: int8. The INT8 graph's accuracy on 300 rows" in readme
    assert f"{bundle.model_bytes:,} bytes" in readme and "| 100 rows |" in readme
    assert bundle.files[MODEL_FILE][4:8] == b"ORTM"  # ORT format's file identifier


def test_float_is_kept_when_int8_moves_the_metric_too_far(mlp_pkg: Path,
                                                          torch_models: TorchModels) -> None:
    """A limit of 0 on R² against the float graph: any INT8 rounding exceeds it."""
    pkg = mlp_pkg.parent / "regression"
    pack(torch_models.path("mlp.pt"), pkg, name="reg",
         example=Example(torch_models.path("mlp_example.csv"), "values"))
    bundle = edge_bundle(pkg, max_metric_drop=0.0)
    assert bundle.precision == "float32" and bundle.int8 is not None
    assert bundle.int8.drop > 0
    assert "beyond the limit" in bundle.files["README.md"].decode()


def test_a_tree_ensemble_stays_float(heart_onnx: Path) -> None:
    bundle = edge_bundle(heart_onnx)
    assert bundle.precision == "float32" and bundle.int8 is None
    assert "no MatMul/Gemm weights" in bundle.files["README.md"].decode()


def test_conversion_without_parity_writes_nothing(heart_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not answer like the model"):
        edge_bundle(heart_onnx, tolerance=0.0)
    result = CliRunner().invoke(app, ["export", str(heart_onnx), "--out", str(tmp_path / "x")])
    assert isinstance(result.exception, ConfigError) and "--edge" in str(result.exception)
    assert not (tmp_path / "x").exists()


def test_export_runs_as_a_command(mlp_pkg: Path, tmp_path: Path) -> None:
    out = tmp_path / "edge"
    proc = subprocess.run([sys.executable, "-m", "modelport", "export", str(mlp_pkg), "--edge",
                           "--out", str(out)], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", MODEL_FILE, "predict.py", "requirements.txt"]
    assert "predict(): " in proc.stdout
