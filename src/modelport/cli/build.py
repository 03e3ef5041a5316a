"""``modelport build`` (a deployable bundle) and ``modelport validate`` (the gate).

``deploy`` renders text; this module is the part that touches the world: it measures the
model's memory in a fresh process, builds the modelport wheel, copies the package, and writes
the bundle atomically (a staging directory renamed into place).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["register"]


def build(
    package: Annotated[Path, typer.Argument(help="The model package directory.",
                                            show_default=False)],
    out: Annotated[Path, typer.Option(help="Bundle directory to write.")] = Path("deploy"),
    image: Annotated[str, typer.Option(help="Image repository, no tag "
                                       "(default: the model's name).")] = "",
    base_image: Annotated[str, typer.Option(help="Base image (default: python:<the "
                                            "model's Python minor>-slim).")] = "",
    python: Annotated[str, typer.Option(help="Python minor version of the base "
                                        "image, e.g. 3.12.")] = "",
    port: Annotated[int, typer.Option(help="Port inside the container.")] = 8000,
    target: Annotated[list[str] | None, typer.Option(
        help="kubernetes, knative, azure-containerapps, cloud-run (repeat it).")] = None,
    replicas: Annotated[int, typer.Option(
        help="Replicas: of the compose fleet behind nginx, of the Kubernetes Deployment (and "
             "HPA minimum).")] = 2,
    max_replicas: Annotated[int, typer.Option(help="HPA maximum.")] = 10,
    canary_weight: Annotated[int, typer.Option(help="Percent of traffic for the canary.")] = 10,
    active: Annotated[str, typer.Option(help="Slot the blue-green Service selects.")] = "blue",
    model_url: Annotated[bool, typer.Option(help="Download the model at image build time "
                                            "(build ARGs MODEL_URL, MODEL_SHA256) instead of "
                                            "copying it.")] = False,
    model_sha256: Annotated[str, typer.Option(help="Default MODEL_SHA256.")] = "",
    wheel: Annotated[Path | None, typer.Option(help="A modelport wheel to ship (default: "
                                                  "built from the source tree).")] = None,
    validate_data: Annotated[Path | None, typer.Option(
        help="Labelled test data the CI gate scores (copied into the bundle).")] = None,
    validate_target: Annotated[str, typer.Option(help="Label column of --validate-data.")] = "",
    gate: Annotated[list[str] | None, typer.Option(
        help="A threshold for the CI gate, e.g. min-accuracy=0.85 (repeat it).")] = None,
    measure: Annotated[bool, typer.Option(help="Size resources from the model's measured "
                                          "memory.")] = True,
    force: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
    gpu: Annotated[bool, typer.Option(help="An image for NVIDIA GPUs: CUDA runtime base image, "
                                      "onnxruntime-gpu, MODELPORT_DEVICE=cuda.")] = False,
) -> None:
    """Write a deployable bundle: Dockerfile, Kubernetes, compose, CI workflow, README."""
    from modelport.deploy import BuildOptions
    from modelport.errors import ConfigError
    from modelport.package import open_package

    pkg = open_package(package)
    if active not in ("blue", "green"):
        raise ConfigError(f"--active: '{active}' is not blue or green")
    if out.exists() and any(out.iterdir()) and not force:
        raise ConfigError(f"--out: '{out}' exists and is not empty; pass --force to replace it")
    options = BuildOptions(
        image=image, base_image=base_image, python=python, port=port,
        targets=tuple(target or ["kubernetes"]),  # type: ignore[arg-type]  # checked by options
        replicas=replicas, max_replicas=max_replicas, canary_weight=canary_weight,
        active_slot=active,  # type: ignore[arg-type]  # checked above
        model_url=model_url, model_sha256=model_sha256, ci_workdir=_workdir(out),
        validate_args=_gate_args(validate_data, validate_target, gate or []), gpu=gpu)
    resources = _resources(pkg.root) if measure else _resources(None)
    staging = _staging(out)
    try:
        _fill(staging, pkg, options, resources, wheel=wheel, data=validate_data)
        _swap(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    typer.echo(f"wrote {out}/ for {pkg.manifest.name}:{pkg.manifest.version}: requests "
               f"{resources.memory_request}, limits {resources.memory_limit}; next: "
               f"docker build -t {options.image_name(pkg.manifest.name)}:"
               f"{pkg.manifest.version} {out}  (or the fleet of {options.replicas} behind "
               f"nginx: cd {out} && docker compose up --build)")


def _fill(staging: Path, pkg: Any, options: Any, resources: Any, *, wheel: Path | None,
          data: Path | None) -> None:
    from modelport import __version__
    from modelport.deploy import MODEL_DIR, render_bundle

    wheel_name = _ship_wheel(staging / "wheels", wheel)
    options = replace(options, wheel=wheel_name)
    bundle = render_bundle(pkg, options, resources, modelport_version=__version__)
    for rel, text in bundle.files.items():
        path = staging / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if not options.model_url:
        shutil.copytree(pkg.root, staging / MODEL_DIR,
                        ignore=shutil.ignore_patterns(".*", "__pycache__"))
        (staging / MODEL_DIR).chmod(0o755)
    if data is not None:
        (staging / "data").mkdir(exist_ok=True)
        shutil.copyfile(data, staging / "data" / data.name)


def _gate_args(data: Path | None, target: str, gate: list[str]) -> tuple[str, ...]:
    from modelport.errors import ConfigError

    args: list[str] = []
    if data is not None:
        if not data.is_file():
            raise ConfigError(f"--validate-data: '{data}' is not a file")
        if not target:
            raise ConfigError("--validate-target: name the label column of --validate-data")
        args += ["--data", f"data/{data.name}", "--target", target]
    for item in gate:
        name, _, value = item.partition("=")
        if name not in _GATES or not _is_number(value):
            raise ConfigError(f"--gate: '{item}' is not one of {', '.join(_GATES)}=NUMBER")
        args += [f"--{name}", value]
    if gate and data is None:
        raise ConfigError("--gate needs --validate-data to score")
    return tuple(args)


_GATES = ("min-accuracy", "min-auc", "min-f1", "max-rmse", "max-mae", "min-r2")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _workdir(out: Path) -> str:
    if out.is_absolute() or ".." in out.parts:
        return "."
    return out.as_posix()


def _resources(root: Path | None) -> Any:
    """Requests/limits from a fresh process that loads the model (peak RSS)."""
    from modelport.deploy import MemoryProfile, resources_for
    from modelport.errors import ModelLoadError

    if root is None:
        return resources_for(None)
    proc = subprocess.run([sys.executable, "-m", "modelport.deploy.sizing", str(root)],
                          capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise ModelLoadError(f"measuring the model's memory failed: {proc.stderr[-800:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return resources_for(MemoryProfile(int(data["baseline_bytes"]), int(data["loaded_bytes"])))


def _ship_wheel(dest: Path, wheel: Path | None) -> str:
    """Copy ``wheel`` or build one from the source tree into ``dest``; ``""`` when modelport is
    installed without its source (the image then installs it by version pin)."""
    from modelport.errors import ConfigError

    if wheel is not None:
        if not wheel.is_file() or wheel.suffix != ".whl":
            raise ConfigError(f"--wheel: '{wheel}' is not a wheel file")
        dest.mkdir(parents=True)
        shutil.copyfile(wheel, dest / wheel.name)
        return wheel.name
    source = project_root()
    if source is None:
        return ""
    dest.mkdir(parents=True)
    return build_wheel(source, dest).name


def project_root() -> Path | None:
    """The source tree modelport runs from (an editable install), if any."""
    import modelport

    root = Path(modelport.__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "modelport"' in pyproject.read_text(encoding="utf-8"):
        return root
    return None


def build_wheel(source: Path, dest: Path) -> Path:
    """``pip wheel --no-deps`` of a clean copy of ``source`` (no build files left in it)."""
    from modelport.errors import ConfigError

    with tempfile.TemporaryDirectory(prefix="modelport-wheel-") as tmp:
        copy = Path(tmp) / "src-tree"
        shutil.copytree(source / "src", copy / "src", ignore=shutil.ignore_patterns(
            "__pycache__", "*.egg-info", "*.pyc"))
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (source / name).is_file():
                shutil.copyfile(source / name, copy / name)
        if not (copy / "README.md").exists():
            (copy / "README.md").write_text("modelport\n", encoding="utf-8")
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                               "-w", str(dest), str(copy)],
                              capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            raise ConfigError(f"building the modelport wheel failed: {proc.stderr[-800:]}")
    return next(dest.glob("modelport-*.whl"))


def _staging(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be shared
    return staging


def _swap(staging: Path, out: Path) -> None:
    """Move ``staging`` to ``out``; an old ``out`` is moved aside first and removed after."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}-old-", dir=out.parent))
        os.replace(out, old / "bundle")
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def validate(
    package: Annotated[Path, typer.Argument(help="The model package directory.",
                                            show_default=False)],
    data: Annotated[Path | None, typer.Option(help="Labelled test data "
                                                 "(CSV/Parquet/JSONL).")] = None,
    target: Annotated[str, typer.Option(help="Label column of --data.")] = "",
    min_accuracy: Annotated[float | None, typer.Option(help="Classification.")] = None,
    min_auc: Annotated[float | None, typer.Option(help="Classification.")] = None,
    min_f1: Annotated[float | None, typer.Option(help="Classification.")] = None,
    max_rmse: Annotated[float | None, typer.Option(help="Regression.")] = None,
    max_mae: Annotated[float | None, typer.Option(help="Regression.")] = None,
    min_r2: Annotated[float | None, typer.Option(help="Regression.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    record: Annotated[bool, typer.Option(
        "--record", help="With --data: when the package passes, record its metrics and "
        "calibration error in modelport.yaml (the baseline of the live quality alert and "
        "of CBPE estimates).")] = False,
) -> None:
    """Gate a package: sha256s, library versions, signature round trip, golden predictions,
    metrics against thresholds. Exits 1 when a check fails."""
    from modelport.tools.validate import Thresholds, validate_package

    report = validate_package(package, data=data, target=target or None, thresholds=Thresholds(
        min_accuracy, min_auc, min_f1, max_rmse, max_mae, min_r2), record=record)
    if as_json:
        typer.echo(json.dumps({"package": report.package, "passed": report.passed,
                               "checks": [c.__dict__ for c in report.checks],
                               "metrics": dict(report.metrics)}, indent=2))
    else:
        _print_report(report)
    if not report.passed:
        # SystemExit, not typer.Exit: main() runs click with standalone_mode=False, where
        # click turns typer.Exit into a return value and the exit code would be lost
        raise SystemExit(1)


def _print_report(report: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    colors = {"pass": "green", "warn": "yellow", "fail": "red"}
    table = Table(title=f"modelport validate {report.package}")
    for col in ("check", "status", "detail"):
        table.add_column(col)
    for c in report.checks:
        table.add_row(c.name, f"[{colors[c.status]}]{c.status}[/]", c.detail)
    for name, value in report.metrics.items():
        table.add_row(f"metric {name}", "", f"{value:.4f}")
    console = Console()
    console.print(table)
    verdict = "[green]PASSED[/]" if report.passed else "[red]FAILED[/]"
    console.print(verdict)


def register(app: typer.Typer) -> None:
    """Add ``build`` and ``validate``."""
    app.command()(build)
    app.command()(validate)
