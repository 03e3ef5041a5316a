"""The gRPC server of an app: OIP, ``grpc.health.v1`` and reflection, in the app's event loop.

:class:`GrpcDoor` is started by :mod:`modelport.server.run` right after uvicorn binds the HTTP
port, on the same event loop, so both front doors share one data plane (batchers, cache,
metrics, traffic policies). On SIGTERM both drain together: the health service turns
NOT_SERVING, ModelInfer answers UNAVAILABLE, the server stops taking calls and finishes those
in flight within the graceful timeout, and only then are the batchers closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2

from modelport.errors import ConfigError
from modelport.server.grpc import oip_pb2
from modelport.server.grpc.auth import KeyInterceptor, Keys
from modelport.server.grpc.oip_pb2_grpc import add_GRPCInferenceServiceServicer_to_server
from modelport.server.grpc.servicer import InferenceServicer
from modelport.server.state import AppState

__all__ = ["SERVICE", "GrpcDoor"]

SERVICE = "inference.GRPCInferenceService"
_log = logging.getLogger("modelport")
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class _Health(HealthServicer):
    """``grpc.health.v1.Health``: SERVING while the data plane is ready (every model loaded
    and warmed, not draining), for the server ("") and for the OIP service."""

    def __init__(self, state: AppState) -> None:
        super().__init__()
        self._state = state

    async def refresh(self) -> None:
        """Bring both statuses up to date (watchers are told of a change)."""
        status = _SERVING if self._state.dataplane.ready() else _NOT_SERVING
        for service in ("", SERVICE):
            await self.set(service, status)

    async def Check(self, request: health_pb2.HealthCheckRequest,
                    context: aio.ServicerContext[Any, Any]) -> Any:
        """The status now (NOT_FOUND for a service this server does not have)."""
        await self.refresh()
        return await super().Check(request, context)


class GrpcDoor:
    """One app's gRPC server."""

    def __init__(self, state: AppState, *, reuse_port: bool = False,
                 required: bool = True) -> None:
        settings = state.settings
        self._state = state
        self._required = required
        self._address = _address(settings.host, settings.grpc_port)
        self._health = _Health(state)
        self._options = [
            ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
            ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
            # off by default: a second server on a taken port must fail, not share it
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ]
        keys = Keys(api_keys=settings.all_api_keys(), admin_keys=settings.all_admin_keys())
        self._interceptors = [KeyInterceptor(keys)] if keys.keys else []
        self._servicer = InferenceServicer(state, keys)
        self._server: aio.Server | None = None
        self._stopping: asyncio.Future[None] | None = None
        self._refreshing: set[asyncio.Task[None]] = set()
        self.port: int | None = None
        """The port bound (known after :meth:`start`; useful with ``grpc_port`` 0 in tests)."""

    async def start(self) -> int | None:
        """Bind and start serving; returns the port. A port that cannot be bound is a
        ``ConfigError`` that says what to do when the port was ``required`` (asked for with
        ``--grpc-port`` or ``MODELPORT_GRPC_PORT``); the default one (8081) taken by another
        process only turns gRPC off, with a warning, so that two servers on one host need no
        gRPC option (None is returned)."""
        try:
            return await self._start()
        except ConfigError as exc:
            if self._required:
                raise
            _log.warning("gRPC is off: %s", exc.message)
            return None

    async def _start(self) -> int:
        server = aio.server(interceptors=self._interceptors, options=self._options)
        add_GRPCInferenceServiceServicer_to_server(self._servicer, server)  # type: ignore[no-untyped-call]
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), server, pool=_reflection_pool())
        try:
            self.port = server.add_insecure_port(self._address)
        except RuntimeError as exc:
            raise ConfigError(f"cannot serve gRPC on {self._address} ({exc}): free the port, "
                              "pass --grpc-port with another one, or --grpc-port 0 to turn "
                              "gRPC off") from None
        await server.start()
        self._server = server
        loop = asyncio.get_running_loop()
        self._state.repo.on_change.append(lambda _s, _on: self._refresh_soon(loop))
        await self._health.refresh()
        _log.info("gRPC (Open Inference Protocol) on %s", self._address.rsplit(":", 1)[0]
                  + f":{self.port}")
        return self.port

    def _refresh_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        """Tell health watchers about a model change (safe from any thread)."""
        loop.call_soon_threadsafe(self._refresh_task, loop)

    def _refresh_task(self, loop: asyncio.AbstractEventLoop) -> None:
        task = loop.create_task(self._health.refresh())
        self._refreshing.add(task)  # a task nobody holds may be collected before it ran
        task.add_done_callback(self._refreshing.discard)

    async def stop(self, grace: float | None) -> None:
        """Drain: NOT_SERVING, no new calls, calls in flight finish within ``grace`` seconds
        (then they are cancelled). Idempotent: a second call waits for the first."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop(grace))
        await asyncio.shield(self._stopping)

    async def _stop(self, grace: float | None) -> None:
        await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace)

    async def run(self) -> None:
        """Serve until cancelled, then drain (a lifespan background task: ``--workers``)."""
        try:
            await self.start()
        except ConfigError as exc:
            _log.error("%s", exc.message)
            return
        try:
            await asyncio.Event().wait()
        finally:
            with contextlib.suppress(asyncio.CancelledError):
                await self.stop(self._state.settings.graceful_timeout_s)


def _reflection_pool() -> Any:
    """The descriptor pool reflection answers from: the OIP messages' own pool (see
    scripts/gen-grpc-stubs) plus the health and reflection services' files."""
    pool = oip_pb2.DESCRIPTOR.pool
    for module in (health_pb2, reflection_pb2):
        try:
            pool.FindFileByName(module.DESCRIPTOR.name)
        except KeyError:
            pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    return pool


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"

