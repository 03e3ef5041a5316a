"""``modelport validate``: each check catches what it is for; metrics agree with scikit-learn."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.linear_model import LinearRegression

from modelport.errors import ConfigError
from modelport.package import open_package, pack, write_manifest
from modelport.tools.validate import (
    Thresholds,
    ValidationReport,
    classification_metrics,
    regression_metrics,
    validate_package,
)


def _copy(package: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "pkg"
    shutil.copytree(package, dest)
    return dest


def _status(report: ValidationReport, name: str) -> str:
    return next(c.status for c in report.checks if c.name == name)


@pytest.fixture(scope="module")
def heart_report(heart_package: Path, heart_dir: Path) -> ValidationReport:
    return validate_package(heart_package, data=heart_dir / "heart.csv", target="condition",
                            thresholds=Thresholds(min_accuracy=0.8, min_auc=0.8))


@pytest.fixture(scope="module")
def regression_package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A LinearRegression on y = 3a - 2b + noise, packed with golden rows; and its data."""
    root = tmp_path_factory.mktemp("reg")
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    frame["y"] = 3 * frame["a"] - 2 * frame["b"] + rng.normal(0, 0.1, 300)
    model = LinearRegression().fit(frame[["a", "b"]], frame["y"])
    joblib.dump(model, root / "model.joblib")
    frame.to_csv(root / "data.csv", index=False)
    pkg = pack(root / "model.joblib", root / "pkg", name="lin", reference=root / "data.csv",
               target="y")
    return pkg.root, root / "data.csv"


def test_a_sound_package_passes_every_check(heart_report: ValidationReport) -> None:
    assert heart_report.passed
    names = [c.name for c in heart_report.checks]
    assert names[:1] == ["integrity"] and {"load", "signature", "golden", "accuracy",
                                           "auc"} <= set(names)
    assert all(c.status == "pass" for c in heart_report.checks)


def test_classification_metrics_match_scikit_learn(heart_report: ValidationReport,
                                                   heart_package: Path,
                                                   heart_frame: pd.DataFrame) -> None:
    model = joblib.load(open_package(heart_package).artifact_path)
    x, y = heart_frame.drop(columns="condition"), heart_frame["condition"]
    m = heart_report.metrics
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, model.predict(x)))
    assert m["f1"] == pytest.approx(skm.f1_score(y, model.predict(x)))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, model.predict_proba(x)[:, 1]))


def test_multiclass_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    y = rng.choice(["a", "b", "c"], 200)
    proba = rng.dirichlet([1, 1, 1], 200)
    pred = np.array(["a", "b", "c"])[proba.argmax(1)]
    m = classification_metrics(y, pred, proba, ["a", "b", "c"])
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr"))


def test_regression_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(5)
    y, pred = rng.normal(size=100), rng.normal(size=100)
    m = regression_metrics(y, pred)
    assert m["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, pred)))
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))
    assert m["r2"] == pytest.approx(skm.r2_score(y, pred))


def test_labels_read_as_strings_still_match_integer_classes() -> None:
    m = classification_metrics(np.array(["0", "1", "1"]), np.array([0, 1, 0]), None, [0, 1])
    assert m["accuracy"] == pytest.approx(2 / 3)


def test_regression_package_is_gated_on_rmse(regression_package: tuple[Path, Path]) -> None:
    pkg, data = regression_package
    report = validate_package(pkg, data=data, target="y",
                              thresholds=Thresholds(max_rmse=0.2, min_r2=0.99))
    assert report.passed, report.checks
    assert set(report.metrics) == {"rmse", "mae", "r2"}


def test_a_missed_threshold_fails(heart_package: Path, heart_dir: Path) -> None:
    report = validate_package(heart_package, data=heart_dir / "heart.csv", target="condition",
                              thresholds=Thresholds(min_accuracy=0.999))
    assert not report.passed
    assert _status(report, "accuracy") == "fail"


def test_a_tampered_file_fails_integrity_without_loading(heart_package: Path,
                                                         tmp_path: Path) -> None:
    pkg = _copy(heart_package, tmp_path)
    (pkg / "golden.json").write_text("{}")
    report = validate_package(pkg)
    assert [(c.name, c.status) for c in report.checks] == [("integrity", "fail")]


def test_library_version_skew_is_a_warning(heart_package: Path, tmp_path: Path) -> None:
    pkg = open_package(_copy(heart_package, tmp_path))
    libraries = dict(pkg.manifest.libraries, **{"scikit-learn": "1.0.0"})
    report = validate_package(write_manifest(pkg, libraries=libraries).root)
    assert _status(report, "library scikit-learn") == "warn"
    assert report.passed


def test_a_library_that_is_not_installed_fails(heart_package: Path, tmp_path: Path) -> None:
    pkg = open_package(_copy(heart_package, tmp_path))
    libraries = dict(pkg.manifest.libraries, **{"no-such-dist-mp": "1.0"})
    report = validate_package(write_manifest(pkg, libraries=libraries).root)
    assert _status(report, "library no-such-dist-mp") == "fail"


def test_golden_predictions_that_changed_fail(heart_package: Path, tmp_path: Path) -> None:
    pkg = open_package(_copy(heart_package, tmp_path))
    golden = json.loads((pkg.root / "golden.json").read_text())
    golden["predictions"][0] = 1 - golden["predictions"][0]
    (pkg.root / "golden.json").write_text(json.dumps(golden))
    report = validate_package(write_manifest(pkg).root)
    assert _status(report, "golden") == "fail"
    assert "row 0" in next(c.detail for c in report.checks if c.name == "golden")


def test_a_threshold_of_the_other_task_is_refused(heart_package: Path,
                                                  heart_dir: Path) -> None:
    with pytest.raises(ConfigError, match="--max-rmse"):
        validate_package(heart_package, data=heart_dir / "heart.csv", target="condition",
                         thresholds=Thresholds(max_rmse=1.0))


def test_a_missing_label_column_is_named(heart_package: Path, heart_dir: Path) -> None:
    with pytest.raises(ConfigError, match="'outcome'"):
        validate_package(heart_package, data=heart_dir / "heart.csv", target="outcome")


def test_thresholds_without_data_are_refused(heart_package: Path) -> None:
    with pytest.raises(ConfigError, match="--data"):
        validate_package(heart_package, thresholds=Thresholds(min_accuracy=0.5))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelport", "validate", *args],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})


def test_cli_in_a_fresh_process_prints_a_table_and_exits_zero(heart_package: Path,
                                                               heart_dir: Path) -> None:
    proc = _cli(str(heart_package), "--data", str(heart_dir / "heart.csv"), "--target",
                "condition", "--min-accuracy", "0.8")
    assert proc.returncode == 0, proc.stderr
    assert "golden" in proc.stdout and "PASSED" in proc.stdout


def test_cli_exits_one_when_a_check_fails(heart_package: Path, heart_dir: Path) -> None:
    proc = _cli(str(heart_package), "--data", str(heart_dir / "heart.csv"), "--target",
                "condition", "--min-auc", "0.9999", "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert not report["passed"]
    assert {"name": "auc", "status": "fail"}.items() <= next(
        c for c in report["checks"] if c["name"] == "auc").items()


def test_cli_table_names_each_check_and_the_metrics(heart_package: Path,
                                                    heart_dir: Path) -> None:
    from typer.testing import CliRunner

    from modelport.cli import app

    result = CliRunner().invoke(app, ["validate", str(heart_package), "--data",
                                      str(heart_dir / "heart.csv"), "--target", "condition"],
                                env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    for word in ("integrity", "library scikit-learn", "signature", "golden", "metric auc",
                 "PASSED"):
        assert word in result.output
