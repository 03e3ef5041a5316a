"""Build a ready-to-run app from :class:`~modelport.config.Settings`: resolve every target
(model file, package, model-settings.json, config file), load, plug monitoring in."""

from __future__ import annotations

import logging
from pathlib import Path

import yaml
from fastapi import FastAPI

from modelport.config import Settings
from modelport.errors import ConfigError
from modelport.package import LoadedModel, load_model
from modelport.server.app import create_app

__all__ = ["app_from_env", "build_app", "load_targets"]

_log = logging.getLogger("modelport")


def load_targets(settings: Settings) -> list[LoadedModel]:
    """Every model named by ``settings.model`` (a ``.yaml`` config lists several)."""
    if not settings.model:
        raise ConfigError("nothing to serve: give a model file, a package directory, a "
                          "model-settings.json or a config file (or set MODELPORT_MODEL)")
    loaded: list[LoadedModel] = []
    for target in settings.model:
        path = Path(target)
        if path.suffix in (".yaml", ".yml") and path.is_file():
            loaded += _from_config(path, settings)
        else:
            loaded.append(_load_one(target, settings, None))
    names = [m.name for m in loaded]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ConfigError(f"two models are named '{sorted(dupes)[0]}'; name them in a config "
                          "file (models: [{name: ..., path: ...}])")
    return loaded


def _load_one(target: str, settings: Settings, name: str | None) -> LoadedModel:
    path = Path(target)
    if not path.exists() and ("@" in target or ":" in target):
        raise ConfigError(f"'{target}' looks like a registry reference but the registry is "
                          "not available in this build")
    return load_model(path, runtime=settings.runtime, name=name)


def _from_config(path: Path, settings: Settings) -> list[LoadedModel]:
    """``models: [{name: heart, path: heart/}, ...]``; paths relative to the file."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    entries = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"'{path}' needs a 'models' list of {{name, path}} entries")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "path" not in entry:
            raise ConfigError(f"'{path}': models[{i}] needs a 'path'")
        target = str(path.parent / str(entry["path"]))
        out.append(_load_one(target, settings, entry.get("name")))
    return out


def build_app(settings: Settings) -> FastAPI:
    """Load every target and build the app."""
    return create_app(load_targets(settings), settings)


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` in worker processes: settings from the environment."""
    return build_app(Settings())
