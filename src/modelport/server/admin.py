"""The admin API: load/unload versions, move an alias, roll back, read and set traffic policy.

Mounted under ``/admin`` by :func:`admin_extension`; the edge middleware lets only an admin key
through (and with no admin key configured the whole API is off), as for the V2 repository
routes: nothing that changes what is served answers to a prediction key or to no key. Moving an alias
or rolling back also asks the alias's follower to check at once, so the change takes effect
on this server before the answer is sent (other replicas follow at their next poll).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response

from modelport.errors import Conflict, InvalidInput, ModelNotFound
from modelport.registry import Registry
from modelport.server.rollout import AliasFollower, TrafficRouter, check_golden, load_ref, retire
from modelport.server.state import AppState, app_state, read_json
from modelport.traffic import TrafficPolicy

__all__ = ["admin_extension", "admin_router"]

ACTOR_HEADER = "x-modelport-actor"


def admin_router(registry: Registry | None, traffic: TrafficRouter,
                 followers: Mapping[str, AliasFollower], *,
                 dependencies: Sequence[Any] = ()) -> APIRouter:
    """The ``/admin`` routes over a registry (None: alias routes answer 409), the app's
    traffic router and its alias followers by model name."""
    router = APIRouter(prefix="/admin", tags=["admin"], dependencies=list(dependencies))

    def need_registry() -> Registry:
        if registry is None:
            raise Conflict("this server does not serve from a registry; start it with "
                              "a reference such as heart@production")
        return registry

    @router.get("/models")
    async def models(request: Request) -> dict[str, Any]:
        repo = app_state(request).repo
        return {name: {"default": repo.default_version(name),
                       "versions": sorted(s.version for s in repo.versions(name)),
                       "traffic": _policy(traffic.get(name)),
                       "follow": asdict(followers[name].status()) if name in followers
                       else None} for name in repo.names()}

    @router.post("/models/{name}/versions/{version}/load")
    async def load(request: Request, name: str, version: str) -> dict[str, Any]:
        reg = need_registry()
        loaded = await asyncio.to_thread(load_ref, reg, f"{name}:{version}")
        await asyncio.to_thread(check_golden, loaded)
        app_state(request).repo.serve(loaded, default=False)
        return {"loaded": f"{name}:{loaded.version}"}

    @router.post("/models/{name}/versions/{version}/unload")
    async def unload(request: Request, name: str, version: str) -> dict[str, Any]:
        policy = traffic.get(name)
        if policy is not None and version in policy.versions:
            raise InvalidInput(f"{name}:{version} is in the traffic policy; change the policy "
                               "first", field="version")
        for served in app_state(request).repo.unload(name, version):
            await retire(served)
        return {"unloaded": f"{name}:{version}"}

    @router.put("/models/{name}/aliases/{alias}")
    async def move(request: Request, name: str, alias: str) -> dict[str, Any]:
        body = await _object(request)
        version = body.get("version")
        if not isinstance(version, str):
            raise InvalidInput("give the target version as a string", field="version")
        moved = await asyncio.to_thread(need_registry().set_alias, name, alias, version,
                                        actor=_actor(request), reason=_reason(body))
        return {"move": asdict(moved), "follow": await _follow(followers, name, alias)}

    @router.post("/models/{name}/aliases/{alias}/rollback")
    async def rollback(request: Request, name: str, alias: str) -> dict[str, Any]:
        body = await _object(request, allow_empty=True)
        moved = await asyncio.to_thread(need_registry().rollback, name, alias,
                                        actor=_actor(request), reason=_reason(body))
        return {"move": asdict(moved), "follow": await _follow(followers, name, alias)}

    @router.get("/models/{name}/traffic")
    async def get_traffic(request: Request, name: str) -> dict[str, Any]:
        _known(app_state(request), name)
        return {"policy": _policy(traffic.get(name))}

    @router.put("/models/{name}/traffic")
    async def set_traffic(request: Request, name: str) -> dict[str, Any]:
        served = {s.version for s in _known(app_state(request), name)}
        policy = TrafficPolicy.parse(await _object(request), versions=served)
        traffic.set(name, policy)
        return {"policy": _policy(policy)}

    @router.delete("/models/{name}/traffic")
    async def clear_traffic(name: str) -> Response:
        traffic.set(name, None)
        return Response(status_code=204)

    return router


def admin_extension(registry: Registry | None, *, dependencies: Sequence[Any] = ()
                    ) -> Callable[[FastAPI, AppState], None]:
    """An ``extensions=`` hook for ``create_app`` (put it after the follow extensions): adds
    the admin routes and ``app.state.traffic`` (a :class:`TrafficRouter`)."""
    def extend(app: FastAPI, _state: AppState) -> None:
        traffic: TrafficRouter = getattr(app.state, "traffic", None) or TrafficRouter()
        app.state.traffic = traffic
        followers: dict[str, AliasFollower] = getattr(app.state, "followers", {})
        app.state.followers = followers
        app.include_router(admin_router(registry, traffic, followers,
                                        dependencies=dependencies))

    return extend


async def _object(request: Request, *, allow_empty: bool = False) -> dict[str, Any]:
    if allow_empty and not await request.body():
        return {}
    body = await read_json(request)
    if not isinstance(body, dict):
        raise InvalidInput("expected a JSON object")
    return body


async def _follow(followers: Mapping[str, AliasFollower], name: str,
                  alias: str) -> dict[str, Any] | None:
    follower = followers.get(name)
    if follower is None or follower.alias != alias:
        return None
    event = await follower.check(retry=True)
    return asdict(follower.status()) | {"event": None if event is None else asdict(event)}


def _known(state: AppState, name: str) -> list[Any]:
    versions = state.repo.versions(name)
    if not versions:
        raise ModelNotFound(f"model '{name}' is not served (served: "
                            f"{', '.join(state.repo.names()) or 'none'})")
    return versions


def _actor(request: Request) -> str:
    return request.headers.get(ACTOR_HEADER) or "admin-api"


def _reason(body: Mapping[str, Any]) -> str | None:
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise InvalidInput("expected a string", field="reason")
    return reason


def _policy(policy: TrafficPolicy | None) -> dict[str, Any] | None:
    return None if policy is None else policy.model_dump(mode="json")
