"""The FastAPI application: routers for every protocol, the edge middleware, error handlers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Sequence

from fastapi import FastAPI

import modelport
from modelport.config import Settings
from modelport.package import LoadedModel
from modelport.server import explain, mlflow_scoring, native, probes, tracing, v1, v2
from modelport.server.accesslog import access_log
from modelport.server.docs import install_docs
from modelport.server.edge import OPEN_PATHS, EdgeMiddleware
from modelport.server.errors import install_error_handlers
from modelport.server.fastlane import ModelportApp
from modelport.server.models import BatchHook, ChangeHook, ModelRepository
from modelport.server.openapi import install_openapi
from modelport.server.state import AppState, PredictionHook

__all__ = ["create_app"]

_log = logging.getLogger("modelport")
AppHook = Callable[[FastAPI, AppState], object]


def create_app(
    models: Sequence[LoadedModel],
    settings: Settings,
    *,
    on_prediction: Sequence[PredictionHook] = (),
    on_batch: BatchHook | None = None,
    on_model_change: Sequence[ChangeHook] = (),
    extensions: Sequence[AppHook] = (),
) -> FastAPI:
    """An app serving ``models`` (each warmed with one prediction before it is ready).

    ``extensions`` are called with the app and its state after the core routes exist: that is
    how monitoring, the registry follower and the admin API plug in.
    """
    stop_tracing = tracing.configure(settings)  # OTEL_* variables; off unless configured
    access_log.configure(settings.access_log_level, settings.access_log_sample)
    if tracing.ON:
        on_batch = tracing.batch_hook(on_batch)
    repo = ModelRepository(settings, on_batch=on_batch)
    repo.on_change.extend(on_model_change)
    state = AppState(settings, repo, list(on_prediction))

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        tasks: list[asyncio.Task[None]] = [asyncio.create_task(run()) for run in state.background]
        # models and their imports are long-lived: move them out of the collector's sight so
        # full collections (tens of ms with pandas/sklearn loaded) stop stalling requests
        gc.collect()
        gc.freeze()
        yield
        state.shutting_down = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await repo.aclose()
        for close in state.closers:
            try:
                result = close()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                _log.exception("closing %r failed", close)
        access_log.flush()

    app = ModelportApp(title="modelport", version=modelport.__version__, lifespan=lifespan,
                  description="Predictions over the native, V2 (Open Inference Protocol), "
                              "V1 (KServe) and MLflow scoring protocols.",
                  docs_url=None, redoc_url=None)  # served from the package: install_docs
    app.state.modelport = state
    app.modelport_state = state  # what app_state() reads first: a plain attribute
    app.state.followers = state.followers  # the same dict: read access for callers
    app.fast_routes = [*native.table.routes, *v2.table.routes, *v1.table.routes,
                       *mlflow_scoring.table.routes, *explain.table.routes]
    for router in (native.router, probes.router, v2.router, v1.router, mlflow_scoring.router):
        app.include_router(router)
    explain.install_explain(app, state)
    install_error_handlers(app)
    install_openapi(app, state)
    install_docs(app, state)
    for loaded in models:
        repo.serve(loaded)
        _log.info("serving %s:%s (%s)", loaded.name, loaded.version, loaded.runtime.flavor)
    for extend in extensions:
        extend(app, state)
    open_paths = OPEN_PATHS | state.open_paths | (
        {"/metrics"} if settings.public_metrics else set())
    app.add_middleware(EdgeMiddleware, api_keys=settings.all_api_keys(),
                       admin_keys=settings.all_admin_keys(),
                       max_body_bytes=settings.max_body_bytes, open_paths=open_paths)
    if tracing.ON:  # outermost: the request span covers the edge's refusals too
        from modelport.server.tracing_http import TracingMiddleware

        app.add_middleware(TracingMiddleware)
    if stop_tracing is not None:
        state.closers.append(stop_tracing)
    return app
