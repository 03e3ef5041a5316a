"""``/monitoring/drift``: drift status, raw counts and reference profiles of served models.

::

    GET /monitoring/drift                     every model's DriftReport
    GET /monitoring/drift/{model}             one model's DriftReport
    GET /monitoring/drift/{model}/counts      raw window counts (merge them across replicas)
    GET /monitoring/drift/{model}/reference   the reference profile the bins come from
    GET /monitoring/quality[/{model}]          realized and estimated quality (also the
                                              ``quality`` key of the drift status)
    GET /monitoring/retrain                   the retraining webhook's latest calls

The handlers only look the monitor up and encode: the decision lives in
:mod:`modelport.monitoring.stats`, the counting in :mod:`modelport.monitoring.drift`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter

from modelport.errors import ModelNotFound
from modelport.monitoring.drift import DriftMonitor
from modelport.server.schemas import answers

__all__ = ["drift_router", "quality_router"]

Monitors = Callable[[], Mapping[str, DriftMonitor]]
Quality = Callable[[str], dict[str, Any] | None]
"""A model's quality as plain data (``QualityTracker.status``), None when unknown."""
_ONE = answers(None, 404)


def drift_router(get_monitors: Monitors, quality: Quality | None = None) -> APIRouter:
    """Routes over the monitors ``get_monitors()`` returns (model name → monitor), read at
    each request so models loaded later show up; ``quality`` adds each model's realized and
    estimated quality to its status."""
    router = APIRouter(prefix="/monitoring/drift", tags=["monitoring"])

    def with_quality(name: str, data: dict[str, Any]) -> dict[str, Any]:
        found = quality(name) if quality is not None else None
        return data if found is None else {**data, "quality": found}

    def monitor(model: str) -> DriftMonitor:
        found = get_monitors().get(model)
        if found is None:
            known = ", ".join(sorted(get_monitors())) or "none"
            raise ModelNotFound(f"no drift monitor for model '{model}' (monitored: {known}); "
                                "a model needs a reference profile: modelport profile")
        return found

    @router.get("", summary="Drift status of every monitored model")
    def all_models() -> dict[str, Any]:
        return {"models": {name: with_quality(name, m.status().to_dict())
                           for name, m in get_monitors().items()}}

    @router.get("/{model}", summary="Drift status of one model", responses=_ONE)
    def one_model(model: str) -> dict[str, Any]:
        return with_quality(model, monitor(model).status().to_dict())

    @router.get("/{model}/counts", summary="Raw window counts (exact to merge across servers)",
                responses=_ONE)
    def counts(model: str) -> dict[str, Any]:
        return monitor(model).snapshot().to_dict()

    @router.get("/{model}/reference", summary="The model's reference profile", responses=_ONE)
    def reference(model: str) -> dict[str, Any]:
        return monitor(model).profile.to_dict()

    return router


def quality_router(quality: Quality, models: Callable[[], list[str]],
                   retrain: Callable[[], dict[str, Any]]) -> APIRouter:
    """``/monitoring/quality`` (every model, or one) and ``/monitoring/retrain``."""
    router = APIRouter(prefix="/monitoring", tags=["monitoring"])

    @router.get("/quality", summary="Realized and estimated quality of every served model")
    def all_quality() -> dict[str, Any]:
        return {"models": {name: quality(name) for name in models()}}

    @router.get("/quality/{model}", summary="Realized and estimated quality of one model",
                responses=_ONE)
    def one_quality(model: str) -> dict[str, Any]:
        found = quality(model)
        if found is None:
            known = ", ".join(models()) or "none"
            raise ModelNotFound(f"no quality for model '{model}' (served: {known})")
        return found

    @router.get("/retrain", summary="The retraining webhook's episodes and latest calls")
    def retrain_calls() -> dict[str, Any]:
        return retrain()

    return router
