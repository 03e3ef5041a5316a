"""A bare artifact of every flavor is packed with golden rows made from its signature, and
``optimize`` checks parity on them without ``--data``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from modelport.cli import app
from modelport.errors import GoldenCheckFailed
from modelport.golden import boundary_records
from modelport.package import load_model, open_package, pack, write_manifest
from modelport.registry.gate import check_candidate
from modelport.tools.optimize import optimize

FLAVORS = ["heart", "xgb_binary", "xgb_multi", "xgb_softmax", "xgb_regressor", "xgb_categorical",
           "lgb_binary", "lgb_multi", "lgb_regressor", "lgb_categorical", "onnx_numeric",
           "onnx_columns", "onnx_regressor", "mlp"]


@pytest.fixture
def bare(request: pytest.FixtureRequest, models_dir: Path) -> Path:
    """The model file of one flavor fixture, as saved (no data beside it)."""
    if request.param == "heart":  # a scikit-learn DataFrame Pipeline
        heart: Path = request.getfixturevalue("heart_model_path")
        return heart
    if request.param == "mlp":  # a scikit-learn array model
        request.getfixturevalue("mlp_package")
        return models_dir / "mlp.joblib"
    path: Path = request.getfixturevalue(request.param).path
    return path


@pytest.mark.parametrize("bare", FLAVORS, indirect=True)
def test_a_bare_artifact_gets_golden_rows_from_its_signature(bare: Path,
                                                             tmp_path: Path) -> None:
    pkg = pack(bare, tmp_path / "pkg", name="m")
    golden = pkg.golden()
    assert golden is not None
    assert golden["inputs"] == boundary_records(pkg.signature)
    assert len(golden["inputs"]) > 1  # the example row and at least one boundary row
    model = load_model(pkg.root, runtime="native")
    answered = model.runtime.predict(model.signature.from_records(golden["inputs"]))
    assert answered.predictions.tolist() == golden["predictions"]
    probabilities: Any = answered.probabilities
    assert (None if probabilities is None else probabilities.tolist()) == \
        golden["probabilities"]
    assert check_candidate(model) == len(golden["inputs"])


def test_optimize_needs_no_data_for_a_package_packed_without_any(
        heart_dir: Path, tmp_path: Path) -> None:
    pkg = pack(heart_dir / "model.joblib", tmp_path / "heart", name="heart")
    report = optimize(pkg.root)
    golden = pkg.golden()
    assert golden is not None
    assert (report.parity.passed, report.parity.rows) == (True, len(golden["inputs"]))
    assert load_model(pkg.root, runtime="auto").runtime.flavor == "onnx"


def test_optimize_checks_an_old_package_without_golden_rows_on_generated_ones(
        heart_package: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(heart_package, tmp_path / "old"))
    (root / "golden.json").unlink()
    pkg = write_manifest(open_package(root, verify=False), golden=None)
    assert pkg.golden() is None
    report = optimize(root)
    assert report.parity.rows == len(boundary_records(pkg.signature))


def test_modelport_optimize_runs_without_data(heart_dir: Path, tmp_path: Path) -> None:
    pkg = pack(heart_dir / "model.joblib", tmp_path / "heart", name="heart")
    result = CliRunner().invoke(app, ["optimize", str(pkg.root)])
    assert result.exit_code == 0, result.output
    assert f"parity on {len(boundary_records(pkg.signature))} rows" in result.output


def test_an_onnx_artifact_in_use_is_held_to_the_tolerance_its_parity_passed_with(
        heart_package: Path, tmp_path: Path) -> None:
    """Golden outputs are the native model's; float32 ONNX may move them by the tolerance."""
    root = Path(shutil.copytree(heart_package, tmp_path / "heart"))
    assert optimize(root, tolerance=1e-4).parity.passed
    golden = json.loads((root / "golden.json").read_text())
    golden["probabilities"] = [[p + 5e-5 for p in row] for row in golden["probabilities"]]
    (root / "golden.json").write_text(json.dumps(golden))
    write_manifest(open_package(root, verify=False))
    assert check_candidate(load_model(root, runtime="onnx")) == len(golden["inputs"])
    with pytest.raises(GoldenCheckFailed, match="probabilities differ"):
        check_candidate(load_model(root, runtime="native"))
