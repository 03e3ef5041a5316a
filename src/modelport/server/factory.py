"""Build a ready-to-run app from :class:`~modelport.config.Settings`: resolve every target
(model file, package, model-settings.json, config file), load, plug monitoring in."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI

from modelport.cache import FallbackHook, LookupHook, LRUCache, RedisCache
from modelport.config import Settings
from modelport.errors import ConfigError, ModelportError
from modelport.package import LoadedModel, load_model
from modelport.registry import Registry, parse_ref
from modelport.registry.db import connect, unreachable_reason
from modelport.registry.mlflow_source import MlflowRegistry, is_mlflow_uri
from modelport.registry.store import ArtifactStore
from modelport.runtimes.devices import placement_of
from modelport.server.admin import admin_extension
from modelport.server.app import AppHook, create_app
from modelport.server.console import console_extension
from modelport.server.logs import configure_logging
from modelport.server.monitoring import build_monitoring
from modelport.server.pool import Budget, LazyModel
from modelport.server.rollout import FollowEvent, follow_extension, load_ref
from modelport.server.state import AppState
from modelport.server.targets import (
    config_entries,
    lazy_models,
    model_directory,
    pool_extension,
)
from modelport.server.tracing import trace_predlog

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
        self.mlflow: MlflowRegistry | None = None
        """The MLflow tracking server, once a ``models:/`` target names it."""

    def from_mlflow(self, uri: str) -> tuple[LoadedModel, str | None]:
        """Load what a ``models:/`` URI names now, with the alias to follow, if any."""
        if self.mlflow is None:
            self.mlflow = MlflowRegistry(self._settings.mlflow_tracking_uri)
        return self.mlflow.load(uri, placement=placement_of(self._settings),
                                trusted=self._settings.trust_types)

    def get(self) -> Registry:
        """The registry; while its database is unreachable, one that reaches it once it is
        back (the schema is brought up to date only by a start that reached it)."""
        if self.registry is None:
            db, store = self._settings.registry_db, self._settings.registry_store
            try:
                self.registry = Registry.open(db, store)
            except ModelportError as exc:
                if unreachable_reason(exc) is None:
                    raise
                self.registry = Registry(connect(db), ArtifactStore(store))
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
            loaded.append((_load_ref(catalog.get(), target, settings), _alias(target)))
        elif is_mlflow_uri(target):
            loaded.append(catalog.from_mlflow(target))
        elif (inside := model_directory(path)) is not None:  # a folder of models
            loaded += [(_load_one(str(p), settings, None), None) for p in inside]
        else:
            loaded.append((_load_one(target, settings, None), None))
    names = [m.name for m, _ in loaded]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ConfigError(f"two models are named '{sorted(dupes)[0]}'; name them in a config "
                          "file (models: [{name: ..., path: ...}])")
    return loaded


def _load_ref(registry: Registry, ref: str, settings: Settings) -> LoadedModel:
    """Load what ``ref`` resolves to and record the answer in the store; while the registry
    database is unreachable, load what it resolved to last time instead."""
    try:
        record = registry.resolve(ref)
        model = load_ref(registry, record.ref, runtime=settings.runtime,
                         placement=placement_of(settings), trusted=settings.trust_types)
    except Exception as exc:
        reason = unreachable_reason(exc)
        if reason is None:
            raise
        return _load_recorded(registry.store, ref, settings, reason)
    _remember(registry.store, ref, record.name, record.version)
    return model


def _load_recorded(store: ArtifactStore, ref: str, settings: Settings,
                   reason: str) -> LoadedModel:
    recorded = store.recall(ref)
    if recorded is None:
        raise ConfigError(f"cannot serve {ref}: the registry database is unreachable "
                          f"({reason}) and the store {store.root} has no record of what {ref} "
                          "resolved to (one is written each time it resolves); start once "
                          "while the database is reachable, or serve a package directory")
    path = store.checkout(recorded.name, recorded.version, recorded.files, recorded.manifest)
    _log.warning("registry database unreachable (%s): serving %s as %s:%s, what it resolved to "
                 "at %s; following resumes when the database is back", reason, ref,
                 recorded.name, recorded.version,
                 time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(recorded.recorded_at)))
    return load_model(path, runtime=settings.runtime, name=parse_ref(ref).name,
                      placement=placement_of(settings), trusted=settings.trust_types)


def _remember(store: ArtifactStore, ref: str, name: str, version: str) -> None:
    """Record a resolution; failing to is worth a warning, never a stop."""
    try:
        store.remember(ref, name, version)
    except (OSError, ModelportError, ValueError) as exc:
        _log.warning("could not record that %s resolved to %s:%s in the store (%s); a start "
                     "while the registry database is unreachable will not find it", ref, name,
                     version, exc)


def _remember_switches(store: ArtifactStore) -> Callable[[FollowEvent], None]:
    """A follower's ``on_event``: every switch is recorded as ``name@alias``'s resolution."""
    def on_event(event: FollowEvent) -> None:
        if event.outcome == "switched":
            _remember(store, f"{event.name}@{event.alias}", event.name, event.to_version)
    return on_event


def _is_registry_ref(target: str) -> bool:
    return ("@" in target or ":" in target) and "/" not in target


def _alias(target: str) -> str | None:
    return target.split("@", 1)[1] if "@" in target else None


def _load_one(target: str, settings: Settings, name: str | None) -> LoadedModel:
    return load_model(Path(target), runtime=settings.runtime, name=name,
                      placement=placement_of(settings), trusted=settings.trust_types)


def _from_config(path: Path, settings: Settings) -> list[LoadedModel]:
    """``models: [{name: heart, path: heart/}, ...]``; paths relative to the file."""
    return [_load_one(str(target), settings, name) for target, name in config_entries(path)]


def build_app(settings: Settings) -> FastAPI:
    """Load every target and build the app: registry aliases are followed, the admin API and
    traffic policies are always there."""
    catalog = _Catalog(settings)
    budget = Budget.of(settings)
    extensions: list[AppHook] = []
    if budget is None:  # every model loads now and stays loaded
        resolved = _resolve(settings, catalog)
    else:  # registered now, loaded on demand within the budget (registry refs load now)
        resolved, lazy = _resolve_lazy(settings, catalog)
        extensions.append(pool_extension(budget, lazy))
    registry = catalog.registry
    mlflow = catalog.mlflow
    if mlflow is not None:
        extensions.append(lambda _app, state: state.closers.append(mlflow.close))
    for model, alias in resolved:
        if alias is not None and mlflow is not None and mlflow.serves(model.name):
            extensions.append(follow_extension(
                mlflow, model.name, alias, interval_s=settings.registry_poll_s,
                grace_s=settings.swap_grace_s, loader=mlflow.loader(
                    model.name, placement=placement_of(settings),
                    trusted=settings.trust_types)))
        elif alias is not None and registry is not None:
            extensions.append(follow_extension(
                registry, model.name, alias, interval_s=settings.registry_poll_s,
                grace_s=settings.swap_grace_s, on_event=_remember_switches(registry.store)))
    extensions.append(admin_extension(registry))
    models = [m for m, _ in resolved]
    monitoring = build_monitoring(settings)
    extensions.append(monitoring.extend)
    extensions.append(lambda _app, _state: trace_predlog(monitoring.predlog))
    extensions.append(console_extension(registry, monitoring))
    metrics = monitoring.metrics
    extensions.append(lambda _app, state: _install_cache(
        settings, state, metrics.count_cache, metrics.count_cache_fallback))
    return create_app(models, settings, extensions=extensions,
                      on_prediction=monitoring.on_prediction, on_batch=monitoring.on_batch,
                      on_model_change=[monitoring.on_model_change])


def _resolve_lazy(settings: Settings, catalog: _Catalog
                  ) -> tuple[list[tuple[LoadedModel, str | None]], list[LazyModel]]:
    """With a budget: registry references loaded (followed as always), everything else
    registered without loading (:mod:`modelport.server.targets`)."""
    refs = [t for t in settings.model
            if (not Path(t).exists() and _is_registry_ref(t)) or is_mlflow_uri(t)]
    rest = [t for t in settings.model if t not in refs]
    if not settings.model:
        _resolve(settings, catalog)  # the usual "nothing to serve" error
    resolved = _resolve(settings.model_copy(update={"model": refs}), catalog) if refs else []
    lazy = lazy_models(rest, settings)
    names = [m.name for m, _ in resolved] + [m.name for m in lazy]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"two models are named '{dupes[0]}'; name them in a config file "
                          "(models: [{name: ..., path: ...}])")
    return resolved, lazy


def _install_cache(settings: Settings, state: AppState, on_lookup: LookupHook,
                   on_fallback: FallbackHook) -> None:
    """The prediction cache ``settings.prediction_cache`` asks for (none when ``off``)."""
    if settings.prediction_cache == "memory":
        state.cache = LRUCache(settings.cache_max_entries)
    elif settings.prediction_cache == "redis":
        redis = RedisCache(settings.cache_redis_url, ttl_s=settings.cache_ttl_s)
        state.cache = redis
        state.closers.append(redis.aclose)
    state.on_cache_lookup = on_lookup if state.cache is not None else None
    state.on_cache_fallback = on_fallback if state.cache is not None else None


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` in worker processes: settings from the environment
    (logging too: a spawned worker does not inherit the parent's)."""
    settings = Settings()
    configure_logging(settings.log_level, log_file=settings.log_file,
                      max_bytes=settings.log_max_bytes, backups=settings.log_backups)
    return build_app(settings)
