"""MLflow model directories: loaded natively (sklearn, xgboost), packed, pushed, checked
against their requirements, and the python_function fallback with and without mlflow."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from modelport.errors import ConfigError
from modelport.package import load_model, open_package, pack
from modelport.registry import Registry
from tests.mlflow_serving.conftest import Saved, pyfunc_predict, python, records


def _answers(path: Path, frame: pd.DataFrame, **load: Any) -> list[Any]:
    model = load_model(path, **load)
    batch = model.signature.from_records(records(frame))
    return np.asarray(model.runtime.predict(batch).predictions).tolist()


@pytest.mark.parametrize("which", ["ab", "mixed", "xgb"])
def test_a_native_flavor_answers_what_pyfunc_answers(mlflow_dirs: dict[str, Saved],
                                                     which: str) -> None:
    saved = mlflow_dirs[which]
    rows = saved.frame.head(60)
    assert _answers(saved.path, rows) == pyfunc_predict(saved.path, rows)


def test_the_signature_and_golden_rows_come_from_the_mlmodel_file(
        mlflow_dirs: dict[str, Saved]) -> None:
    mixed = mlflow_dirs["mixed"]
    model = load_model(mixed.path)
    assert model.runtime.flavor == "sklearn" and model.name == "mixed"
    sig = model.signature
    assert [(f.name, f.dtype) for f in sig.features] == [
        ("age", "int"), ("dose", "float"), ("kind", "string")]
    assert sig.feature("kind").categories == ("a", "b", "c")
    first = mixed.frame.iloc[0]
    assert sig.example_record() == {"age": int(first["age"]), "dose": float(first["dose"]),
                                    "kind": first["kind"]}
    assert sig.classes == ("sick", "well")
    golden = model.package.golden() if model.package else None
    assert golden is not None
    assert golden["inputs"] == records(mixed.frame.head(4))
    assert golden["predictions"] == pyfunc_predict(mixed.path, mixed.frame.head(4))
    # the default serialization of mlflow 3 is skops: that is the flavor that loads it
    assert load_model(mlflow_dirs["ab"].path).runtime.flavor == "skops"


def test_without_signature_or_example_the_artifact_says_what_it_takes(
        mlflow_dirs: dict[str, Saved]) -> None:
    bare = mlflow_dirs["bare"]
    model = load_model(bare.path)
    assert [(f.name, f.dtype) for f in model.signature.features] == [("a", "float"),
                                                                     ("b", "float")]
    assert model.package is not None and model.package.golden() is None
    assert np.allclose(_answers(bare.path, bare.frame.head(20)),
                       pyfunc_predict(bare.path, bare.frame.head(20)))


def test_pack_and_registry_push_turn_it_into_a_package(mlflow_dirs: dict[str, Saved],
                                                       tmp_path: Path) -> None:
    mixed = mlflow_dirs["mixed"]
    pkg = pack(mixed.path, tmp_path / "pkg", name="mixed", version="2.0.0")
    golden = pkg.golden()
    assert golden is not None
    assert golden["inputs"] == records(mixed.frame.head(4))
    assert pkg.manifest.flavor == "sklearn" and pkg.signature.feature("age").dtype == "int"
    rows = mixed.frame.head(30)
    expected = pyfunc_predict(mixed.path, rows)
    assert _answers(pkg.root, rows) == expected
    with Registry.open(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "store") as registry:
        record = registry.push(mixed.path, "mixed")
        fetched = registry.fetch(record.ref)
    assert open_package(fetched).manifest.signature == pkg.manifest.signature
    assert _answers(fetched, rows) == expected


def test_a_python_function_model_cannot_be_packed(tmp_path: Path,
                                                  pyfunc_dir: Path) -> None:
    with pytest.raises(ConfigError, match="python_function"):
        pack(pyfunc_dir, tmp_path / "p", name="p")


def test_each_requirement_that_differs_is_one_warning(mlflow_dirs: dict[str, Saved],
                                                      tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    from importlib.metadata import version

    copy = tmp_path / "ab"
    shutil.copytree(mlflow_dirs["ab"].path, copy)
    (copy / "requirements.txt").write_text(
        f"mlflow==0.1\nscikit-learn==0.20.4\nnumpy=={version('numpy')}\nnot-a-lib==1.0\n",
        encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="modelport"):
        load_model(copy)
    said = [r.getMessage() for r in caplog.records]
    assert any(f"scikit-learn==0.20.4; scikit-learn {version('scikit-learn')} is installed"
               in m for m in said), said
    assert any("not-a-lib==1.0, not installed here" in m for m in said), said
    assert not any("numpy" in m or "mlflow==" in m for m in said), said  # equal / not needed
    caplog.clear()
    (copy / "requirements.txt").unlink()  # then conda.yaml's pip list is read
    env = yaml.safe_load((copy / "conda.yaml").read_text(encoding="utf-8"))
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))
    pip["pip"] = ["scikit-learn==0.21.0"]
    (copy / "conda.yaml").write_text(yaml.safe_dump(env), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="modelport"):
        load_model(copy)
    assert any("scikit-learn==0.21.0" in r.getMessage() for r in caplog.records)


def test_a_signature_that_names_other_columns_is_refused(mlflow_dirs: dict[str, Saved],
                                                         tmp_path: Path) -> None:
    copy = tmp_path / "ab"
    shutil.copytree(mlflow_dirs["ab"].path, copy)
    spec = yaml.safe_load((copy / "MLmodel").read_text(encoding="utf-8"))
    spec["signature"]["inputs"] = json.dumps([{"type": "double", "name": "x"},
                                              {"type": "double", "name": "y"}])
    (copy / "MLmodel").write_text(yaml.safe_dump(spec), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"columns \(x, y\) are not the features .* \(a, b\)"):
        load_model(copy)


@pytest.fixture(scope="module")
def pyfunc_dir(tmp_path_factory: pytest.TempPathFactory, mlflow_dirs: dict[str, Saved]) -> Path:
    """A custom ``mlflow.pyfunc.PythonModel``: only mlflow can load it."""
    import mlflow.pyfunc

    class Weighted(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
        def predict(self, context: Any, model_input: pd.DataFrame,
                    params: dict[str, Any] | None = None) -> Any:
            return model_input["a"] * 2.0 - model_input["b"]

    out = tmp_path_factory.mktemp("pyfunc") / "weighted"
    mlflow.pyfunc.save_model(out, python_model=Weighted(), pip_requirements=["pandas"],
                             input_example=mlflow_dirs["ab"].frame.head(2))
    return out


def test_python_function_is_the_fallback_when_mlflow_is_installed(
        pyfunc_dir: Path, mlflow_dirs: dict[str, Saved]) -> None:
    model = load_model(pyfunc_dir)
    assert model.runtime.flavor == "pyfunc"
    assert [(f.name, f.dtype) for f in model.signature.features] == [("a", "float"),
                                                                     ("b", "float")]
    rows = mlflow_dirs["ab"].frame.head(20)
    assert np.allclose(_answers(pyfunc_dir, rows), pyfunc_predict(pyfunc_dir, rows))


def test_without_mlflow_a_python_function_model_names_the_package(
        pyfunc_dir: Path, no_mlflow: dict[str, str], tmp_path: Path) -> None:
    code = "import sys, pathlib; from modelport.package import load_model; " \
           "load_model(pathlib.Path(sys.argv[1]))"
    log = tmp_path / "imports.log"
    run = subprocess.run([python(), "-c", code, str(pyfunc_dir)],
                         env={**no_mlflow, "MLFLOW_IMPORT_LOG": str(log)},
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode != 0
    assert "needs the 'mlflow' package; install it with: pip install 'modelport[mlflow]'" \
        in run.stderr, run.stderr[-2000:]
    assert log.read_text(encoding="utf-8").split() == ["mlflow"]


@pytest.fixture(scope="module")
def onnx_and_booster(tmp_path_factory: pytest.TempPathFactory,
                     mlflow_dirs: dict[str, Saved]) -> dict[str, tuple[Path, Any]]:
    """The ``ab`` classifier converted to ONNX, and a LightGBM Booster, each saved with its
    mlflow flavor."""
    from importlib.metadata import version

    import lightgbm
    import mlflow.lightgbm
    import mlflow.onnx
    from skl2onnx import to_onnx

    root = tmp_path_factory.mktemp("flavors")
    ab = mlflow_dirs["ab"]
    graph = to_onnx(ab.model, ab.frame.head(1).to_numpy().astype(np.float32),
                    options={"zipmap": False})
    mlflow.onnx.save_model(graph, root / "onnx", pip_requirements=[
        f"onnxruntime=={version('onnxruntime')}"])
    labels = ab.model.predict(ab.frame)
    booster = lightgbm.train({"objective": "binary", "verbose": -1, "num_leaves": 7},
                             lightgbm.Dataset(ab.frame, labels), num_boost_round=10)
    mlflow.lightgbm.save_model(booster, root / "booster", pip_requirements=[
        f"lightgbm=={version('lightgbm')}"])
    return {"onnx": (root / "onnx", ab.model), "lightgbm": (root / "booster", booster)}


def test_the_onnx_and_lightgbm_flavors_load_natively(
        onnx_and_booster: dict[str, tuple[Path, Any]], mlflow_dirs: dict[str, Saved]) -> None:
    rows = mlflow_dirs["ab"].frame.head(50)
    path, model = onnx_and_booster["onnx"]
    loaded = load_model(path)
    assert loaded.runtime.flavor == "onnx"
    batch = loaded.signature.from_rows(rows.to_numpy().tolist())
    assert loaded.runtime.predict(batch).predictions.tolist() == model.predict(rows).tolist()
    path, booster = onnx_and_booster["lightgbm"]
    loaded = load_model(path)
    assert loaded.runtime.flavor == "lightgbm"
    out = loaded.runtime.predict(loaded.signature.from_records(records(rows)))
    assert out.probabilities is not None
    assert np.allclose(out.probabilities[:, 1], booster.predict(rows))
