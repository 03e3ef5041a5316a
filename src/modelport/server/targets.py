"""What ``modelport serve`` was asked to serve, as model entries: model directories and config
files opened up, and -- with a memory budget -- each entry registered without being loaded.

A **model directory** is a folder that is not itself a model (no ``modelport.yaml``, no
``MLmodel``, no ``model-settings.json``) and holds models: package directories, MLflow or
MLServer model folders, and model files with an unambiguous suffix (``.joblib``, ``.onnx``,
``.skops``, ... -- not ``.json``/``.txt``, which are as often notes as models). Each becomes one
served model, named by its package (or its file's stem), in name order.

With a budget (:class:`~modelport.server.pool.Budget`) every entry becomes a
:class:`~modelport.server.pool.LazyModel`. A package registers from its manifest alone -- its
recorded signature, name, version and flavor; its sha256s are checked now and again at each
load -- so nothing is unpickled at start. A bare model file, an MLflow or MLServer folder says
what it takes only once loaded: it is loaded once at start to read its signature, then
released (pack it to skip that).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from modelport.config import Settings
from modelport.errors import ConfigError
from modelport.package import MANIFEST, Package, load_model, open_package
from modelport.runtimes.devices import placement_of
from modelport.server.pool import Budget, LazyModel, ModelPool, artifact_bytes
from modelport.server.state import AppState

__all__ = ["config_entries", "lazy_models", "model_directory", "pool_extension"]

_log = logging.getLogger("modelport")
_MODEL_SUFFIXES = frozenset({".joblib", ".pkl", ".pickle", ".onnx", ".ubj", ".xgb", ".lgb",
                             ".pt", ".pt2", ".pth", ".skops"})
_MODEL_MARKERS = (MANIFEST, "MLmodel", "model-settings.json")


def model_directory(path: Path) -> list[Path] | None:
    """The models in ``path`` when it is a model directory (see the module doc), else None."""
    if not path.is_dir() or any((path / m).exists() for m in _MODEL_MARKERS):
        return None
    found = []
    for child in sorted(path.iterdir()):
        if child.name.startswith("."):
            continue
        is_model = (any((child / m).is_file() for m in _MODEL_MARKERS) if child.is_dir()
                    else child.suffix.lower() in _MODEL_SUFFIXES)
        if is_model:
            found.append(child)
    return found or None


def config_entries(path: Path) -> list[tuple[Path, str | None]]:
    """``models: [{name: heart, path: heart/}, ...]`` of a config file; paths relative to it."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    entries = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"'{path}' needs a 'models' list of {{name, path}} entries")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "path" not in entry:
            raise ConfigError(f"'{path}': models[{i}] needs a 'path'")
        name = entry.get("name")
        out.append((path.parent / str(entry["path"]), None if name is None else str(name)))
    return out


def lazy_models(targets: list[str], settings: Settings) -> list[LazyModel]:
    """Every model ``targets`` name (files, packages, model directories, config files), each
    registered without being loaded."""
    entries: list[tuple[Path, str | None]] = []
    for target in targets:
        path = Path(target)
        if path.suffix in (".yaml", ".yml") and path.is_file():
            entries += config_entries(path)
        elif (inside := model_directory(path)) is not None:
            entries += [(p, None) for p in inside]
        else:
            entries.append((path, None))
    return [_lazy(path, name, settings) for path, name in entries]


def _loader(path: Path, name: str | None, settings: Settings) -> Any:
    return functools.partial(load_model, path, runtime=settings.runtime, name=name,
                             placement=placement_of(settings),
                             trusted=tuple(settings.trust_types))


def _lazy(path: Path, name: str | None, settings: Settings) -> LazyModel:
    if path.is_dir() and (path / MANIFEST).is_file():
        pkg = open_package(path)
        m = pkg.manifest
        name = name or m.name
        flavor, artifact = _served_artifact(pkg, settings.runtime)
        if flavor == "skops":  # refused now, at start, as an eager load would be
            _check_trusted(pkg.root / artifact, settings.trust_types)
        return LazyModel(name, m.version, flavor, pkg.signature,
                         _loader(path, name, settings), artifact_bytes(pkg.root / artifact),
                         pkg, str(path))
    probe = load_model(path, runtime=settings.runtime, name=name,
                       trusted=tuple(settings.trust_types))
    lazy = LazyModel(probe.name, probe.version, probe.runtime.flavor, probe.signature,
                     _loader(path, probe.name, settings), artifact_bytes(path), probe.package,
                     str(path))
    _log.info("registered %s:%s (loaded once to read its signature; a package registers "
              "without loading)", lazy.name, lazy.version)
    return lazy  # the probe is released here: the model loads again on its first request


def _check_trusted(path: Path, trusted: list[str]) -> None:
    """A ``.skops`` file's types, checked against the trusted ones without loading it."""
    from modelport.runtimes.skops import UntrustedTypes, untrusted_types

    refused = [t for t in untrusted_types(path) if t not in set(trusted)]
    if refused:
        raise UntrustedTypes(path, refused)


def _served_artifact(pkg: Package, runtime: str) -> tuple[str, str]:
    """The flavor and file a package is served from with ``runtime`` (as ``load_model``
    picks them: a served compressed copy, ONNX when parity passed, else the artifact)."""
    m = pkg.manifest
    small = m.compressed if m.compressed and m.compressed.get("served") else None
    if runtime == "auto" and small is not None:
        return str(small["flavor"]), str(small["artifact"])
    onnx_ok = bool(m.onnx and m.onnx.get("parity", {}).get("passed"))
    if m.onnx is not None and (runtime == "onnx" or (runtime == "auto" and onnx_ok)):
        return "onnx", str(m.onnx["artifact"])
    return m.flavor, m.artifact


def pool_extension(budget: Budget, lazy: list[LazyModel]) -> Callable[[Any, AppState], ModelPool]:
    """An app extension that registers ``lazy`` with a :class:`ModelPool` of ``budget`` (run
    before the others: monitoring subscribes to the pool's loads and unloads)."""
    def extend(_app: Any, state: AppState) -> ModelPool:
        pool = ModelPool(state.repo, budget)
        for model in lazy:
            pool.register(model)
        state.repo.pool = pool
        state.closers.append(pool.aclose)
        _log.info("registered %d models without loading them; they load on demand within %s",
                  len(lazy), budget.describe())
        return pool
    return extend
