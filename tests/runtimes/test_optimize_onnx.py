"""``modelport optimize``: ONNX conversion with proven parity, recorded in the manifest."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from modelport.cli.optimize import register
from modelport.errors import ConfigError, IntegrityError
from modelport.package import load_model, open_package, pack
from modelport.tools.optimize import ARTIFACT, QUANTIZED, optimize


@pytest.fixture
def heart_copy(heart_package: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(heart_package, tmp_path / "heart"))


def _pack(saved: Any, tmp_path: Path, target: pd.Series) -> Path:
    data = saved.frame.assign(target=target.to_numpy())
    data.to_csv(tmp_path / "ref.csv", index=False)
    out = tmp_path / "pkg"
    pack(saved.path, out, name="m", reference=tmp_path / "ref.csv", target="target")
    return out


def test_optimize_records_passed_parity_in_the_manifest(heart_copy: Path) -> None:
    report = optimize(heart_copy)
    onnx = open_package(heart_copy).manifest.onnx
    assert onnx is not None and onnx["artifact"] == ARTIFACT and onnx["opset"] == report.opset
    assert onnx["parity"] == {"passed": True, "rows": 8, "max_abs_diff": report.parity.max_abs_diff,
                              "label_mismatches": 0, "tolerance": 1e-4}


def test_auto_runtime_serves_onnx_after_parity_passed(heart_copy: Path) -> None:
    optimize(heart_copy)
    assert load_model(heart_copy, runtime="auto").runtime.flavor == "onnx"


def test_onnx_runtime_answers_like_the_native_one(heart_copy: Path, heart_features: Any) -> None:
    optimize(heart_copy)
    onnx, native = (load_model(heart_copy, runtime=r).runtime for r in ("onnx", "native"))
    batch = native.signature.from_records(heart_features.head(64).to_dict("records"))
    a, b = onnx.predict(batch), native.predict(batch)
    assert (a.predictions == b.predictions).all()
    assert abs(a.probabilities - b.probabilities).max() < 1e-5  # type: ignore[operator]


def test_data_rows_are_checked_besides_golden_rows(heart_copy: Path, heart_dir: Path) -> None:
    report = optimize(heart_copy, data=heart_dir / "heart.csv")
    assert report.parity.rows == 8 + 1000


def test_failed_parity_leaves_auto_on_the_native_runtime(heart_copy: Path) -> None:
    report = optimize(heart_copy, tolerance=0.0)
    assert not report.parity.passed
    assert load_model(heart_copy, runtime="auto").runtime.flavor == "sklearn"


def test_tampered_onnx_artifact_is_refused(heart_copy: Path) -> None:
    optimize(heart_copy)
    with (heart_copy / ARTIFACT).open("ab") as fh:
        fh.write(b"\x00")
    with pytest.raises(IntegrityError, match=ARTIFACT):
        open_package(heart_copy)


def test_quantize_refuses_a_tree_ensemble_and_writes_nothing(heart_copy: Path) -> None:
    with pytest.raises(ConfigError, match="nothing to quantize"):
        optimize(heart_copy, quantize=True)
    assert not (heart_copy / ARTIFACT).exists()
    assert open_package(heart_copy).manifest.onnx is None


def test_quantize_writes_an_int8_copy_of_a_neural_network(mlp_package: Path,
                                                          tmp_path: Path) -> None:
    pkg = Path(shutil.copytree(mlp_package, tmp_path / "mlp"))
    report = optimize(pkg, quantize=True, tolerance=0.05)
    assert report.parity.passed and report.quantized is not None
    assert report.quantized.parity.rows == 8
    assert (pkg / QUANTIZED).is_file()
    recorded = open_package(pkg).manifest.onnx
    assert recorded is not None and recorded["quantized"]["artifact"] == QUANTIZED


@pytest.mark.parametrize(("name", "target"), [
    ("xgb_binary", "binary"), ("xgb_softmax", "multi"), ("xgb_regressor", "number"),
    ("lgb_binary", "binary"), ("lgb_multi", "multi"),
], ids=["xgb-binary", "xgb-softmax", "xgb-regressor", "lgb-binary", "lgb-multiclass"])
def test_boosters_convert_with_parity(name: str, target: str, request: Any, tabular: Any,
                                      tmp_path: Path) -> None:
    pkg = _pack(request.getfixturevalue(name), tmp_path, tabular[target])
    report = optimize(pkg, tolerance=1e-4)
    assert report.parity.passed, report.parity
    assert load_model(pkg).runtime.flavor == "onnx"


def test_categorical_booster_is_refused_clearly(lgb_categorical: Any, tmp_path: Path) -> None:
    pkg = _pack(lgb_categorical, tmp_path, pd.Series([0] * len(lgb_categorical.frame)))
    with pytest.raises(ConfigError, match="categorical features"):
        optimize(pkg)


def test_negative_tolerance_is_refused(heart_copy: Path) -> None:
    with pytest.raises(ConfigError, match="--tolerance"):
        optimize(heart_copy, tolerance=-1.0)


def test_data_without_a_feature_names_it(heart_copy: Path, tmp_path: Path,
                                         heart_features: Any) -> None:
    heart_features.drop(columns=["chol"]).to_csv(tmp_path / "rows.csv", index=False)
    with pytest.raises(ConfigError, match="'chol'"):
        optimize(heart_copy, data=tmp_path / "rows.csv")


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    return app


def test_cli_reports_parity_and_exits_zero(heart_copy: Path) -> None:
    result = CliRunner().invoke(_cli(), ["optimize", str(heart_copy)])
    assert result.exit_code == 0, result.output
    assert "parity passed" in result.output and "labels differing 0" in result.output


def test_cli_exits_one_when_parity_fails(heart_copy: Path) -> None:
    result = CliRunner().invoke(_cli(), ["optimize", str(heart_copy), "--tolerance", "0"])
    assert result.exit_code == 1
    assert "parity FAILED" in result.output


@pytest.fixture
def onnx_mlp_package(mlp_package: Path, tmp_path: Path) -> Path:
    """A package whose artifact is already ONNX: the MLP converted, packed on its own."""
    pkg = Path(shutil.copytree(mlp_package, tmp_path / "converted"))
    optimize(pkg)
    frame = pd.read_csv(mlp_package.parent / "mlp.csv")
    frame.columns = [f"f{i}" for i in range(4)] + ["binary"]
    frame.to_csv(tmp_path / "ref.csv", index=False)
    out = tmp_path / "onnx_pkg"
    pack(pkg / ARTIFACT, out, name="mlp-onnx", reference=tmp_path / "ref.csv", target="binary")
    return out


def test_onnx_package_is_not_converted_again(onnx_mlp_package: Path) -> None:
    with pytest.raises(ConfigError, match="already ONNX"):
        optimize(onnx_mlp_package)


def test_onnx_package_can_be_quantized(onnx_mlp_package: Path) -> None:
    report = optimize(onnx_mlp_package, quantize=True, tolerance=0.05)
    assert report.artifact == "model.onnx" and report.quantized is not None
    quantized = report.quantized
    assert (onnx_mlp_package / quantized.artifact).is_file()
    # outputs moved little; whether a row near the boundary flips its label depends on the
    # quantizer's numerics, which change between onnxruntime releases (the metric gate, not
    # this test, decides whether the copy is served)
    assert quantized.parity.rows == 8 and quantized.parity.max_abs_diff <= 0.05
    assert quantized.compression is not None
    assert load_model(onnx_mlp_package).runtime.flavor == "onnx"


def test_optimize_without_quantize_drops_an_earlier_int8_copy(mlp_package: Path,
                                                              tmp_path: Path) -> None:
    pkg = Path(shutil.copytree(mlp_package, tmp_path / "mlp"))
    optimize(pkg, quantize=True, tolerance=0.05)
    optimize(pkg)
    assert not (pkg / QUANTIZED).exists()
    assert QUANTIZED not in open_package(pkg).manifest.files


def test_numeric_frame_pipeline_with_int_and_float_columns_keeps_parity(tmp_path: Path) -> None:
    """Int and float columns of a DataFrame reach the model in its fitted order (the single
    matrix input, not skl2onnx's per-column FeatureVectorizer, which reorders mixed types)."""
    import joblib
    import numpy as np
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.integers(0, 80, 400), "b": rng.normal(0, 1, 400).round(1),
                          "c": rng.integers(0, 4, 400)})
    target = ((frame["a"] > 40) ^ (frame["b"] > 0) ^ (frame["c"] == 2)).astype(int)
    model = Pipeline([("scale", StandardScaler()),
                      ("clf", GradientBoostingClassifier(n_estimators=30, random_state=0))])
    joblib.dump(model.fit(frame, target), tmp_path / "model.joblib")
    frame.assign(target=target).to_csv(tmp_path / "ref.csv", index=False)
    pack(tmp_path / "model.joblib", tmp_path / "pkg", name="m", reference=tmp_path / "ref.csv",
         target="target")
    report = optimize(tmp_path / "pkg", data=tmp_path / "ref.csv")
    assert report.parity.passed, report.parity
    assert report.parity.rows == 408 and report.parity.max_abs_diff < 1e-5


def test_onnx_server_with_drift_imports_scipy_statistics_before_it_serves(
        heart_copy: Path) -> None:
    """An ONNX server (no scikit-learn in the process) imports scipy's distributions while its
    model loads: at the first periodic drift check they stalled the event loop ~0.5 s."""
    import json
    import subprocess
    import sys

    optimize(heart_copy)
    code = ("import json, sys\n"
            "from modelport.config import Settings\n"
            "from modelport.server.factory import build_app\n"
            f"build_app(Settings(model=[{str(heart_copy)!r}], runtime='onnx'))\n"
            "print(json.dumps({m: m in sys.modules for m in ('scipy.stats', 'sklearn')}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert json.loads(out.stdout.splitlines()[-1]) == {"scipy.stats": True, "sklearn": False}
