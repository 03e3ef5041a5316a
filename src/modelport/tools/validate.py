"""``modelport validate``: the gate a package passes before it ships.

Checks, in order: the sha256 of every file; the library versions recorded at pack time against
the installed ones (skew is a warning: scikit-learn skew can break unpickling); loading; the
signature round trip (to_dict/from_dict, an example request through validation and predict);
the golden predictions recorded at pack time; and, given labelled data, the metrics
(classification: accuracy, AUC, F1; regression: RMSE, MAE, R²) against thresholds.

Run it in a fresh process (the CLI is one) so that what loads is what a server would load.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from modelport.errors import ConfigError, IntegrityError, ModelportError
from modelport.monitoring.quality import (
    calibration_error,
    classification_quality,
    regression_quality,
)
from modelport.package import (
    LoadedModel,
    Package,
    load_model,
    open_package,
    read_table,
    write_manifest,
)
from modelport.signature import Signature
from modelport.types import Outputs

__all__ = ["Check", "Thresholds", "ValidationReport", "baseline", "classification_metrics",
           "regression_metrics", "validate_package"]

Status = Literal["pass", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    status: Status
    detail: str


@dataclass(frozen=True)
class Thresholds:
    """Bounds the metrics must meet; ``None`` means not checked."""

    min_accuracy: float | None = None
    min_auc: float | None = None
    min_f1: float | None = None
    max_rmse: float | None = None
    max_mae: float | None = None
    min_r2: float | None = None

    def bounds(self) -> dict[str, tuple[Literal["min", "max"], float]]:
        """``{metric: ("min" | "max", bound)}`` of the thresholds that are set."""
        out: dict[str, tuple[Literal["min", "max"], float]] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                kind, metric = f.name.split("_", 1)
                out[metric] = ("min" if kind == "min" else "max", float(value))
        return out


_TASK_METRICS = {"classification": ("accuracy", "auc", "f1"), "regression": ("rmse", "mae", "r2")}


@dataclass(frozen=True)
class ValidationReport:
    """Every check that ran and the metrics computed on the data."""

    package: str
    checks: tuple[Check, ...]
    metrics: Mapping[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """No check failed (warnings pass)."""
        return all(c.status != "fail" for c in self.checks)


def validate_package(
    root: Path,
    *,
    data: Path | None = None,
    target: str | None = None,
    thresholds: Thresholds | None = None,
    record: bool = False,
) -> ValidationReport:
    """Run every check on the package at ``root``; ``data`` (CSV/Parquet/JSONL with the label
    column ``target``) adds metrics and thresholds. With ``record``, a package that passes
    gets its :func:`baseline` written to its manifest (the quality alert's reference)."""
    thresholds = thresholds or Thresholds()
    if data is not None and not target:
        raise ConfigError("--target: name the label column of --data")
    if thresholds.bounds() and data is None:
        raise ConfigError("thresholds need labelled data: pass --data and --target")
    try:
        pkg = open_package(root)
    except IntegrityError as exc:
        return ValidationReport(str(root), (Check("integrity", "fail", exc.message),))
    _check_task(pkg.signature, thresholds)
    checks = [Check("integrity", "pass", f"sha256 of {len(pkg.manifest.files)} files match")]
    checks += _library_checks(pkg)
    try:
        started = time.perf_counter()
        loaded = load_model(root)
    except ModelportError as exc:
        return ValidationReport(str(root), (*checks, Check("load", "fail", exc.message)))
    checks.append(Check("load", "pass", f"{loaded.runtime.flavor} runtime in "
                                        f"{time.perf_counter() - started:.2f} s"))
    checks += [_guarded("signature", _signature_check, pkg, loaded),
               _guarded("golden", _golden_check, pkg, loaded)]
    metrics: dict[str, float] = {}
    if data is not None and target:
        metrics = score(loaded, data, target)
        checks += _threshold_checks(metrics, thresholds)
        if record and all(c.status != "fail" for c in checks):
            found = baseline(loaded, data, target)
            write_manifest(pkg, metrics=found)
            checks.append(Check("baseline", "pass", _recorded(found)))
    return ValidationReport(str(root), tuple(checks), metrics)


def _recorded(found: Mapping[str, Any]) -> str:
    values = ", ".join(f"{k} {v:.4f}" for k, v in found["validation"].items())
    ece = found.get("calibration", {}).get("ece")
    extra = "" if ece is None else f"; calibration error {ece:.4f}"
    return f"recorded in modelport.yaml for monitoring: {values}{extra}"


def _check_task(sig: Signature, thresholds: Thresholds) -> None:
    allowed = _TASK_METRICS[sig.task]
    for metric in thresholds.bounds():
        if metric not in allowed:
            raise ConfigError(f"--{'max' if metric in ('rmse', 'mae') else 'min'}-{metric} "
                              f"does not apply to a {sig.task} model (use: "
                              f"{', '.join(allowed)})")


def _library_checks(pkg: Package) -> list[Check]:
    checks = []
    for dist, recorded in sorted(pkg.manifest.libraries.items()):
        try:
            installed = version(dist)
        except PackageNotFoundError:
            checks.append(Check(f"library {dist}", "fail",
                                f"saved with {recorded}, not installed: pip install "
                                f"'{dist}=={recorded}'"))
            continue
        if installed == recorded:
            checks.append(Check(f"library {dist}", "pass", recorded))
        else:
            checks.append(Check(f"library {dist}", "warn",
                                f"saved with {recorded}, installed {installed}: version skew "
                                f"can change predictions or break loading; pin {dist}=={recorded}"))
    recorded_py = ".".join(pkg.manifest.python.split(".")[:2])
    running_py = ".".join(platform.python_version().split(".")[:2])
    status: Status = "pass" if recorded_py == running_py else "warn"
    checks.append(Check("python", status, f"saved with {pkg.manifest.python}, running "
                                          f"{platform.python_version()}"))
    return checks


def _guarded(name: str, check: Callable[[Package, LoadedModel], Check], pkg: Package,
             loaded: LoadedModel) -> Check:
    try:
        return check(pkg, loaded)
    except ModelportError as exc:
        return Check(name, "fail", exc.message)


def _signature_check(pkg: Package, loaded: LoadedModel) -> Check:
    sig = pkg.signature
    if Signature.from_dict(json.loads(json.dumps(sig.to_dict()))) != sig:
        return Check("signature", "fail", "the signature does not survive to_dict/from_dict")
    record = json.loads(json.dumps(sig.example_record()))
    out = loaded.runtime.predict(sig.from_records([record]))
    if len(out.predictions) != 1:
        return Check("signature", "fail", f"one example row gave {len(out.predictions)} "
                                          "predictions")
    if out.probabilities is not None and not np.allclose(out.probabilities.sum(axis=1), 1.0):
        return Check("signature", "fail", "probabilities of the example do not sum to 1")
    return Check("signature", "pass", f"{len(sig.features)} features ({sig.task}); an example "
                                      "request validates and predicts")


def _golden_check(pkg: Package, loaded: LoadedModel) -> Check:
    golden = pkg.golden()
    if not golden:
        return Check("golden", "warn", "no golden rows in the package (pack with --reference)")
    out = loaded.runtime.predict(pkg.signature.from_records(golden["inputs"]))
    expected = golden["predictions"]
    got = np.asarray(out.predictions).tolist()
    if len(got) != len(expected):
        return Check("golden", "fail", f"{len(got)} predictions for {len(expected)} recorded")
    if got != expected:
        bad = next(i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b)
        return Check("golden", "fail", f"row {bad}: predicted {got[bad]!r}, recorded "
                                       f"{expected[bad]!r} at pack time")
    if golden.get("probabilities") is not None and out.probabilities is not None:
        diff = float(np.max(np.abs(out.probabilities - np.asarray(golden["probabilities"]))))
        if diff > 1e-6:
            return Check("golden", "fail", f"probabilities differ from pack time by {diff:.2e}")
    return Check("golden", "pass", f"{len(expected)} recorded predictions reproduced")


def score(loaded: LoadedModel, data: Path, target: str) -> dict[str, float]:
    """The task's metrics of ``loaded`` on labelled ``data``."""
    y, out = _labelled(loaded, data, target)
    if loaded.signature.task == "classification":
        return classification_metrics(y, out.predictions, out.probabilities, out.classes)
    return regression_metrics(y.astype(np.float64), np.asarray(out.predictions, np.float64))


def _labelled(loaded: LoadedModel, data: Path, target: str) -> tuple[npt.NDArray[Any], Outputs]:
    """The labels of ``data`` and the model's outputs on it."""
    frame = read_table(data)
    if target not in frame.columns:
        raise ConfigError(f"--target: column '{target}' is not in '{data.name}' (columns: "
                          f"{', '.join(map(str, frame.columns[:20]))})")
    sig = loaded.signature
    missing = [n for n in sig.names if n not in frame.columns]
    if missing:
        raise ConfigError(f"--data: '{data.name}' lacks the feature '{missing[0]}'")
    batch = sig.from_columns({n: frame[n].to_numpy() for n in sig.names})
    return frame[target].to_numpy(), loaded.runtime.predict(batch)


def baseline(loaded: LoadedModel, data: Path, target: str) -> dict[str, Any]:
    """What live monitoring compares with, as stored in ``modelport.yaml`` under ``metrics``:
    ``validation`` (the metrics of :mod:`~modelport.monitoring.quality`, the names its gauges
    use) and, for a classifier with probabilities, ``calibration`` (the expected calibration
    error the label-free CBPE estimate needs to be trusted)."""
    y, out = _labelled(loaded, data, target)
    found: dict[str, Any] = {"data": data.name, "rows": len(y),
                             "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if loaded.signature.task == "regression":
        found["validation"] = regression_quality(y.astype(np.float64),
                                                 np.asarray(out.predictions, np.float64))
        return found
    classes = out.classes or loaded.signature.classes
    proba = None if out.probabilities is None else np.asarray(out.probabilities, np.float64)
    found["validation"] = classification_quality(
        y.tolist(), np.asarray(out.predictions).tolist(), proba,
        list(classes) if classes else None)
    if proba is not None and classes:
        found["calibration"] = {"ece": calibration_error(y.tolist(), proba, list(classes)),
                                "bins": 10}
    return found


def _threshold_checks(metrics: Mapping[str, float], thresholds: Thresholds) -> list[Check]:
    checks = []
    for metric, (kind, bound) in thresholds.bounds().items():
        value = metrics.get(metric)
        if value is None or np.isnan(value):
            checks.append(Check(metric, "fail", f"could not be computed on this data "
                                                f"(needs {kind} {bound})"))
            continue
        ok = value >= bound if kind == "min" else value <= bound
        sign = ">=" if kind == "min" else "<="
        checks.append(Check(metric, "pass" if ok else "fail",
                            f"{value:.4f} {'' if ok else 'not '}{sign} {bound}"))
    return checks


def classification_metrics(
    y: npt.NDArray[Any], pred: npt.NDArray[Any], proba: npt.NDArray[Any] | None,
    classes: list[Any] | None,
) -> dict[str, float]:
    """Accuracy, F1 (binary: of the second class; else macro) and AUC (binary, or macro
    one-vs-rest) — AUC is NaN without probabilities or with one class in ``y``."""
    y, pred = _comparable(y, np.asarray(pred))
    labels = list(classes) if classes else sorted(set(y.tolist()) | set(pred.tolist()))
    keys = _comparable(np.asarray(labels), y)[0].tolist()
    f1s = [_f1(y == k, pred == k) for k in keys]
    metrics = {"accuracy": float(np.mean(y == pred)),
               "f1": f1s[1] if len(keys) == 2 else float(np.mean(f1s)),
               "auc": float("nan")}
    if proba is not None and len(keys) == proba.shape[1]:
        aucs = [_auc(y == k, proba[:, j]) for j, k in enumerate(keys)]
        metrics["auc"] = aucs[1] if len(keys) == 2 else float(np.nanmean(aucs))
    return metrics


def regression_metrics(y: npt.NDArray[np.float64],
                       pred: npt.NDArray[np.float64]) -> dict[str, float]:
    """RMSE, MAE and R² (NaN when ``y`` is constant)."""
    err = pred - y
    total = float(np.sum((y - y.mean()) ** 2))
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err))),
            "r2": 1.0 - float(np.sum(err**2)) / total if total > 0 else float("nan")}


def _comparable(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], ...]:
    """Labels read from a file (ints, strings) and labels a model returns, as one kind."""
    if a.dtype.kind in "iufb" and b.dtype.kind in "iufb":
        return a, b
    return a.astype(str), b.astype(str)


def _f1(truth: npt.NDArray[np.bool_], guess: npt.NDArray[np.bool_]) -> float:
    tp = float(np.sum(truth & guess))
    denominator = float(np.sum(truth) + np.sum(guess))
    return 2 * tp / denominator if denominator else 0.0


def _auc(truth: npt.NDArray[np.bool_], scores: npt.NDArray[Any]) -> float:
    """Mann-Whitney: the probability a random positive outscores a random negative."""
    from scipy.stats import rankdata

    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
