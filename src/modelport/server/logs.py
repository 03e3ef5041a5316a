"""Structured logs: one JSON object per line (access log and application log alike).

On stderr by default (what a container wants); with a file (``--log-file``), either rotated by
size by the logging library's ``RotatingFileHandler`` (``--log-max-bytes``, ``--log-backups``:
a record never straddles two files), or, with no size limit, left to logrotate: the
``WatchedFileHandler`` reopens the path when it was moved away, and SIGHUP (logrotate's
``postrotate``) makes the next record reopen it too. Each record is one ``write`` of a whole
line under the handler's lock, so concurrent requests never interleave or split lines.
"""

from __future__ import annotations

import logging
import logging.config
import logging.handlers
import signal
import threading
import time
from pathlib import Path
from typing import Any

import orjson

__all__ = ["JsonFormatter", "ReopeningFileHandler", "configure_logging"]


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...fields}``; ``extra={"fields": {...}}`` merges in."""

    _second = -1
    _stamp = ""

    def stamp(self, created: float) -> str:
        """ISO 8601 UTC with milliseconds of a ``time.time()`` instant; the part up to the
        second is formatted once per second (an access line per request would otherwise pay
        strftime each time)."""
        second = int(created)
        if second != self._second:
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self.stamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class ReopeningFileHandler(logging.handlers.WatchedFileHandler):
    """A ``WatchedFileHandler`` that also reopens its file at the next record after
    :meth:`request_reopen` (called from the SIGHUP handler, which must not do I/O itself: it
    may interrupt a write of this very handler)."""

    _requested = False

    def request_reopen(self) -> None:
        """Reopen the file before writing the next record."""
        self._requested = True

    def prepare_write(self) -> None:
        """Reopen the file when asked to or when it was moved away (call under the handler's
        lock, before writing to ``stream`` directly, as the access log does)."""
        self._reopen_if_requested()
        self.reopenIfNeeded()

    def _reopen_if_requested(self) -> None:
        if self._requested:
            self._requested = False
            if self.stream is not None:
                self.stream.close()
            self.stream = self._open()
            self._statstream()

    def emit(self, record: logging.LogRecord) -> None:
        self._reopen_if_requested()
        super().emit(record)


def configure_logging(level: str = "info", *, log_file: Path | None = None,
                      max_bytes: int = 0, backups: int = 5) -> None:
    """JSON lines for modelport and uvicorn, on stderr or in ``log_file`` (rotated by size when
    ``max_bytes`` > 0, else reopened when moved or on SIGHUP); uvicorn's own access log is off
    (the edge middleware writes a richer one). Records skip the thread and process names,
    which the JSON lines do not show and every access line would otherwise look up."""
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = _handler(log_file, max_bytes, backups)
    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"out": handler},
        "loggers": {
            "modelport": {"handlers": ["out"], "level": level.upper(), "propagate": False},
            "uvicorn": {"handlers": ["out"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    })
    if log_file is not None and max_bytes == 0:
        _reopen_on_sighup()


def _handler(log_file: Path | None, max_bytes: int, backups: int) -> dict[str, Any]:
    if log_file is None:
        return {"class": "logging.StreamHandler", "formatter": "json",
                "stream": "ext://sys.stderr"}
    log_file.parent.mkdir(parents=True, exist_ok=True)
    if max_bytes > 0:
        return {"class": "logging.handlers.RotatingFileHandler", "formatter": "json",
                "filename": str(log_file), "maxBytes": max_bytes, "backupCount": backups,
                "encoding": "utf-8"}
    return {"()": ReopeningFileHandler, "formatter": "json", "filename": str(log_file),
            "encoding": "utf-8"}


def _reopen_on_sighup() -> None:
    """SIGHUP (logrotate's ``postrotate``) reopens the log file instead of ending the server."""
    if threading.current_thread() is not threading.main_thread():
        return
    handlers = [h for h in logging.getLogger("modelport").handlers
                if isinstance(h, ReopeningFileHandler)]

    def reopen(_signum: int, _frame: Any) -> None:
        for h in handlers:
            h.request_reopen()

    signal.signal(signal.SIGHUP, reopen)
