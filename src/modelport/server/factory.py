"""Build a ready-to-run app from :class:`~modelport.config.Settings`: resolve every target
(model file, package, model-settings.json, config file), load, plug monitoring in."""

from __future__ import annotations

import logging
from pathlib import Path

import yaml
from fastapi import FastAPI

from modelport.cache import LookupHook, LRUCache, RedisCache
from modelport.config import Settings
from modelport.errors import ConfigError
from modelport.package import LoadedModel, load_model
from modelport.registry import Registry
from modelport.server.admin import admin_extension
from modelport.server.app import AppHook, create_app
from modelport.server.monitoring import build_monitoring
from modelport.server.rollout import follow_extension, load_ref
from modelport.server.state import AppState

__all__ = ["app_from_env", "build_app", "load_targets"]

_log = logging.getLogger("modelport")


def load_targets(settings: Settings) -> list[LoadedModel]:
    """Every model named by ``settings.model`` (a ``.yaml`` config lists several)."""
    return [m for m, _ in _resolve(settings, _Catalog(settings))]


class _Catalog:
    """The registry, opened once and only when a target names it."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.registry: Registry | None = None

    def get(self) -> Registry:
        if self.registry is None:
            self.registry = Registry.open(self._settings.registry_db,
                                          self._settings.registry_store)
        return self.registry


def _resolve(settings: Settings, catalog: _Catalog) -> list[tuple[LoadedModel, str | None]]:
    """Loaded models, each with the registry alias to follow (``heart@production``)."""
    if not settings.model:
        raise ConfigError("nothing to serve: give a model file, a package directory, a "
                          "model-settings.json or a config file (or set MODELPORT_MODEL)")
    loaded: list[tuple[LoadedModel, str | None]] = []
    for target in settings.model:
        path = Path(target)
        if path.suffix in (".yaml", ".yml") and path.is_file():
            loaded += [(m, None) for m in _from_config(path, settings)]
        elif not path.exists() and _is_registry_ref(target):
            model = load_ref(catalog.get(), target, runtime=settings.runtime)
            loaded.append((model, _alias(target)))
        else:
            loaded.append((_load_one(target, settings, None), None))
    names = [m.name for m, _ in loaded]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ConfigError(f"two models are named '{sorted(dupes)[0]}'; name them in a config "
                          "file (models: [{name: ..., path: ...}])")
    return loaded


def _is_registry_ref(target: str) -> bool:
    return ("@" in target or ":" in target) and "/" not in target


def _alias(target: str) -> str | None:
    return target.split("@", 1)[1] if "@" in target else None


def _load_one(target: str, settings: Settings, name: str | None) -> LoadedModel:
    return load_model(Path(target), runtime=settings.runtime, name=name)


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
    """Load every target and build the app: registry aliases are followed, the admin API and
    traffic policies are always there."""
    catalog = _Catalog(settings)
    resolved = _resolve(settings, catalog)
    registry = catalog.registry
    extensions: list[AppHook] = []
    for model, alias in resolved:
        if alias is not None and registry is not None:
            extensions.append(follow_extension(
                registry, model.name, alias, interval_s=settings.registry_poll_s,
                grace_s=settings.swap_grace_s))
    extensions.append(admin_extension(registry))
    models = [m for m, _ in resolved]
    monitoring = build_monitoring(settings)
    extensions.append(monitoring.extend)
    extensions.append(lambda _app, state: _install_cache(settings, state,
                                                         monitoring.metrics.count_cache))
    return create_app(models, settings, extensions=extensions,
                      on_prediction=monitoring.on_prediction, on_batch=monitoring.on_batch,
                      on_model_change=[monitoring.on_model_change])


def _install_cache(settings: Settings, state: AppState, on_lookup: LookupHook) -> None:
    """The prediction cache ``settings.prediction_cache`` asks for (none when ``off``)."""
    if settings.prediction_cache == "memory":
        state.cache = LRUCache(settings.cache_max_entries)
    elif settings.prediction_cache == "redis":
        redis = RedisCache(settings.cache_redis_url, ttl_s=settings.cache_ttl_s)
        state.cache = redis
        state.closers.append(redis.aclose)
    state.on_cache_lookup = on_lookup if state.cache is not None else None


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` in worker processes: settings from the environment."""
    return build_app(Settings())
