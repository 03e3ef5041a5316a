"""``/monitoring/drift``: drift status, raw counts and reference profiles of served models.

::

    GET /monitoring/drift                     every model's DriftReport
    GET /monitoring/drift/{model}             one model's DriftReport
    GET /monitoring/drift/{model}/counts      raw window counts (merge them across replicas)
    GET /monitoring/drift/{model}/reference   the reference profile the bins come from

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

__all__ = ["drift_router"]

Monitors = Callable[[], Mapping[str, DriftMonitor]]
_ONE = answers(None, 404)


def drift_router(get_monitors: Monitors) -> APIRouter:
    """Routes over the monitors ``get_monitors()`` returns (model name → monitor), read at
    each request so models loaded later show up."""
    router = APIRouter(prefix="/monitoring/drift", tags=["monitoring"])

    def monitor(model: str) -> DriftMonitor:
        found = get_monitors().get(model)
        if found is None:
            known = ", ".join(sorted(get_monitors())) or "none"
            raise ModelNotFound(f"no drift monitor for model '{model}' (monitored: {known}); "
                                "a model needs a reference profile: modelport profile")
        return found

    @router.get("", summary="Drift status of every monitored model")
    def all_models() -> dict[str, Any]:
        return {"models": {name: m.status().to_dict() for name, m in get_monitors().items()}}

    @router.get("/{model}", summary="Drift status of one model", responses=_ONE)
    def one_model(model: str) -> dict[str, Any]:
        return monitor(model).status().to_dict()

    @router.get("/{model}/counts", summary="Raw window counts (exact to merge across servers)",
                responses=_ONE)
    def counts(model: str) -> dict[str, Any]:
        return monitor(model).snapshot().to_dict()

    @router.get("/{model}/reference", summary="The model's reference profile", responses=_ONE)
    def reference(model: str) -> dict[str, Any]:
        return monitor(model).profile.to_dict()

    return router
