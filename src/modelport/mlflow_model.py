"""MLflow model directories (an ``MLmodel`` file beside the artifacts), read without mlflow.

``mlflow.<flavor>.save_model`` and ``log_model`` write a directory::

    model/
      MLmodel                  YAML: flavors, signature, input example, versions
      model.pkl | model.skops  scikit-learn (cloudpickle/pickle, or skops)
      model.ubj | model.xgb    XGBoost (``flavors.xgboost.data``)
      model.lgb | model.skops  LightGBM (a Booster, or its scikit-learn API)
      model.onnx               ONNX
      input_example.json       optional: an example request (pandas ``split`` orient)
      requirements.txt         the pip requirements it was saved with (conda.yaml too)

The ``sklearn``, ``xgboost``, ``lightgbm`` and ``onnx`` flavors are read here and loaded by
modelport's own runtimes, so serving them needs no mlflow (nor its dependencies) in the server
process. A directory with only ``python_function`` (custom pyfunc models) is loaded by mlflow
itself (:mod:`modelport.runtimes.pyfunc`): that needs ``pip install 'modelport[mlflow]'``.

What the MLmodel file says is used as is:

- the signature's named columns (``colspec``) give the feature names and types (``long`` and
  ``integer`` are integers, ``double`` and ``float`` numbers, ``boolean``, ``string``); the
  artifact still gives the classes, probabilities and categories, and the feature order the
  model was fitted in. Without a signature (or with a tensor signature) the artifact's own is
  used, as for a bare model file; a pyfunc model's is inferred from its input example;
- the input example becomes the model's golden rows (answered at load: a model that raises or
  answers NaN/inf on them is refused) and gives each feature its example value;
- ``requirements.txt`` (else ``conda.yaml``'s pip list) pins are compared with the libraries
  installed here: each mismatch is one warning naming the library and both versions.
"""

from __future__ import annotations

import json
import logging
import platform
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

from modelport import golden as _golden
from modelport.errors import ConfigError, ModelLoadError
from modelport.runtimes import Runtime, load_runtime
from modelport.runtimes.devices import Placement
from modelport.signature import Feature, FeatureType, Signature

__all__ = ["MLMODEL", "NATIVE_FLAVORS", "MlflowModel", "check_requirements", "golden_rows",
           "is_mlflow_dir", "load_runtime_of", "merged_signature", "read_mlflow_dir"]

MLMODEL = "MLmodel"
NATIVE_FLAVORS = ("sklearn", "xgboost", "lightgbm", "onnx")
"""MLflow flavors loaded by modelport's runtimes (no mlflow needed), in order of preference."""
_PYFUNC = "python_function"
_TYPES: dict[str, FeatureType] = {"double": "float", "float": "float", "long": "int",
                                  "integer": "int", "boolean": "bool", "string": "string"}
_NOT_COMPARED = frozenset({"mlflow", "mlflow-skinny", "mlflow-tracing", "pip", "python"})
"""Pins not compared: mlflow itself is not needed to serve a native flavor."""
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;#]+)")
_log = logging.getLogger("modelport")


@dataclass(frozen=True)
class MlflowModel:
    """What an MLflow model directory holds, as read from its ``MLmodel`` file."""

    root: Path
    mlflow_flavor: str
    """The MLmodel flavor that is loaded (``sklearn`` … or ``python_function``)."""
    flavor: str
    """The modelport runtime that loads it (``sklearn``, ``skops``, ``xgboost``,
    ``lightgbm``, ``onnx`` or ``pyfunc``)."""
    artifact: Path
    """The artifact file (a pyfunc model: the directory)."""
    inputs: tuple[Feature, ...] | None
    """The signature's named columns, when it has them."""
    example: tuple[dict[str, Any], ...] | tuple[list[Any], ...] = ()
    """The input example: records, or ordered rows (a tensor example)."""
    created: str = ""
    python: str | None = None
    mlflow_version: str | None = None
    requirements: tuple[tuple[str, str], ...] = ()
    """``(distribution, version)`` pins it was saved with."""

    def example_records(self, sig: Signature) -> list[dict[str, Any]]:
        """The input example as records keyed by ``sig``'s feature names."""
        out: list[dict[str, Any]] = []
        for row in self.example:
            if isinstance(row, dict):
                out.append(dict(row))
            elif len(row) == len(sig.names):
                out.append(dict(zip(sig.names, row, strict=True)))
        return out


def is_mlflow_dir(path: Path) -> bool:
    """Whether ``path`` is an MLflow model directory."""
    return path.is_dir() and (path / MLMODEL).is_file()


def read_mlflow_dir(root: Path) -> MlflowModel:
    """Read ``root/MLmodel``: the flavor to load, its artifact, signature, example, pins."""
    spec = _mlmodel(root)
    flavors = spec.get("flavors")
    if not isinstance(flavors, Mapping) or not flavors:
        raise ModelLoadError(f"'{root / MLMODEL}' lists no flavors")
    chosen = next((f for f in NATIVE_FLAVORS if isinstance(flavors.get(f), Mapping)), None)
    if chosen is None and _PYFUNC not in flavors:
        raise ModelLoadError(
            f"the MLflow model '{root}' has flavors {', '.join(sorted(flavors))}; modelport "
            f"serves {', '.join(NATIVE_FLAVORS)} natively and {_PYFUNC} through mlflow")
    if chosen is None:
        flavor, artifact, mlflow_flavor = "pyfunc", root, _PYFUNC
    else:
        flavor, artifact = _native(root, chosen, flavors[chosen])
        mlflow_flavor = chosen
    found = flavors.get(_PYFUNC)
    pyfunc: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    return MlflowModel(
        root=root, mlflow_flavor=mlflow_flavor, flavor=flavor, artifact=artifact,
        inputs=_colspec(spec.get("signature")), example=_example(root, spec),
        created=str(spec.get("utc_time_created") or ""),
        python=None if not pyfunc.get("python_version") else str(pyfunc["python_version"]),
        mlflow_version=None if spec.get("mlflow_version") is None
        else str(spec["mlflow_version"]),
        requirements=_requirements(root))


def _mlmodel(root: Path) -> dict[str, Any]:
    path = root / MLMODEL
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ModelLoadError(f"'{path}' is not a readable MLmodel file: {exc}") from exc
    if not isinstance(spec, dict):
        raise ModelLoadError(f"'{path}' is not an MLmodel file (not a YAML mapping)")
    return spec


def _native(root: Path, name: str, conf: Mapping[str, Any]) -> tuple[str, Path]:
    """The runtime flavor and artifact file of a natively loaded MLflow flavor."""
    rel = conf.get("pickled_model") if name == "sklearn" else conf.get("data")
    if not rel:
        raise ModelLoadError(f"'{root / MLMODEL}': the {name} flavor names no artifact file")
    artifact = root / str(rel)
    if not artifact.is_file():
        raise ModelLoadError(f"'{root / MLMODEL}': the {name} flavor's artifact "
                             f"'{rel}' is missing")
    fmt = str(conf.get("serialization_format") or "")
    if name == "sklearn":
        return ("skops" if fmt == "skops" else "sklearn"), artifact
    if name == "lightgbm" and not str(conf.get("model_class", "")).endswith("Booster"):
        # the scikit-learn API (LGBMClassifier, ...): saved as an estimator, not a booster
        return ("skops" if artifact.suffix == ".skops" else "sklearn"), artifact
    return name, artifact


def _colspec(signature: Any) -> tuple[Feature, ...] | None:
    """Named columns of the MLmodel signature's inputs (None: none, or a tensor spec)."""
    if not isinstance(signature, Mapping) or not signature.get("inputs"):
        return None
    raw = signature["inputs"]
    try:
        cols = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"the MLmodel signature's inputs are not JSON: {exc}") from exc
    if not isinstance(cols, list) or not cols or not all(
            isinstance(c, Mapping) and c.get("name") is not None and c.get("type") != "tensor"
            for c in cols):
        return None
    out = []
    for col in cols:
        dtype = _TYPES.get(str(col.get("type")))
        if dtype is None:
            raise ModelLoadError(
                f"the MLmodel signature's column '{col['name']}' has type '{col.get('type')}'; "
                f"modelport serves columns of type {', '.join(sorted(_TYPES))}")
        out.append(Feature(str(col["name"]), dtype))
    return tuple(out)


def _example(root: Path, spec: Mapping[str, Any]) -> tuple[Any, ...]:
    """The input example as records (a DataFrame example) or rows (an array example)."""
    info = spec.get("saved_input_example_info")
    if not isinstance(info, Mapping) or not info.get("artifact_path"):
        return ()
    path = root / str(info["artifact_path"])
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        _log.warning("MLflow model '%s': its input example '%s' cannot be read (%s); golden "
                     "rows are made from the signature instead", root, path.name, exc)
        return ()
    if isinstance(data, Mapping) and "inputs" in data:
        data = data["inputs"]
    if isinstance(data, Mapping) and isinstance(data.get("data"), list):
        columns = data.get("columns")
        rows = data["data"]
        if isinstance(columns, list):
            return tuple(dict(zip(map(str, columns), r, strict=False)) for r in rows
                         if isinstance(r, list))
        return tuple(list(r) for r in rows if isinstance(r, list))
    if isinstance(data, list):
        if all(isinstance(r, Mapping) for r in data):
            return tuple(dict(r) for r in data)
        if all(isinstance(r, list) for r in data):
            return tuple(list(r) for r in data)
    return ()


def _requirements(root: Path) -> tuple[tuple[str, str], ...]:
    """``name==version`` pins of ``requirements.txt``, else of ``conda.yaml``'s pip list."""
    lines: list[str] = []
    req = root / "requirements.txt"
    conda = root / "conda.yaml"
    if req.is_file():
        lines = req.read_text(encoding="utf-8").splitlines()
    elif conda.is_file():
        try:
            env = yaml.safe_load(conda.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            env = {}
        for dep in env.get("dependencies", []) if isinstance(env, dict) else []:
            if isinstance(dep, dict) and isinstance(dep.get("pip"), list):
                lines += [str(p) for p in dep["pip"]]
    pins = []
    for line in lines:
        found = _PIN.match(line)
        if found:
            pins.append((found.group(1), found.group(2)))
    return tuple(pins)


def check_requirements(model: MlflowModel) -> list[str]:
    """One warning per pinned library whose installed version differs (and one for those not
    installed, and for another Python minor version), logged and returned."""
    found: list[str] = []
    missing: list[str] = []
    for dist, pinned in model.requirements:
        if _canonical(dist) in _NOT_COMPARED:
            continue
        try:
            installed = version(dist)
        except PackageNotFoundError:
            missing.append(f"{dist}=={pinned}")
            continue
        if _release(installed) != _release(pinned):
            found.append(f"MLflow model '{model.root}' was saved with {dist}=={pinned}; "
                         f"{dist} {installed} is installed here")
    if missing:
        found.append(f"MLflow model '{model.root}' was saved with {', '.join(missing)}, not "
                     "installed here")
    if model.python and model.python.split(".")[:2] != platform.python_version().split(".")[:2]:
        found.append(f"MLflow model '{model.root}' was saved with Python {model.python}; this "
                     f"is Python {platform.python_version()}")
    for warning in found:
        _log.warning("%s", warning)
    return found


def _canonical(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def _release(text: str) -> str:
    """A version without its local label (``2.13.0+cpu`` is ``2.13.0``)."""
    return text.split("+", 1)[0].strip()


def load_runtime_of(model: MlflowModel, *, placement: Placement | None = None,
                    trusted: Sequence[str] = ()) -> Runtime:
    """The runtime of ``model``'s flavor, with the MLmodel signature's feature names and
    types (see the module doc)."""
    if model.flavor == "pyfunc":
        return load_runtime(model.root, "pyfunc", signature=_pyfunc_signature(model))
    runtime = load_runtime(model.artifact, model.flavor, placement=placement, trusted=trusted)
    sig = merged_signature(runtime.signature, model)
    if sig == runtime.signature:
        return runtime
    return load_runtime(model.artifact, model.flavor, signature=sig, placement=placement,
                        trusted=trusted)


def merged_signature(inferred: Signature, model: MlflowModel) -> Signature:
    """The artifact's signature with the MLmodel signature's names and types, and the input
    example's first row as each feature's example value."""
    declared = model.inputs
    feats = list(inferred.features)
    if declared is not None:
        by_name = {f.name: f for f in declared}
        if set(by_name) == inferred.name_set:
            feats = [_retyped(f, by_name[f.name].dtype) for f in feats]
        elif inferred.input_kind == "array" and len(declared) == len(feats):
            # fitted on a bare matrix, logged with a DataFrame's columns: names in that order
            feats = [replace(_retyped(f, d.dtype), name=d.name) for f, d in
                     zip(feats, declared, strict=True)]
        else:
            raise ConfigError(
                f"the MLflow model '{model.root}': its signature's columns "
                f"({', '.join(by_name)}) are not the features its {model.mlflow_flavor} "
                f"artifact takes ({', '.join(inferred.names)})")
    sig = inferred.with_features(feats)
    first = next(iter(model.example_records(sig)), None)
    if first is not None:
        sig = sig.with_features([_with_example(f, first.get(f.name)) for f in sig.features])
    return sig


def _retyped(feat: Feature, dtype: FeatureType) -> Feature:
    """``feat`` with the type the MLmodel signature gives it (its example dropped when it
    was of the other type)."""
    if dtype == feat.dtype:
        return feat
    return replace(feat, dtype=dtype, example=None)


def _with_example(feat: Feature, value: Any) -> Feature:
    ok = {"float": (int, float), "int": (int,), "bool": (bool,), "string": (str,)}[feat.dtype]
    if value is None or not isinstance(value, ok) or (
            feat.dtype != "bool" and isinstance(value, bool)):
        return feat
    if feat.categories is not None and value not in feat.categories:
        return feat
    return replace(feat, example=value)


def _pyfunc_signature(model: MlflowModel) -> Signature:
    """A pyfunc model's signature: its MLmodel columns, else its input example's."""
    features = model.inputs
    if features is None:
        records = [r for r in model.example if isinstance(r, dict)]
        if not records:
            raise ConfigError(
                f"the MLflow model '{model.root}' is a {_PYFUNC} model without a column "
                "signature or input example: modelport cannot tell what it takes; log it with "
                "a signature (mlflow.models.infer_signature) or an input_example")
        features = tuple(Feature(str(k), _value_type(v)) for k, v in records[0].items())
    sig = Signature(features=features, input_kind="dataframe")
    first = next(iter(model.example_records(sig)), None)
    if first is not None:
        sig = sig.with_features([_with_example(f, first.get(f.name)) for f in sig.features])
    return sig


def _value_type(value: Any) -> FeatureType:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "string"


def golden_rows(runtime: Runtime, model: MlflowModel, *, what: str) -> dict[str, Any] | None:
    """The input example as golden rows with what ``runtime`` answers for them (None: no
    example); :class:`~modelport.errors.GoldenCheckFailed` when it raises or answers NaN/inf."""
    records = model.example_records(runtime.signature)
    if not records:
        return None
    return _golden.record(runtime, records, what=what)
