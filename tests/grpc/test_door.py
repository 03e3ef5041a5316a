"""The gRPC door in process: same data plane as REST (traffic policies, shadows, readiness),
health that follows it, drain, and ports that cannot be had."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelport.config import Settings
from modelport.errors import ConfigError
from modelport.package import LoadedModel
from modelport.server.app import create_app
from modelport.server.grpc import oip_pb2 as pb
from modelport.server.grpc.door import GrpcDoor
from modelport.server.grpc.oip_pb2_grpc import GRPCInferenceServiceStub
from modelport.server.state import AppState
from modelport.traffic import TrafficPolicy
from tests.grpc.test_conformance import to_grpc
from tests.server.conftest import v2_columns

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
ADMIN = (("authorization", "Bearer admin"),)


def app_state(loaded: LoadedModel, **settings: Any) -> AppState:
    app = create_app([loaded], Settings(grpc_port=0, admin_keys=["admin"], **settings))
    state: AppState = app.state.modelport
    return state


@pytest.fixture
async def door(heart_loaded: LoadedModel) -> AsyncIterator[tuple[GrpcDoor, AppState, str]]:
    state = app_state(heart_loaded)
    door = GrpcDoor(state)
    port = await door.start()
    yield door, state, f"127.0.0.1:{port}"
    await door.stop(0)
    await state.repo.aclose()


def infer_request(records: list[dict[str, Any]]) -> Any:
    return pb.ModelInferRequest.FromString(to_grpc(v2_columns(records)).SerializeToString())


async def test_a_traffic_policy_routes_grpc_calls_and_says_which_arm(
        door: tuple[GrpcDoor, AppState, str], heart_loaded: LoadedModel,
        records: list[dict[str, Any]]) -> None:
    _, state, target = door
    state.repo.serve(replace(heart_loaded, version="2.0.0"), default=False)
    state.traffic.set("heart", TrafficPolicy.weighted({"1.0.0": 0, "2.0.0": 1}))
    async with aio.insecure_channel(target) as channel:
        call = GRPCInferenceServiceStub(channel).ModelInfer(infer_request(records[:2]))
        answer = await call
        trailing = dict(await call.trailing_metadata())
    assert answer.model_version == "2.0.0"
    assert (trailing["x-model-version"], trailing["x-model-arm"]) == ("2.0.0", "2.0.0")


async def test_a_shadow_version_gets_a_copy_of_grpc_calls(
        door: tuple[GrpcDoor, AppState, str], heart_loaded: LoadedModel,
        records: list[dict[str, Any]]) -> None:
    _, state, target = door
    state.repo.serve(replace(heart_loaded, version="2.0.0"), default=False)
    state.traffic.set("heart", TrafficPolicy.shadowing("1.0.0", "2.0.0"))
    seen: list[tuple[str, str]] = []
    state.on_prediction.append(lambda e: seen.append((e.version, e.route)))
    async with aio.insecure_channel(target) as channel:
        answer = await GRPCInferenceServiceStub(channel).ModelInfer(infer_request(records[:1]))
    for _ in range(100):
        if len(seen) == 2:
            break
        await asyncio.sleep(0.01)
    assert answer.model_version == "1.0.0"
    assert sorted(seen) == [("1.0.0", "grpc"), ("2.0.0", "shadow")]


async def test_health_follows_readiness_and_the_drain(
        door: tuple[GrpcDoor, AppState, str], records: list[dict[str, Any]]) -> None:
    grpc_door, state, target = door
    async with aio.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        stub = GRPCInferenceServiceStub(channel)
        check = health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService")
        assert (await health.Check(check)).status == SERVING
        state.shutting_down = True  # what SIGTERM does first
        assert (await health.Check(check)).status == NOT_SERVING
        with pytest.raises(aio.AioRpcError) as err:
            await stub.ModelInfer(infer_request(records[:1]))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in (err.value.details() or "")
        assert not (await stub.ServerReady(pb.ServerReadyRequest())).ready
        await grpc_door.stop(5)
    async with aio.insecure_channel(target) as channel:
        with pytest.raises(aio.AioRpcError) as gone:
            await health_pb2_grpc.HealthStub(channel).Check(check, timeout=2)
        assert gone.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_health_watchers_hear_of_a_model_unloaded(
        door: tuple[GrpcDoor, AppState, str]) -> None:
    _, state, target = door
    async with aio.insecure_channel(target) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == SERVING
        await state.dataplane.unload("heart")
        assert (await asyncio.wait_for(watch.read(), 5)).status == NOT_SERVING
        watch.cancel()


async def test_repository_rpcs_use_the_data_plane(door: tuple[GrpcDoor, AppState, str]) -> None:
    _, state, target = door
    async with aio.insecure_channel(target) as channel:
        stub = GRPCInferenceServiceStub(channel)
        await stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="heart"),
                                         metadata=ADMIN)
        assert state.repo.names() == []
        with pytest.raises(aio.AioRpcError) as err:
            await stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="nope"),
                                           metadata=ADMIN)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        await stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="heart"),
                                       metadata=ADMIN)
        ready = await stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=True), metadata=ADMIN)
    assert [(m.name, m.state) for m in ready.models] == [("heart", "READY")]


async def test_a_port_asked_for_and_taken_stops_the_start(heart_loaded: LoadedModel) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        door = GrpcDoor(_with_settings(heart_loaded, Settings(grpc_port=port)))
        with pytest.raises(ConfigError) as err:
            await door.start()
    assert f"127.0.0.1:{port}" in err.value.message
    assert "--grpc-port" in err.value.message


async def test_the_default_port_taken_only_turns_grpc_off(
        heart_loaded: LoadedModel, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = Settings(grpc_port=taken.getsockname()[1])
        door = GrpcDoor(_with_settings(heart_loaded, settings), required=False)
        with caplog.at_level(logging.WARNING, logger="modelport"):
            assert await door.start() is None
    assert "gRPC is off" in caplog.text
    await door.stop(0)


def _with_settings(loaded: LoadedModel, settings: Settings) -> AppState:
    state: AppState = create_app([loaded], settings).state.modelport
    return state


@pytest.mark.e2e
def test_serve_exits_naming_the_option_when_its_grpc_port_is_taken(heart_package: Any) -> None:
    import os
    import subprocess
    import sys

    from tests.grpc.conftest import ROOT, free_port

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = subprocess.run(
            [sys.executable, "-m", "modelport", "serve", str(heart_package), "--port",
             str(free_port()), "--grpc-port", str(taken.getsockname()[1])],
            check=False, capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    assert "--grpc-port" in proc.stderr


def test_grpc_port_zero_serves_no_grpc(heart_loaded: LoadedModel) -> None:
    from modelport.server.run import _grpc_door

    assert _grpc_door(_with_settings(heart_loaded, Settings(grpc_port=0)),
                      reuse_port=False) is None
    door = _grpc_door(_with_settings(heart_loaded, Settings()), reuse_port=False)
    assert isinstance(door, GrpcDoor)
