"""Load tests against a model server: realistic bodies, open or closed loop, several processes.

Request bodies come from the model's signature (fetched from the server: ``GET /models/{m}``,
else the V2 metadata at ``GET /v2/models/{m}``) with values sampled like real traffic (a known
category, numbers spread around the example), or from rows of a data file.

*Open loop* sends at a fixed arrival rate whatever the server does, and measures each latency
from the time the request *should* have been sent, so a stalled server cannot hide its stall
by slowing the generator down (coordinated omission). *Closed loop* keeps a fixed number of
requests in flight. Either way the load comes from several processes (each an asyncio loop
with httpx) so that the generator is not the bottleneck; the warm-up is not measured, and the
per-process histograms are merged exactly.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from modelport.errors import ConfigError, ModelportError
from modelport.signature import Feature, Signature
from modelport.tools.loadtest_report import Histogram, LoadReport, latency_summary

__all__ = ["LoadPlan", "Progress", "Target", "discover", "run", "sample_records"]

_V2_OF = {"float": "FP64", "int": "INT64", "bool": "BOOL", "string": "BYTES"}
_POOL = 512  # distinct bodies per process


@dataclass(frozen=True)
class LoadPlan:
    """What load to put on which server for how long."""

    url: str
    model: str | None = None
    rps: float | None = None
    concurrency: int | None = None
    duration_s: float = 30.0
    warmup_s: float = 2.0
    processes: int = 2
    data: Path | None = None
    timeout_s: float = 10.0

    @property
    def mode(self) -> Literal["open", "closed"]:
        """Open loop (fixed arrival rate) when ``rps`` is set, else closed loop."""
        return "open" if self.rps is not None else "closed"


@dataclass(frozen=True)
class Target:
    """Where to POST, and a pool of request bodies to cycle through."""

    endpoint: str
    bodies: tuple[bytes, ...]


@dataclass(frozen=True)
class Progress:
    """Live counts while the test runs (warm-up included)."""

    elapsed_s: float
    total_s: float
    requests: int
    errors: int


def sample_records(sig: Signature, n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` requests shaped like real traffic: a known category, or numbers around the
    example value."""
    rng = np.random.default_rng(seed)
    cols = {f.name: _sample(f, n, rng) for f in sig.features}
    return [{k: v[i] for k, v in cols.items()} for i in range(n)]


def _sample(feat: Feature, n: int, rng: np.random.Generator) -> list[Any]:
    if feat.categories:
        return [feat.categories[i] for i in rng.integers(0, len(feat.categories), n)]
    if feat.dtype == "bool":
        return list((rng.random(n) < 0.5).tolist())
    if feat.dtype == "string":
        return [feat.example_value()] * n
    center = float(feat.example_value())
    values = rng.normal(center, max(abs(center) * 0.1, 1.0), n)
    rounded = np.round(values).astype(int) if feat.dtype == "int" else np.round(values, 3)
    return list(rounded.tolist())


def discover(plan: LoadPlan, *, seed: int = 0) -> Target:
    """The endpoint and the bodies: from the server's metadata about ``plan.model`` (native
    first, then V2), with rows from ``plan.data`` when given."""
    import httpx

    base = plan.url.rstrip("/")
    if plan.model is None and plan.data is not None:
        return Target(plan.url, tuple(_native(r) for r in _data_rows(plan.data)))
    with httpx.Client(timeout=plan.timeout_s) as client:
        try:
            model = plan.model or _only_model(client, base)
            plan = replace(plan, model=model)
            native = client.get(f"{base}/models/{plan.model}")
            v2 = None if native.status_code == 200 else client.get(f"{base}/v2/models/"
                                                                    f"{plan.model}")
        except httpx.HTTPError as exc:
            raise ConfigError(f"cannot reach {base}: {exc}") from exc
    if native.status_code == 200:
        sig = Signature.from_dict(native.json()["signature"])
        rows = _data_rows(plan.data) if plan.data else sample_records(sig, _POOL, seed=seed)
        return Target(f"{base}/models/{plan.model}/predict", tuple(_native(r) for r in rows))
    if v2 is not None and v2.status_code == 200:
        sig = _v2_signature(v2.json())
        rows = _data_rows(plan.data) if plan.data else sample_records(sig, _POOL, seed=seed)
        return Target(f"{base}/v2/models/{plan.model}/infer",
                      tuple(_v2_body(sig, r) for r in rows))
    raise ConfigError(f"model '{plan.model}' is not served at {base} (GET /models/"
                      f"{plan.model} and /v2/models/{plan.model} failed); pass --data FILE")


def _only_model(client: Any, base: str) -> str:
    """The one model ``base`` serves (native ``GET /models``, else V1 ``GET /v1/models``)."""
    names: list[str] = []
    native = client.get(f"{base}/models")
    if native.status_code == 200:
        names = [str(m["name"]) for m in native.json().get("models", [])]
    else:
        v1 = client.get(f"{base}/v1/models")
        if v1.status_code == 200:
            names = [str(m) for m in v1.json().get("models", [])]
    if len(names) == 1:
        return names[0]
    if not names:
        raise ConfigError(f"cannot tell which model {base} serves (GET /models answered "
                          f"{native.status_code}); give --model NAME or --data FILE")
    raise ConfigError(f"{base} serves {len(names)} models ({', '.join(sorted(names))}); "
                      "choose one with --model NAME")


def _data_rows(path: Path) -> list[dict[str, Any]]:
    from modelport.package import read_table

    frame = read_table(path).head(10_000)
    if frame.empty:
        raise ConfigError(f"'{path}' has no rows to send")
    rows: list[dict[str, Any]] = json.loads(frame.to_json(orient="records"))
    return rows


def _native(record: dict[str, Any]) -> bytes:
    return json.dumps({"features": record}).encode()


def _v2_signature(meta: dict[str, Any]) -> Signature:
    feats = [Feature(str(t["name"]), _v2_dtype(str(t.get("datatype", ""))))
             for t in meta.get("inputs", [])]
    if not feats:
        raise ConfigError("the server's V2 metadata lists no inputs; pass --data FILE")
    return Signature(tuple(feats))


def _v2_dtype(datatype: str) -> Literal["float", "int", "bool", "string"]:
    if datatype.startswith(("INT", "UINT")):
        return "int"
    return {"BOOL": "bool", "BYTES": "string"}.get(datatype, "float")  # type: ignore[return-value]


def _v2_body(sig: Signature, record: dict[str, Any]) -> bytes:
    inputs = [{"name": f.name, "datatype": _V2_OF[f.dtype], "shape": [1],
               "data": [record[f.name]]} for f in sig.features]
    return json.dumps({"inputs": inputs}).encode()


# -- running ----------------------------------------------------------------------------------


def run(plan: LoadPlan, *, on_progress: Callable[[Progress], None] | None = None) -> LoadReport:
    """Put ``plan``'s load on the server and measure it (without SLO verdicts)."""
    _check(plan)
    target = discover(plan)
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    results: Any = ctx.Queue()
    starts: Any = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(plan, target, k, starts, results), daemon=True)
             for k in range(plan.processes)]
    for p in procs:
        p.start()
    try:
        return _collect(plan, target, procs, starts, results, on_progress=on_progress)
    finally:
        for p in procs:
            p.join(timeout=plan.timeout_s + 5)
            if p.is_alive():
                p.terminate()


def _check(plan: LoadPlan) -> None:
    if (plan.rps is None) == (plan.concurrency is None):
        raise ConfigError("give exactly one of --rps (open loop) or --concurrency (closed loop)")
    if (plan.rps or 1) <= 0 or (plan.concurrency or 1) < 1 or plan.processes < 1:
        raise ConfigError("--rps, --concurrency and --processes must be positive")
    if plan.duration_s <= 0 or plan.warmup_s < 0:
        raise ConfigError("--duration must be positive and --warmup not negative")


def _collect(plan: LoadPlan, target: Target, procs: list[Any], starts: Any, results: Any, *,
             on_progress: Callable[[Progress], None] | None) -> LoadReport:
    for _ in procs:
        _expect(results, "ready", procs, 60.0)
    start = time.time() + 0.2
    for _ in procs:
        starts.put(start)
    total_s = plan.warmup_s + plan.duration_s
    live: dict[int, tuple[int, int]] = {}
    finals: list[dict[str, Any]] = []
    while len(finals) < len(procs):
        kind, k, data = _expect(results, None, procs, total_s + plan.timeout_s + 30)
        if kind == "final":
            finals.append(data)
        elif kind == "progress" and on_progress is not None:
            live[k] = data
            on_progress(Progress(min(time.time() - start, total_s), total_s,
                                 sum(n for n, _ in live.values()),
                                 sum(e for _, e in live.values())))
    return _report(plan, target, finals)


def _expect(results: Any, kind: str | None, procs: list[Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            item = results.get(timeout=0.5)
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in procs):
                raise ModelportError("a load-generating process died; see its error above") \
                    from None
            if time.monotonic() > deadline:
                raise ModelportError("the load-generating processes stopped answering") from None
            continue
        if item[0] == "error":
            raise ModelportError(f"a load-generating process failed: {item[2]}")
        if kind is None or item[0] == kind:
            return item


def _report(plan: LoadPlan, target: Target, finals: list[dict[str, Any]]) -> LoadReport:
    hist = Histogram()
    statuses: dict[str, int] = {}
    for data in finals:
        hist.merge(Histogram.from_dict(data["hist"]))
        for status, n in data["statuses"].items():
            statuses[status] = statuses.get(status, 0) + n
    load = plan.rps if plan.rps is not None else float(plan.concurrency or 0)
    return LoadReport(target.endpoint, plan.mode, load, plan.duration_s, hist.total,
                      dict(sorted(statuses.items())), latency_summary(hist), plan.processes)


def _worker(plan: LoadPlan, target: Target, k: int, starts: Any, results: Any) -> None:
    """One load-generating process: waits for the common start time, drives, reports."""
    try:
        results.put(("ready", k, None))
        start_wall = starts.get(timeout=120)
        start = time.monotonic() + (start_wall - time.time())
        final = asyncio.run(_drive(plan, target, k, start, results))
        results.put(("final", k, final))
    except Exception as exc:  # report, do not hang the parent
        results.put(("error", k, f"{type(exc).__name__}: {exc}"))


async def _drive(plan: LoadPlan, target: Target, k: int, start: float,
                 results: Any) -> dict[str, Any]:
    import httpx

    rec = _Recorder(start + plan.warmup_s, start + plan.warmup_s + plan.duration_s)
    share = _share(plan, k)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=plan.timeout_s, limits=limits) as client:
        send = _Sender(client, target, k, rec)
        ticker = asyncio.create_task(_tick(rec, k, results))
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        if plan.rps is not None:
            await _open_loop(send, start + k / plan.rps, share, rec.end)
        else:
            await asyncio.gather(*(_closed_user(send, rec.end) for _ in range(int(share))))
        ticker.cancel()
    return {"hist": rec.hist.to_dict(), "statuses": rec.statuses}


def _share(plan: LoadPlan, k: int) -> float:
    """This process's part: requests/s (open loop) or concurrent users (closed loop)."""
    if plan.rps is not None:
        return plan.rps / plan.processes
    total = plan.concurrency or 0
    return float(total // plan.processes + (1 if k < total % plan.processes else 0))


class _Recorder:
    """Counts of one process; only requests due inside the measured window are recorded."""

    def __init__(self, begin: float, end: float) -> None:
        self.begin, self.end = begin, end
        self.hist = Histogram()
        self.statuses: dict[str, int] = {}
        self.done = self.errors = 0

    def add(self, due: float, status: str, latency: float) -> None:
        self.done += 1
        self.errors += not status.startswith("2")
        if self.begin <= due < self.end:
            self.hist.record(latency)
            self.statuses[status] = self.statuses.get(status, 0) + 1


class _Sender:
    def __init__(self, client: Any, target: Target, k: int, rec: _Recorder) -> None:
        self.client, self.target, self.rec = client, target, rec
        self.i = k * 7919  # each process starts elsewhere in the pool

    async def __call__(self, due: float) -> None:
        import httpx

        body = self.target.bodies[self.i % len(self.target.bodies)]
        self.i += 1
        try:
            resp = await self.client.post(self.target.endpoint, content=body,
                                          headers={"content-type": "application/json"})
            status = str(resp.status_code)
        except httpx.TimeoutException:
            status = "timeout"
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        self.rec.add(due, status, time.monotonic() - due)


async def _open_loop(send: _Sender, first: float, rate: float, end: float) -> None:
    """Fire at fixed times; latency counts from the due time, not the actual send."""
    tasks: set[asyncio.Task[None]] = set()
    i = 0
    while (due := first + i / rate) < end:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        task = asyncio.create_task(send(due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
    if tasks:
        await asyncio.wait(tasks)


async def _closed_user(send: _Sender, end: float) -> None:
    while (now := time.monotonic()) < end:
        await send(now)


async def _tick(rec: _Recorder, k: int, results: Any) -> None:
    while True:
        await asyncio.sleep(0.5)
        results.put(("progress", k, (rec.done, rec.errors)))
