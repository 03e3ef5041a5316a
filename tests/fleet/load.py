"""Load through the balancer with ``wrk`` (C, keeps up at c=32 on a small machine), and
exact-count request bursts with httpx for the checks that count rows."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = ["WrkResult", "WrkRun", "find_wrk", "send_exactly"]

_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[BODY]==]
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('\\nWRK-RESULT {"requests": %d, "duration_us": %d, "connect": %d, '
    .. '"read": %d, "write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, '
    .. '"max_us": %d}\\n', summary.requests, summary.duration, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
"""


_VARY_LUA = """local template = [==[BODY]==]
local counter = 0
local threads = 0
setup = function(thread)
  thread:set("offset", threads * 1000000000)
  threads = threads + 1
end
request = function()
  counter = counter + 1
  local body = string.gsub(template, "__VARY__", tostring(offset + counter), 1)
  return wrk.format(nil, nil, nil, body)
end
"""


def find_wrk() -> str | None:
    """wrk from PATH (``scripts/install-verify-tools`` installs it)."""
    return shutil.which("wrk")


@dataclass(frozen=True)
class WrkResult:
    """What wrk counted: responses, and every kind of failure it saw."""

    requests: int
    duration_s: float
    connect: int
    read: int
    write: int
    status: int
    """Responses that were not 2xx/3xx."""
    timeout: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def failed(self) -> int:
        """Requests that got no successful answer."""
        return self.connect + self.read + self.write + self.status + self.timeout

    @property
    def rps(self) -> float:
        """Responses per second."""
        return self.requests / self.duration_s if self.duration_s else 0.0


def _script(body: dict[str, Any], vary: str | None) -> str:
    """wrk's Lua: one body, or (``vary``: a feature of ``body["features"]``) every request
    with its own whole number in that feature, so no two requests share a row."""
    if vary is None:
        return _LUA.replace("BODY", json.dumps(body))
    text = json.dumps({**body, "features": {**body["features"], vary: "__VARY__"}})
    return _LUA.replace("wrk.body = [==[BODY]==]\n", "") + _VARY_LUA.replace(
        "BODY", text.replace('"__VARY__"', "__VARY__"))


class WrkRun:
    """wrk in the background against ``url``; :meth:`stop` ends it (SIGINT: it reports what
    it counted so far) or :meth:`wait` lets it finish its ``duration_s``."""

    def __init__(self, url: str, body: dict[str, Any], *, connections: int,
                 duration_s: float, threads: int = 2, timeout_s: float = 10,
                 vary: str | None = None) -> None:
        wrk = find_wrk()
        if wrk is None:
            raise RuntimeError("wrk is not installed: run scripts/install-verify-tools")
        self._dir = tempfile.TemporaryDirectory(prefix="modelport-wrk-")
        script = Path(self._dir.name) / "post.lua"
        script.write_text(_script(body, vary))
        self.proc = subprocess.Popen(
            [wrk, "-t", str(min(threads, connections)), "-c", str(connections),
             "-d", f"{duration_s:.0f}s", "--timeout", f"{timeout_s:.0f}s", "-s", str(script),
             url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self) -> WrkResult:
        """End the run now and return its counts."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.wait()

    def wait(self, timeout_s: float = 120) -> WrkResult:
        """Let the run finish and return its counts."""
        out, _ = self.proc.communicate(timeout=timeout_s)
        self._dir.cleanup()
        line = next((ln for ln in out.splitlines() if ln.startswith("WRK-RESULT ")), None)
        if line is None:
            raise RuntimeError(f"wrk printed no result:\n{out}")
        d = json.loads(line.removeprefix("WRK-RESULT "))
        return WrkResult(d["requests"], d["duration_us"] / 1e6, d["connect"], d["read"],
                         d["write"], d["status"], d["timeout"], d["p50_us"] / 1e3,
                         d["p99_us"] / 1e3, d["max_us"] / 1e3)


def send_exactly(url: str, bodies: list[dict[str, Any]], *, concurrency: int = 8,
                 headers: dict[str, str] | None = None) -> list[httpx.Response]:
    """POST every body once (``concurrency`` at a time); the responses, in order."""

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(timeout=30, limits=limits, headers=headers) as client:
            gate = asyncio.Semaphore(concurrency)

            async def one(body: dict[str, Any]) -> httpx.Response:
                async with gate:
                    return await client.post(url, json=body)

            return list(await asyncio.gather(*(one(b) for b in bodies)))

    return asyncio.run(run())
