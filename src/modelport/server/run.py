"""Run the server with uvicorn; SIGTERM drains in-flight requests, then exits 0.

With a gRPC port (``--grpc-port``, 8081 by default) the same process serves the Open Inference
Protocol over gRPC on the same event loop: it starts right after the HTTP port is bound, and
SIGTERM drains REST and gRPC together within the one graceful timeout, before the batchers
close.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI

from modelport.config import Settings
from modelport.errors import ConfigError
from modelport.server.factory import app_from_env, build_app
from modelport.server.logs import configure_logging
from modelport.server.state import AppState

if TYPE_CHECKING:
    from modelport.server.grpc.door import GrpcDoor

__all__ = ["serve", "worker_app"]


class _Server(uvicorn.Server):
    """Marks the app not-ready the moment a shutdown signal arrives, so load balancers stop
    sending traffic while in-flight requests finish."""

    def __init__(self, config: uvicorn.Config, state: AppState | None,
                 grpc_door: GrpcDoor | None = None) -> None:
        super().__init__(config)
        self._state = state
        self._grpc = grpc_door
        self.failure: ConfigError | None = None
        """Why the gRPC server could not start (the process then exits with it)."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self._grpc is not None and self.started:
            try:
                await self._grpc.start()
            except ConfigError as exc:
                self.failure = exc
                self.should_exit = True

    async def _wait_tasks_to_complete(self) -> None:
        # uvicorn's drain of HTTP connections, bounded by timeout_graceful_shutdown; gRPC
        # drains beside it, so neither protocol's calls outlive the batchers
        if self._grpc is None:
            await super()._wait_tasks_to_complete()
            return
        await asyncio.gather(super()._wait_tasks_to_complete(),
                             self._grpc.stop(self.config.timeout_graceful_shutdown))

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self._state is not None:
            self._state.shutting_down = True
        super().handle_exit(sig, frame)
        # uvicorn re-raises a captured signal after draining; SIGTERM is the normal way a
        # container is stopped, so a drained SIGTERM exits 0 (also as PID 1)
        self._captured_signals = [s for s in self._captured_signals if s != signal.SIGTERM]


def serve(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT. With ``workers > 1`` each worker builds its own app from
    the environment (``MODELPORT_*``), which the caller has set from ``settings``."""
    if settings.log_file is not None and settings.log_max_bytes and settings.workers > 1:
        raise ConfigError("--log-max-bytes rotates the log in one process; with --workers > 1 "
                          "each worker would rotate on its own and lose lines: rotate with "
                          "logrotate instead (--log-max-bytes 0 reopens the moved file)")
    configure_logging(settings.log_level, log_file=settings.log_file,
                      max_bytes=settings.log_max_bytes, backups=settings.log_backups)
    common: dict[str, Any] = {
        "host": settings.host, "port": settings.port, "log_config": None, "access_log": False,
        "timeout_graceful_shutdown": settings.graceful_timeout_s, "server_header": False,
        "timeout_keep_alive": 5, "loop": "uvloop", "http": "httptools",
        "root_path": settings.root_path,
    }
    if settings.workers > 1:
        uvicorn.run("modelport.server.run:worker_app", factory=True,
                    workers=settings.workers, **common)
        return
    app: FastAPI = build_app(settings)
    state: AppState = app.state.modelport
    server = _Server(uvicorn.Config(app, **common), state, _grpc_door(state, reuse_port=False))
    server.run()
    if server.failure is not None:
        raise server.failure


def _grpc_door(state: AppState, *, reuse_port: bool) -> GrpcDoor | None:
    """The app's gRPC server (not started), or None when ``grpc_port`` is 0."""
    if not state.settings.grpc_port:
        return None
    from modelport.server.grpc.door import GrpcDoor

    # the default port is taken on a best-effort basis; one asked for must be had
    required = "grpc_port" in state.settings.model_fields_set
    return GrpcDoor(state, reuse_port=reuse_port, required=required)


def worker_app() -> FastAPI:
    """Factory for ``uvicorn --factory`` in worker processes: the app of
    :func:`~modelport.server.factory.app_from_env`, with its gRPC server run by the app's
    lifespan (the workers share the gRPC port as they share the HTTP one)."""
    app = app_from_env()
    state: AppState = app.state.modelport
    door = _grpc_door(state, reuse_port=True)
    if door is not None:
        state.background.append(door.run)
    return app
