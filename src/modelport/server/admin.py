"""The admin API: load/unload versions, move an alias, roll back, read and set traffic policy.

Mounted under ``/admin`` by :func:`admin_extension`; the edge middleware lets only an admin key
through (and with no admin key configured the whole API is off), as for the V2 repository
routes: nothing that changes what is served answers to a prediction key or to no key. Moving
an alias or rolling back also asks the alias's follower to check at once, so the change takes
effect on this server before the answer is sent (other replicas follow at their next poll).

Every change that puts a version in front of requests — an alias move, a rollback, a load, a
traffic policy — first passes :func:`~modelport.server.gate.admit`; a candidate that fails is
refused with 409 naming the version and the golden row, and nothing changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Request
from starlette.responses import Response

from modelport.errors import Conflict, ModelNotFound, NotFound
from modelport.registry import Registry
from modelport.registry.gate import live_package
from modelport.registry.versions import ALIAS_PATTERN, NAME_PATTERN, VERSION_PATTERN
from modelport.server.gate import admit, live_of
from modelport.server.models import retire
from modelport.server.rollout import AliasFollower, load_ref
from modelport.server.schemas import AliasMove, Answer, Rollback, answers
from modelport.server.state import AppState, app_state
from modelport.server.traffic import TrafficRouter
from modelport.traffic import TrafficPolicy

__all__ = ["admin_extension", "admin_router"]

ACTOR_HEADER = "x-modelport-actor"
# registry routes check names as the registry does, before it is asked (422 naming the field)
Name = Annotated[str, Path(pattern=NAME_PATTERN)]
Alias = Annotated[str, Path(pattern=ALIAS_PATTERN)]
Version = Annotated[str, Path(pattern=VERSION_PATTERN)]


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

    @router.get("/models", responses=answers(Answer))
    async def models(request: Request) -> dict[str, Any]:
        repo = app_state(request).repo
        return {name: {"default": repo.default_version(name),
                       "versions": sorted(s.version for s in repo.versions(name)),
                       "traffic": _policy(traffic.get(name)),
                       "follow": asdict(followers[name].status()) if name in followers
                       else None, "refused": _refused(request, name)} for name in repo.names()}

    @router.post("/models/{name}/versions/{version}/load",
                 responses=answers(Answer, 404, 409, 422, 500))
    async def load(request: Request, name: Name, version: Version) -> dict[str, Any]:
        reg = need_registry()
        loaded = await asyncio.to_thread(load_ref, reg, f"{name}:{version}")
        repo = app_state(request).repo
        await admit(loaded, live_of(repo, name), action="load",
                    refusals=app_state(request).refusals)
        repo.serve(loaded, default=False)
        return {"loaded": f"{name}:{loaded.version}"}

    @router.post("/models/{name}/versions/{version}/unload", responses=answers(Answer, 404, 409))
    async def unload(request: Request, name: str, version: str) -> dict[str, Any]:
        policy = traffic.get(name)
        if policy is not None and version in policy.versions:
            raise Conflict(f"{name}:{version} is in the traffic policy; change the policy "
                           "first")
        for served in app_state(request).repo.unload(name, version):
            await retire(served)
        return {"unloaded": f"{name}:{version}"}

    @router.put("/models/{name}/aliases/{alias}", responses=answers(Answer, 404, 409, 422, 500))
    async def move(request: Request, name: Name, alias: Alias,
                   body: AliasMove) -> dict[str, Any]:
        version = body.version
        reg = need_registry()
        await _admit_version(request, reg, name, version, alias=alias, action="alias_move")
        moved = await asyncio.to_thread(reg.set_alias, name, alias, version,
                                        actor=_actor(request), reason=body.reason)
        return {"move": asdict(moved), "follow": await _follow(followers, name, alias)}

    @router.post("/models/{name}/aliases/{alias}/rollback",
                 responses=answers(Answer, 404, 409, 422, 500))
    async def rollback(request: Request, name: Name, alias: Alias,
                       body: Rollback | None = None) -> dict[str, Any]:
        reg = need_registry()
        target = await asyncio.to_thread(reg.rollback_target, name, alias)
        await _admit_version(request, reg, name, target, alias=alias, action="rollback")
        moved = await asyncio.to_thread(reg.rollback, name, alias, actor=_actor(request),
                                        reason=None if body is None else body.reason,
                                        expect=target)
        return {"move": asdict(moved), "follow": await _follow(followers, name, alias)}

    @router.get("/models/{name}/traffic", responses=answers(Answer, 404))
    async def get_traffic(request: Request, name: str) -> dict[str, Any]:
        _known(app_state(request), name)
        policy = traffic.get(name)
        if policy is None:  # none set, or deleted: every request goes to the default version
            raise NotFound(f"model '{name}' has no traffic policy: every request goes to its "
                           f"default version {app_state(request).repo.default_version(name)}")
        return {"policy": _policy(policy)}

    @router.put("/models/{name}/traffic", responses=answers(Answer, 404, 409, 422))
    async def set_traffic(request: Request, name: str, policy: TrafficPolicy) -> dict[str, Any]:
        served = {s.version: s for s in _known(app_state(request), name)}
        _check_served(name, policy, served)
        live = live_of(app_state(request).repo, name)
        for version in policy.versions:
            if live is None or version != live.version:
                await admit(served[version].loaded, live, action="traffic",
                            refusals=app_state(request).refusals)
        traffic.set(name, policy)
        return {"policy": _policy(policy)}

    @router.delete("/models/{name}/traffic", status_code=204, response_class=Response)
    async def clear_traffic(name: str) -> Response:
        traffic.set(name, None)
        return Response(status_code=204)

    return router


def admin_extension(registry: Registry | None, *, dependencies: Sequence[Any] = ()
                    ) -> Callable[[FastAPI, AppState], None]:
    """An ``extensions=`` hook for ``create_app``: adds the admin routes over the app's
    traffic router and alias followers (``AppState.traffic``, ``AppState.followers``)."""
    def extend(app: FastAPI, state: AppState) -> None:
        app.include_router(admin_router(registry, state.traffic, state.followers,
                                        dependencies=dependencies))

    return extend


async def _admit_version(request: Request, reg: Registry, name: str, version: str, *,
                         alias: str, action: str) -> None:
    """Load ``name:version`` and admit it against the version this server serves (else the
    alias's current target); nothing to do when the alias already points there."""
    current = await asyncio.to_thread(reg.alias_target, name, alias)
    if current == version:
        return
    candidate = await asyncio.to_thread(load_ref, reg, f"{name}:{version}")
    live: Any = live_of(app_state(request).repo, name)
    if live is None and current is not None:
        live = await asyncio.to_thread(live_package, reg, f"{name}:{current}")
    await admit(candidate, live, action=action, refusals=app_state(request).refusals)


def _refused(request: Request, name: str) -> dict[str, Any] | None:
    last = app_state(request).refusals.last(name)
    return None if last is None else asdict(last)


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


def _check_served(name: str, policy: TrafficPolicy, served: Mapping[str, Any]) -> None:
    """Every version the policy names must be served here (409 naming the first that is not:
    load it first)."""
    for version in policy.versions:
        if version not in served:
            raise Conflict(f"{name}:{version} is not served here (served: "
                           f"{', '.join(sorted(served))}); load it first: POST "
                           f"/admin/models/{name}/versions/{version}/load")


def _policy(policy: TrafficPolicy | None) -> dict[str, Any] | None:
    return None if policy is None else policy.model_dump(mode="json")
