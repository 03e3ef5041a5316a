"""The access log: one JSON line per answered request, HTTP and gRPC alike.

A line is ``{"ts", "level", "logger": "modelport.access", "msg": "request", "request_id",
"method", "path", "status", "latency_ms", "model", "version"}``, the same object
:class:`~modelport.server.logs.JsonFormatter` makes of any modelport record. Its level follows
the status: ``info`` below 400, ``warning`` for 4xx, ``error`` for 5xx.

Two settings trim the volume (a server answering 10,000 requests a second writes about
2 MB/s of access lines):

- ``access_log_level`` (``MODELPORT_ACCESS_LOG_LEVEL``, ``--access-log-level``): ``info``
  (every request, the default), ``warning`` (4xx and 5xx only), ``error`` (5xx only) or
  ``off``;
- ``access_log_sample`` (``MODELPORT_ACCESS_LOG_SAMPLE``, ``--access-log-sample``): the share
  of successful requests (status below 400) that get a line, 1.0 by default; failed ones are
  always written. A sampled line carries ``"sample_rate"`` so that counts read off the log can
  be scaled back.

The fast way: when the ``modelport`` logger writes through the handler
:func:`~modelport.server.logs.configure_logging` installed (stderr or ``--log-file`` without
size rotation), the line is formatted here with orjson, without a ``LogRecord``, and the lines
of one event-loop turn are written together, in order, in one ``write`` after the turn (a loaded
server answers many requests per turn; an idle one writes each line as it answers). With any
other handler (size rotation, handlers added by an embedding application, a level filter on
``modelport.access``), each line goes through :mod:`logging` as a record, as before.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Literal

import orjson

from modelport.server.logs import JsonFormatter, ReopeningFileHandler

__all__ = ["ACCESS_LEVELS", "AccessLog", "access_log"]

_NAME = "modelport.access"
_logger = logging.getLogger(_NAME)
_parent = logging.getLogger("modelport")
ACCESS_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
                 "off": logging.CRITICAL + 1}
AccessLevel = Literal["info", "warning", "error", "off"]


def _level_of(status: int) -> int:
    return logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR


_LEVEL_NAMES = {logging.INFO: "info", logging.WARNING: "warning", logging.ERROR: "error"}


class AccessLog:
    """Writes the access lines (see the module doc); one per process: :data:`access_log`."""

    def __init__(self) -> None:
        self.threshold = logging.INFO
        self.sample = 1.0
        self._pending: list[tuple[float, int, dict[str, Any]]] = []
        self._formatter = JsonFormatter()  # its timestamps, as every other line has them

    def configure(self, level: AccessLevel = "info", sample: float = 1.0) -> None:
        """Which lines to write: ``level`` (the least severe written) and the share of
        successful requests sampled."""
        if level not in ACCESS_LEVELS:
            raise ValueError(f"access log level must be one of {', '.join(ACCESS_LEVELS)}, "
                             f"got {level!r}")
        if not 0.0 <= sample <= 1.0:
            raise ValueError(f"access log sample must be between 0 and 1, got {sample}")
        self.threshold, self.sample = ACCESS_LEVELS[level], sample

    def request(self, method: str, path: str, status: int, seconds: float, *,
                request_id: str, model: str | None, version: str | None) -> None:
        """One answered request."""
        level = _level_of(status)
        if level < self.threshold:
            return
        sample = self.sample
        if level == logging.INFO and sample < 1.0 and random.random() >= sample:
            return
        if not _logger.isEnabledFor(level):
            return
        fields: dict[str, Any] = {
            "request_id": request_id, "method": method, "path": path, "status": status,
            "latency_ms": round(seconds * 1000, 3), "model": model, "version": version}
        if sample < 1.0 and level == logging.INFO:
            fields["sample_rate"] = sample
        if _direct_handler(level) is None:
            _write_record(level, fields, time.time())
            return
        pending = self._pending
        pending.append((time.time(), level, fields))
        if len(pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop running here: write it now
                self.flush()

    def flush(self) -> None:
        """Write the lines held for this loop turn (also called at shutdown)."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        handler = _direct_handler(logging.INFO)
        if handler is None:  # the configuration changed since: write them as records
            for created, level, fields in pending:
                _write_record(level, fields, created)
            return
        text = "".join([self._line(*held) for held in pending])
        handler.acquire()
        try:
            if isinstance(handler, ReopeningFileHandler):
                handler.prepare_write()
            stream = handler.stream
            stream.write(text)
            stream.flush()
        except Exception:  # as logging does: a failing log write never fails a request
            handler.handleError(_logger.makeRecord(_NAME, logging.INFO, "", 0, "request",
                                                   (), None))
        finally:
            handler.release()

    def _line(self, created: float, level: int, fields: dict[str, Any]) -> str:
        """The line JsonFormatter would make of the record (same keys, same order)."""
        return orjson.dumps({"ts": self._formatter.stamp(created),
                             "level": _LEVEL_NAMES[level], "logger": _NAME, "msg": "request",
                             **fields}, default=str).decode() + "\n"


def _write_record(level: int, fields: dict[str, Any], created: float) -> None:
    """The line as a log record, through the configured handlers (makeRecord + handle is what
    Logger.info does, minus the stack walk that finds the caller, unused by the formatter)."""
    record = _logger.makeRecord(_NAME, level, "", 0, "request", (), None,
                                extra={"fields": fields})
    record.created, record.msecs = created, int((created - int(created)) * 1000)
    _logger.handle(record)


def _direct_handler(level: int) -> logging.StreamHandler[Any] | None:
    """The one handler modelport's access lines end in, when it is one that the fast way
    writes to exactly as :mod:`logging` would (see the module doc); else None."""
    if _logger.handlers or _logger.filters or _parent.filters or _logger.propagate is False:
        return None
    handlers = _parent.handlers
    if len(handlers) != 1 or _parent.propagate:
        return None
    handler = handlers[0]
    if type(handler) is not logging.StreamHandler and type(handler) is not ReopeningFileHandler:
        return None
    if handler.filters or handler.level > level or type(handler.formatter) is not JsonFormatter:
        return None
    assert isinstance(handler, logging.StreamHandler)
    return handler


access_log = AccessLog()
"""The process's access log (the edge and the gRPC servicer write to it)."""
