"""The model package: an artifact plus ``modelport.yaml``, the unit every command reads.

::

    heart/
      model.joblib        the artifact as trained
      modelport.yaml      name, version, flavor, library versions, signature, sha256 of each file
      reference.json      optional: reference profile (monitoring)
      golden.json         golden requests and the outputs the model gave at pack time
      model.onnx          optional: converted artifact, used when parity was proven
      model.pt.json       torch models: the input tensors and features (the torch sidecar)

:func:`open_package` verifies every sha256 before anything is unpickled; a tampered package is
refused with :class:`~modelport.errors.IntegrityError`. :func:`pack` records golden rows always
(see :mod:`modelport.golden`) and refuses a model that fails them. :func:`load_model` accepts a
bare model file, a package directory, an MLServer ``model-settings.json`` or an MLflow model
directory (:mod:`modelport.mlflow_model`; :func:`pack` turns one into a package).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelport import golden as _golden
from modelport.errors import ConfigError, IntegrityError, InvalidInput, ModelLoadError
from modelport.mlflow_model import (
    check_requirements,
    golden_rows,
    is_mlflow_dir,
    load_runtime_of,
    read_mlflow_dir,
)
from modelport.runtimes import Example, Runtime, detect_flavor, library_versions, load_runtime
from modelport.runtimes.devices import Placement
from modelport.signature import Feature, Signature

__all__ = [
    "MANIFEST",
    "LoadedModel",
    "Manifest",
    "Package",
    "file_sha256",
    "load_model",
    "open_package",
    "pack",
]

MANIFEST = "modelport.yaml"
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader where PyYAML has it: a manifest parses in about a tenth of the time,
which models loaded on demand (``--max-models``) pay at every load."""
FORMAT_VERSION = 1
_log = logging.getLogger("modelport")


class Manifest(BaseModel):
    """The contents of ``modelport.yaml``."""

    model_config = ConfigDict(extra="allow")

    format: int = FORMAT_VERSION
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    version: str
    flavor: str
    artifact: str
    created: str
    python: str
    libraries: dict[str, str]
    signature: dict[str, Any]
    files: dict[str, str]
    """sha256 (hex) of every file in the package but the manifest."""
    reference: str | None = None
    golden: str | None = None
    onnx: dict[str, Any] | None = None
    """Converted artifact and its parity result: ``{artifact, parity: {passed, ...}}``."""
    compressed: dict[str, Any] | None = None
    """A quantized or pruned copy and its report: ``{artifact, flavor, method, served, ...}``;
    ``served`` when its metric change was within the limit (``runtime="auto"`` serves it)."""
    metrics: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class Package:
    """A verified package directory."""

    root: Path
    manifest: Manifest
    golden_rows: dict[str, Any] | None = None
    """Golden rows held in memory (an MLflow model directory's input example, answered at
    load), in place of a ``golden.json`` file."""

    @property
    def artifact_path(self) -> Path:
        """The model file as trained."""
        return self.root / self.manifest.artifact

    @property
    def signature(self) -> Signature:
        """The recorded signature."""
        return Signature.from_dict(self.manifest.signature)

    @property
    def reference_path(self) -> Path | None:
        """The reference profile, when the package has one."""
        ref = self.manifest.reference
        return None if ref is None else self.root / ref

    def golden(self) -> dict[str, Any] | None:
        """Golden requests and the outputs recorded at pack time."""
        if self.golden_rows is not None:
            return self.golden_rows
        if self.manifest.golden is None:
            return None
        data: dict[str, Any] = json.loads((self.root / self.manifest.golden).read_text())
        return data


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to serve: its name, version, runtime, and the package it came from."""

    name: str
    version: str
    runtime: Runtime
    package: Package | None = None
    source: str = ""
    compressed: bool = False
    """Whether the runtime is the package's compressed copy (INT8/pruned): its answers were
    accepted within a metric drop, so they need not equal the recorded golden outputs."""

    @property
    def signature(self) -> Signature:
        """What the model takes and returns."""
        return self.runtime.signature


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def open_package(root: Path, *, verify: bool = True) -> Package:
    """Read ``root/modelport.yaml`` and check the sha256 of every file it lists."""
    path = root / MANIFEST
    if not path.is_file():
        raise ConfigError(f"'{root}' is not a model package (no {MANIFEST}); "
                          "make one with: modelport pack MODEL --name NAME")
    try:
        manifest = Manifest.model_validate(yaml.load(path.read_text(encoding="utf-8"),
                                                     Loader=_SAFE_LOADER))
    except (yaml.YAMLError, ValidationError) as exc:
        raise ModelLoadError(f"'{path}' is not a valid package manifest: {exc}") from exc
    if verify:
        for name, expected in manifest.files.items():
            file = root / name
            if not file.is_file():
                raise IntegrityError(f"package '{root}' lists '{name}' but the file is missing")
            actual = file_sha256(file)
            if actual != expected:
                raise IntegrityError(
                    f"package '{root}': sha256 of '{name}' is {actual[:12]}…, the manifest "
                    f"records {expected[:12]}…; the file was changed after packing — refusing "
                    "to load it")
    return Package(root, manifest)


def pack(
    model: Path,
    out: Path,
    *,
    name: str,
    version: str = "1.0.0",
    reference: Path | None = None,
    flavor: str | None = None,
    signature: Signature | None = None,
    target: str | None = None,
    example: Example | None = None,
    trusted: Sequence[str] = (),
) -> Package:
    """Write a package for ``model`` into ``out`` (created atomically: all or nothing).

    ``reference`` (CSV or Parquet of training-like data) refines feature types and examples and
    provides golden rows (without it they are generated from the signature); ``target`` names
    its label column, dropped from the features. A model that raises on a golden row or answers
    it with NaN/inf is refused (:class:`~modelport.errors.GoldenCheckFailed`): nothing is
    written. ``example`` describes a torch model's input tensors (kept as its sidecar);
    ``trusted`` names the types of a ``.skops`` file trusted beyond skops' own.
    """
    records: list[dict[str, Any]] = []
    if is_mlflow_dir(model):
        model, flavor, signature, records = _mlflow_artifact(model, flavor, signature, trusted)
    flavor = flavor or detect_flavor(model)
    runtime = load_runtime(model, flavor, signature=signature, example=example, trusted=trusted)
    sig = runtime.signature
    frame = None if reference is None else read_table(reference)
    if frame is not None:
        frame = frame.drop(columns=[c for c in (target,) if c and c in frame.columns])
        sig = refine_signature(sig, frame)
        runtime = load_runtime(model, flavor, signature=sig, example=example, trusted=trusted)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"'{out}' exists and is not empty; choose a new --out")
    what = f"{name}:{version} ({model.name})"
    golden = (_golden.record(runtime, records, what=what) if frame is None and records
              else _golden.for_package(runtime, frame, what=what))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        artifact = "model" + model.suffix.lower()
        shutil.copyfile(model, staging / artifact)
        _write_sidecar(runtime, staging / artifact)
        (staging / "golden.json").write_text(json.dumps(golden), encoding="utf-8")
        extra: dict[str, str | None] = {"golden": "golden.json", "reference": None}
        if frame is not None:
            extra["reference"] = _write_reference(staging, runtime, frame)
        manifest = _manifest(name, version, flavor, artifact, sig=sig, root=staging, extra=extra)
        (staging / MANIFEST).write_text(yaml.safe_dump(manifest.model_dump(exclude_none=True),
                                                       sort_keys=False), encoding="utf-8")
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return open_package(out)


def _write_sidecar(runtime: Runtime, artifact: Path) -> None:
    """A torch model's input tensors and features, beside its artifact."""
    from modelport.runtimes.torch import TorchRuntime, sidecar_path

    if isinstance(runtime, TorchRuntime):
        sidecar_path(artifact).write_text(json.dumps(runtime.sidecar()), encoding="utf-8")


def write_manifest(package: Package, **changes: Any) -> Package:
    """Rewrite a package's manifest with ``changes`` and fresh sha256s (e.g. after adding an
    ONNX artifact or a reference profile), atomically."""
    data = package.manifest.model_dump(exclude_none=True) | changes
    data["files"] = {p.name: file_sha256(p) for p in sorted(package.root.iterdir())
                     if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")}
    tmp = package.root / f".{MANIFEST}.tmp"
    tmp.write_text(yaml.safe_dump(Manifest.model_validate(data).model_dump(exclude_none=True),
                                  sort_keys=False), encoding="utf-8")
    os.replace(tmp, package.root / MANIFEST)
    return open_package(package.root)


def _manifest(name: str, version: str, flavor: str, artifact: str, *, sig: Signature,
              root: Path, extra: dict[str, str | None]) -> Manifest:
    files = {p.name: file_sha256(p) for p in sorted(root.iterdir()) if p.is_file()}
    try:
        return Manifest(
            name=name, version=version, flavor=flavor, artifact=artifact,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            python=platform.python_version(), libraries=library_versions(flavor),
            signature=sig.to_dict(), files=files, **extra,
        )
    except ValidationError as exc:
        raise ConfigError(f"invalid package metadata: {exc.errors()[0]['msg']} "
                          f"({exc.errors()[0]['loc'][0]})") from exc


def _write_reference(root: Path, runtime: Runtime, frame: Any) -> str:
    """The reference profile drift monitoring compares live traffic with."""
    from modelport.monitoring.profile import build_profile

    sig = runtime.signature
    cols = {n: frame[n].to_numpy() for n in sig.names}
    outputs = runtime.predict(sig.from_columns(cols, unseen="pass"))
    profile = build_profile(frame, sig, outputs)
    (root / "reference.json").write_text(profile.to_json(), encoding="utf-8")
    return "reference.json"


def read_table(path: Path) -> Any:
    """A CSV, Parquet or JSON-lines file as a DataFrame."""
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix in (".jsonl", ".ndjson"):
        return pd.read_json(path, lines=True)
    if suffix == ".csv":
        return pd.read_csv(path)
    raise ConfigError(f"cannot read '{path.name}': use .csv, .parquet or .jsonl")


def refine_signature(sig: Signature, frame: Any) -> Signature:
    """Feature types and example values from reference data (categories stay the encoder's)."""
    missing = [n for n in sig.names if n not in frame.columns]
    if missing:
        raise InvalidInput("the reference data lacks a feature the model takes",
                           field=missing[0])
    return sig.with_features([_refined(f, frame[f.name]) for f in sig.features])


def _refined(feat: Feature, col: Any) -> Feature:
    kind = col.dtype.kind
    dtype: Literal["float", "int", "bool", "string"] = feat.dtype
    if kind == "b":
        dtype = "bool"
    elif kind in "iu" and feat.dtype == "float":
        dtype = "int"
    elif kind in "OSUT" or str(col.dtype) in ("str", "string"):
        dtype = "string"
    nonnull = col.dropna()
    example: Any = feat.example
    if len(nonnull):
        example = nonnull.mode().iloc[0] if dtype in ("string", "bool") or feat.categories \
            else nonnull.median()
        example = example.item() if hasattr(example, "item") else example
        if dtype == "int":
            example = round(example)
    nullable = feat.nullable or bool(col.isna().any())
    return Feature(feat.name, dtype, feat.categories, nullable, example)


def load_model(
    target: Path,
    *,
    runtime: Literal["auto", "native", "onnx"] = "auto",
    name: str | None = None,
    placement: Placement | None = None,
    trusted: Sequence[str] = (),
) -> LoadedModel:
    """Load a model file, a package directory or an MLServer ``model-settings.json``, on the
    device ``placement`` allows (default: the CPU); ``trusted``: types of a ``.skops`` file
    the operator trusts beyond skops' own."""
    if is_mlflow_dir(target):
        return load_mlflow(target, name=name, placement=placement, trusted=trusted)
    if target.is_dir():
        return _load_package(open_package(target), runtime, name, placement, trusted)
    if not target.is_file():
        raise ConfigError(f"'{target}' does not exist")
    if target.name == "model-settings.json":
        return _load_mlserver(target, runtime, placement)
    flavor = detect_flavor(target)
    if flavor == "sklearn" or target.suffix.lower() == ".pth":
        _log.warning(
            "loading '%s': pickle/joblib files run code when loaded; load only files you trust. "
            "A verified package (modelport pack) checks sha256s first; ONNX (modelport optimize)"
            " or skops avoid pickles altogether.", target.name)
    rt = load_runtime(target, flavor, placement=placement, trusted=trusted)
    return LoadedModel(name or _model_name(target), "1", rt, None, str(target))


def _load_package(pkg: Package, runtime: str, name: str | None,
                  placement: Placement | None = None, trusted: Sequence[str] = ()
                  ) -> LoadedModel:
    m = pkg.manifest
    small = m.compressed if m.compressed and m.compressed.get("served") else None
    if runtime == "auto" and small is not None:
        rt = load_runtime(pkg.root / small["artifact"], small["flavor"], signature=pkg.signature,
                          placement=placement)
        return LoadedModel(name or m.name, m.version, rt, pkg, str(pkg.root), compressed=True)
    onnx_ok = bool(m.onnx and m.onnx.get("parity", {}).get("passed"))
    if runtime == "onnx" and not m.onnx:
        raise ConfigError(f"package '{m.name}' has no ONNX artifact; run: modelport optimize "
                          f"{pkg.root}")
    use_onnx = m.onnx is not None and (runtime == "onnx" or (runtime == "auto" and onnx_ok))
    if use_onnx:
        assert m.onnx is not None
        rt = load_runtime(pkg.root / m.onnx["artifact"], "onnx", signature=pkg.signature,
                          placement=placement)
    else:
        rt = load_runtime(pkg.artifact_path, m.flavor, signature=pkg.signature,
                          placement=placement, trusted=trusted)
    return LoadedModel(name or m.name, m.version, rt, pkg, str(pkg.root))


def _mlflow_artifact(root: Path, flavor: str | None, signature: Signature | None,
                    trusted: Sequence[str]) -> tuple[Path, str, Signature, list[dict[str, Any]]]:
    """What :func:`pack` takes from an MLflow model directory: its flavor's artifact file,
    flavor and signature (the MLmodel file's), and its input example as records."""
    mm = read_mlflow_dir(root)
    if mm.flavor == "pyfunc":
        raise ConfigError(f"'{root}' is an MLflow python_function model: pack takes the "
                          "sklearn, xgboost, lightgbm and onnx flavors; serve the directory "
                          f"as it is instead: modelport serve {root}")
    check_requirements(mm)
    rt = load_runtime_of(mm, trusted=trusted)
    sig = signature or rt.signature
    return mm.artifact, flavor or mm.flavor, sig, mm.example_records(sig)


def load_mlflow(root: Path, *, name: str | None = None, version: str = "1",
                placement: Placement | None = None, trusted: Sequence[str] = ()) -> LoadedModel:
    """Serve an MLflow model directory as it is (see :mod:`modelport.mlflow_model`): its
    flavor's artifact loaded by modelport's runtime, the MLmodel signature, and its input
    example as golden rows (answered now; refused when the model raises or answers NaN/inf on
    them). Library versions that differ from its requirements are warned about."""
    mm = read_mlflow_dir(root)
    check_requirements(mm)
    if mm.flavor == "sklearn":
        _log.warning("loading '%s': its %s is a pickle, which runs code when loaded; load only "
                     "models you trust (mlflow.sklearn.save_model(..., serialization_format="
                     "'skops') writes one that holds no code)", root, mm.artifact.name)
    rt = load_runtime_of(mm, placement=placement, trusted=trusted)
    name = name or _mlflow_name(root)
    golden = golden_rows(rt, mm, what=f"{name}:{version} ({root})")
    artifact = "." if mm.artifact == root else str(mm.artifact.relative_to(root))
    manifest = Manifest.model_construct(
        format=FORMAT_VERSION, name=name, version=version, flavor=rt.flavor, artifact=artifact,
        created=mm.created, python=mm.python or "", libraries=dict(mm.requirements),
        signature=rt.signature.to_dict(), files={}, reference=None, golden=None, onnx=None,
        compressed=None, metrics={}, mlflow={"flavor": mm.mlflow_flavor,
                                             "mlflow_version": mm.mlflow_version})
    return LoadedModel(name, version, rt, Package(root, manifest, golden), str(root))


def _mlflow_name(root: Path) -> str:
    """A served name for an MLflow directory: its folder's, past the generic ``model`` and
    ``artifacts`` of ``mlruns/…/artifacts/model``."""
    for part in (root.resolve(), *root.resolve().parents):
        if part.name and part.name not in ("model", "artifacts"):
            return _model_name(Path(part.name + ".mlflow"))
    return "model"


_MLSERVER_FLAVORS = {
    "mlserver_sklearn.SKLearnModel": "sklearn",
    "mlserver_xgboost.XGBoostModel": "xgboost",
    "mlserver_lightgbm.LightGBMModel": "lightgbm",
    "mlserver_onnx.OnnxModel": "onnx",
}


def _load_mlserver(path: Path, runtime: str, placement: Placement | None) -> LoadedModel:
    """Serve what an MLServer ``model-settings.json`` describes (migration path)."""
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"'{path}' is not valid JSON: {exc}") from exc
    params = settings.get("parameters") or {}
    uri = params.get("uri")
    name = settings.get("name") or path.parent.name
    artifact = path.parent / uri if uri else _only_artifact(path.parent)
    if artifact.is_dir():
        return _load_package(open_package(artifact), runtime, name, placement)
    impl = settings.get("implementation", "")
    flavor = _MLSERVER_FLAVORS.get(impl) or detect_flavor(artifact)
    rt = load_runtime(artifact, flavor, placement=placement)
    return LoadedModel(name, str(params.get("version") or "1"), rt, None, str(path))


def _only_artifact(folder: Path) -> Path:
    found = [p for p in folder.iterdir() if p.suffix in (".joblib", ".pkl", ".onnx", ".ubj",
                                                          ".json", ".txt", ".bst")
             and p.name != "model-settings.json"]
    if len(found) != 1:
        raise ConfigError(f"model-settings.json in '{folder}' has no parameters.uri and the "
                          "folder does not hold exactly one model file")
    return found[0]


def _model_name(path: Path) -> str:
    stem = path.stem if path.stem != "model" else path.parent.name or "model"
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in stem).strip("-.")
    return cleaned or "model"
