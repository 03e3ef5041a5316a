"""Run the server with uvicorn; SIGTERM drains in-flight requests, then exits 0."""

from __future__ import annotations

import signal
from typing import Any

import uvicorn
from fastapi import FastAPI

from modelport.config import Settings
from modelport.server.factory import build_app
from modelport.server.logs import configure_logging
from modelport.server.state import AppState

__all__ = ["serve"]


class _Server(uvicorn.Server):
    """Marks the app not-ready the moment a shutdown signal arrives, so load balancers stop
    sending traffic while in-flight requests finish."""

    def __init__(self, config: uvicorn.Config, state: AppState | None) -> None:
        super().__init__(config)
        self._state = state

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
    configure_logging(settings.log_level)
    common: dict[str, Any] = {
        "host": settings.host, "port": settings.port, "log_config": None, "access_log": False,
        "timeout_graceful_shutdown": settings.graceful_timeout_s, "server_header": False,
        "timeout_keep_alive": 5, "loop": "uvloop", "http": "httptools",
    }
    if settings.workers > 1:
        uvicorn.run("modelport.server.factory:app_from_env", factory=True,
                    workers=settings.workers, **common)
        return
    app: FastAPI = build_app(settings)
    server = _Server(uvicorn.Config(app, **common), app.state.modelport)
    server.run()
