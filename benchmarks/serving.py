"""HTTP serving throughput: modelport against a tutorial FastAPI server and two floors.

    .venv/bin/python benchmarks/serving.py [--quick] [--duration S] [--against REF]

One run, one machine, in this order:

1. trains the issue's model (``apps/heart_model.py``: ``Pipeline(StandardScaler,
   GradientBoostingClassifier(100))`` on the 13 heart features of the bundled example's
   synthetic data) into a temporary folder, packs it and converts it to ONNX with
   ``modelport optimize``;
2. starts five server processes, each pinned to CPU 0 with ``taskset`` (``wrk`` gets CPU 1; on
   a one-core machine nothing is pinned, and the table says so), all on uvicorn with uvloop
   and httptools:
   - ``baseline``: the tutorial app (``benchmarks/apps/tutorial.py``: pydantic, sync endpoint,
     ``predict`` + ``predict_proba``),
   - ``floor``: the same FastAPI stack returning a constant (``benchmarks/apps/floor.py``),
   - ``bare``: the wire floor, a bare ASGI callable that ``json.loads`` the body and answers a
     constant (``benchmarks/apps/bare.py``; no framework, no access log),
   - ``modelport-native``: ``modelport serve PKG --runtime native`` (scikit-learn),
   - ``modelport-onnx``: ``modelport serve PKG --runtime onnx``, driven twice: on ``/predict``
     with native bodies, and as ``modelport-onnx-v2`` (the same process) on
     ``/v2/models/heart/infer`` with V2 JSON bodies (one tensor per feature, shape ``[n]``, of
     the datatype ``GET /v2/models/heart`` gives it: ``INT64`` or ``FP64``);
   every server but ``bare`` writes one access-log line per request (uvicorn's for the FastAPI
   apps, modelport's JSON line for modelport) to a file;
3. checks every server's answers against the model itself (the floors only for a valid body);
4. times, in this process on the servers' CPU, the parts of a modelport request that run
   modelport's own functions on the same bodies (``request_split.py``: parse, validate,
   encode, metrics, log);
5. drives each with ``wrk`` (found on PATH or installed with ``apt-get install -y wrk``):
   single-row bodies at concurrency 1, 8 and 64, then 100-row bodies at concurrency 8. Servers
   take turns workload by workload, so load from other processes falls on all of them alike;
   the modelport servers' model and queue time per request come from the growth of their
   ``modelport_inference_duration_seconds`` and ``modelport_queue_delay_seconds`` sums;
6. prints req/s, rows/s, p50, p99, errors and ratios to the baseline, the FastAPI floor
   (``x floor``) and the bare floor (``x bare``), the RSS of each server after the load;
   the split of the ONNX server's µs per request (native and V2, at 1 row c=64, 1 row c=1 and
   100 rows c=8) into HTTP (bare's µs per request in the same workload; at c=1 its p50),
   parse, validate, queue, model, encode, metrics, log and other (the residual); issue 19's
   targets for the ONNX server, native and V2 alike (1 row c=64: req/s >= 0.5x bare's; 1 row
   c=1: p50 <= 1.5x bare's; 100 rows c=8: rows/s >= 0.65x the FastAPI floor's, and the time
   per request outside the model <= 1.3x bare's whole request), then issue 3's targets;
   writes it all as JSON into ``benchmarks/results/``.

``--against REF`` (a commit, branch or tag) also serves the same package with the code of REF
(checked out with ``git worktree`` into the temporary folder), as ``modelport-native@REF``,
``modelport-onnx@REF`` and ``modelport-onnx-v2@REF``, in the same rounds, and prints each
cell's ratio of this tree to REF: the before/after comparison of a change, measured in one run.

Every cell runs in each of 3 rounds (5 s each, after a 1 s warm-up) and the table shows the
medians: a full run takes about 8 minutes. ``--quick`` runs one round of 3 s cells.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "benchmarks" / "apps"
RESULTS = ROOT / "benchmarks" / "results"
V2_INFER = "/v2/models/heart/infer"
BIN = Path(sys.executable).parent
WORKLOADS = [("1 row, c=1", 1, 1), ("1 row, c=8", 8, 1), ("1 row, c=64", 64, 1),
             ("100 rows, c=8", 8, 100)]
LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[BODY]==]
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('\\n{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, '
    .. '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class Server:
    """One server under test: how to start it and where it takes one row and a batch."""

    name: str
    argv: list[str]
    single: str
    batch: str
    exact: bool
    """Whether its answers must match the model (the floor answers a constant)."""
    tolerance: float = 1e-9
    env: dict[str, str] = field(default_factory=dict)
    protocol: str = "native"
    """Its request bodies: ``native`` (``{"features": ...}``, ``{"instances": ...}``) or ``v2``
    (Open Inference Protocol JSON tensors)."""
    shares: str | None = None
    """The server whose process this one drives on other paths (None: a process of its own)."""
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def url(self, path: str) -> str:
        """Full URL of ``path`` on this server."""
        return f"http://127.0.0.1:{self.port}{path}"


@dataclass(frozen=True)
class Cell:
    """One wrk run against one server."""

    server: str
    workload: str
    concurrency: int
    rows_per_request: int
    req_s: float
    rows_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    model_us: float | None = None
    """Model time per request (modelport servers: from their inference-duration metric)."""
    queue_us: float | None = None
    """Batcher queue time per request (modelport servers: from their queue-delay metric)."""


def main() -> None:
    """Run the benchmark and print its tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round of 3 s cells")
    parser.add_argument("--duration", type=int, help="whole seconds per cell (default 5)")
    parser.add_argument("--rounds", type=int, help="rounds over every cell (default 3)")
    parser.add_argument("--against", metavar="REF",
                        help="also serve the code of this git commit/branch: before vs after")
    args = parser.parse_args()
    duration = float(max(1, args.duration or (3 if args.quick else 5)))
    rounds = max(1, args.rounds or (1 if args.quick else 3))
    wrk = find_wrk()
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, load_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    with tempfile.TemporaryDirectory(prefix="mp-serving-") as name:
        tmp = Path(name)
        pkg, model_path, rows = prepare(tmp)
        servers = make_servers(pkg, model_path)
        if args.against:
            servers += before_servers(servers, checkout(args.against, tmp / "before"),
                                      args.against)
        try:
            for s in servers:
                if s.shares is None:
                    start(s, server_cpu, tmp)
            share_processes(servers)
            for s in servers:
                wait_ready(s)
            bodies = make_bodies(servers, rows)
            check_answers(servers, model_path, rows, bodies)
            parts = measure_parts(pkg, bodies, server_cpu, tmp)
            runs = [drive(servers, wrk, bodies, duration=duration, cpu=load_cpu, tmp=tmp,
                          title=f"round {r + 1} of {rounds}") for r in range(rounds)]
            rss = {s.name: rss_mb(s) for s in servers if s.shares is None}
        finally:
            for s in servers:
                if s.shares is None:
                    stop(s)
            if args.against:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                str(tmp / "before")], check=False, capture_output=True)
    report(runs, rss, parts, duration=duration, pinned=server_cpu is not None, cpus=len(cpus),
           against=args.against)


def checkout(ref: str, where: Path) -> Path:
    """The source folder of ``ref``, checked out (detached) into ``where``."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), ref],
                   check=True, capture_output=True)
    return where / "src"


def before_servers(servers: list[Server], src: Path, ref: str) -> list[Server]:
    """The modelport servers again, running the code in ``src`` (the ``--against`` ref)."""
    return [replace(s, name=f"{s.name}@{ref}", env={**s.env, "PYTHONPATH": str(src)},
                    shares=s.shares and f"{s.shares}@{ref}")
            for s in servers if s.name.startswith("modelport")]


def find_wrk() -> str:
    """The ``wrk`` binary, installed from Debian's package when missing and we are root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk not found: apt-get install -y wrk", flush=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=False,
                       stdout=subprocess.DEVNULL)
        found = shutil.which("wrk")
    if not found:
        sys.exit("wrk is needed: install the Debian/Ubuntu package 'wrk' (apt-get install wrk)")
    return found


def prepare(tmp: Path) -> tuple[Path, Path, list[list[float]]]:
    """Train the issue's model, pack it, convert it to ONNX; return package, joblib file, rows."""
    import pandas as pd

    from modelport.package import pack
    from modelport.tools.optimize import optimize

    sys.path.insert(0, str(APPS))
    from heart_model import train  # type: ignore[import-not-found, unused-ignore]

    model_path, csv, features = train(tmp / "heart")
    pack(model_path, tmp / "pkg", name="heart", reference=csv, target="condition")
    parity = optimize(tmp / "pkg", data=csv).parity
    print(f"ONNX parity on {parity.rows} rows: max |dp| {parity.max_abs_diff:.2g}, labels "
          f"differing {parity.label_mismatches}", flush=True)
    rows: list[list[float]] = json.loads(pd.read_csv(csv)[features].head(100).to_json(
        orient="values"))
    return tmp / "pkg", model_path, rows


def make_servers(pkg: Path, model_path: Path) -> list[Server]:
    """The servers, in table order (``modelport-onnx-v2``: the ONNX server's process again,
    driven with V2 JSON tensors on ``/v2/models/heart/infer``)."""
    uvicorn = [str(BIN / "python"), "-m", "uvicorn", "--app-dir", str(APPS), "--host",
               "127.0.0.1", "--loop", "uvloop", "--http", "httptools"]
    modelport = [str(BIN / "modelport"), "serve", str(pkg), "--host", "127.0.0.1"]
    this_tree = {"PYTHONPATH": str(ROOT / "src")}  # this checkout's code, whatever is installed
    return [
        Server("baseline", [*uvicorn, "tutorial:app"], "/predict", "/predict/batch", True,
               env={"BENCH_MODEL": str(model_path)}),
        Server("floor", [*uvicorn, "floor:app"], "/predict", "/predict/batch", False),
        Server("bare", [*uvicorn, "--no-access-log", "bare:app"], "/predict", "/predict/batch",
               False),
        Server("modelport-native", [*modelport, "--runtime", "native"], "/predict", "/predict",
               True, env=this_tree),
        Server("modelport-onnx", [*modelport, "--runtime", "onnx"], "/predict", "/predict", True,
               tolerance=1e-4, env=this_tree),
        Server("modelport-onnx-v2", [], V2_INFER, V2_INFER, True, tolerance=1e-4,
               protocol="v2", shares="modelport-onnx"),
    ]


def share_processes(servers: list[Server]) -> None:
    """Point every server that shares another's process at that process (port and pid)."""
    by = {s.name: s for s in servers}
    for s in servers:
        if s.shares is not None:
            s.port, s.proc = by[s.shares].port, by[s.shares].proc


def make_bodies(servers: list[Server], rows: list[list[float]]) -> dict[tuple[str, int], str]:
    """The request bodies of each protocol for 1 and 100 rows. V2: one tensor per feature,
    shape ``[n]``, of the datatype the served model's V2 metadata (``GET /v2/models/heart``)
    gives it (``INT64`` values written as integers)."""
    bodies = {("native", 1): json.dumps({"features": rows[0]}),
              ("native", len(rows)): json.dumps({"instances": rows})}
    v2 = next((s for s in servers if s.protocol == "v2"), None)
    if v2 is None:
        return bodies
    with urllib.request.urlopen(v2.url(V2_INFER.removesuffix("/infer")), timeout=10) as resp:
        inputs = json.loads(resp.read())["inputs"]
    for n in (1, len(rows)):
        columns = list(zip(*rows[:n], strict=True))
        if len(columns) != len(inputs):
            sys.exit(f"the model takes {len(inputs)} inputs, the rows have {len(columns)}")
        bodies[("v2", n)] = json.dumps({"inputs": [
            {"name": spec["name"], "shape": [n], "datatype": spec["datatype"],
             "data": [int(v) for v in col] if spec["datatype"] == "INT64" else list(col)}
            for spec, col in zip(inputs, columns, strict=True)]})
    return bodies


def measure_parts(pkg: Path, bodies: dict[tuple[str, int], str], cpu: int | None,
                  tmp: Path) -> dict[tuple[str, int], dict[str, float]]:
    """The parts of a request timed in this process (``request_split``), on the servers' CPU
    (they are idle now), for every body."""
    from request_split import time_parts

    print("timing parse, validate, encode, metrics and log in process ...", flush=True)
    affinity = os.sched_getaffinity(0)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    try:
        return time_parts(pkg, {k: v.encode() for k, v in bodies.items()}, tmp / "access.log")
    finally:
        os.sched_setaffinity(0, affinity)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(server: Server, cpu: int | None, tmp: Path) -> None:
    """Start ``server`` (pinned to ``cpu`` when given), its output into a log file."""
    server.port = free_port()
    argv = [*server.argv, "--port", str(server.port)]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    log = (tmp / f"{server.name}.log").open("wb")
    env = {**os.environ, **server.env}
    server.proc = subprocess.Popen(argv, cwd=tmp, env=env, stdout=log, stderr=log)
    log.close()


def wait_ready(server: Server, timeout_s: float = 120.0) -> None:
    """Poll the server's health route until it answers 200."""
    path = "/ready" if server.name.startswith("modelport") else "/health"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.proc is not None
        if server.proc.poll() is not None:
            sys.exit(f"{server.name} exited with {server.proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(server.url(path), timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"{server.name} was not ready within {timeout_s:.0f} s")


def stop(server: Server) -> None:
    """SIGTERM the server we started and wait for it."""
    if server.proc is not None and server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(20)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


def post(url: str, body: str) -> Any:
    """POST the JSON text ``body``; the decoded answer (non-200 is an error)."""
    req = urllib.request.Request(url, body.encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def answers(doc: dict[str, Any]) -> tuple[list[Any], list[list[float]]]:
    """Labels and probabilities from any of the servers' response shapes (V2 included)."""
    if "outputs" in doc:
        import numpy as np

        out = {o["name"]: o for o in doc["outputs"]}
        proba = out["predict_proba"]
        return (list(out["predict"]["data"]),
                np.reshape(proba["data"], proba["shape"]).tolist())
    if "prediction" in doc:
        return [doc["prediction"]], [doc["probabilities"]]
    return list(doc["predictions"]), list(doc["probabilities"])


def check_answers(servers: list[Server], model_path: Path, rows: list[list[float]],
                  bodies: dict[tuple[str, int], str]) -> None:
    """Every server answers one row and 100 rows as the model does (the floors: validly)."""
    import joblib
    import numpy as np
    import pandas as pd

    model = joblib.load(model_path)
    frame = pd.DataFrame(rows, columns=model.feature_names_in_)
    want_labels, want_proba = model.predict(frame).tolist(), model.predict_proba(frame)
    for s in servers:
        for path, n in ((s.single, 1), (s.batch, len(rows))):
            labels, proba = answers(post(s.url(path), bodies[(s.protocol, n)]))
            if len(labels) != n or len(proba) != n:
                sys.exit(f"{s.name} {path}: {len(labels)} answers for {n} rows")
            diff = float(np.max(np.abs(np.asarray(proba) - want_proba[:n])))
            if s.exact and (labels != want_labels[:n] or diff > s.tolerance):
                sys.exit(f"{s.name} {path}: answers differ from the model (max |dp| {diff:.3g})")
        print(f"checked {s.name}: " + ("answers match the model" if s.exact
                                      else "valid answers (a constant)"), flush=True)


def drive(servers: list[Server], wrk: str, bodies: dict[tuple[str, int], str], *,
          duration: float, cpu: int | None, tmp: Path, title: str) -> list[Cell]:
    """Every workload against every server, servers taking turns."""
    print(f"-- {title}", flush=True)
    cells = []
    for label, conc, n_rows in WORKLOADS:
        for s in servers:
            script = tmp / f"{s.name}-{n_rows}.lua"
            script.write_text(LUA.replace("BODY", bodies[(s.protocol, n_rows)]))
            url = s.url(s.single if n_rows == 1 else s.batch)
            run_wrk(wrk, url, script, conc=conc, duration=1, cpu=cpu)  # warm-up
            modelport = s.name.startswith("modelport")
            before = histogram_sums(s.url("/metrics")) if modelport else None
            out = run_wrk(wrk, url, script, conc=conc, duration=duration, cpu=cpu)
            c = cell(s.name, label, conc, n_rows, out)
            if before is not None:
                after, n = histogram_sums(s.url("/metrics")), max(1, out["requests"])
                c = replace(c, model_us=(after[0] - before[0]) / n * 1e6,
                            queue_us=(after[1] - before[1]) / n * 1e6)
            cells.append(c)
            model = (f"  model {c.model_us:6.1f} us/req  queue {c.queue_us:6.1f} us/req"
                     if c.model_us is not None and c.queue_us is not None else "")
            print(f"{label:14} {s.name:17} {c.req_s:9.0f} req/s  p50 {c.p50_ms:7.2f} ms  "
                  f"p99 {c.p99_ms:7.2f} ms  errors {c.errors}{model}", flush=True)
    return cells


def histogram_sums(metrics_url: str) -> tuple[float, float]:
    """Seconds a modelport server has spent so far in model calls and in its batchers' queues:
    the sums of its ``modelport_inference_duration_seconds`` and
    ``modelport_queue_delay_seconds`` histograms (every model and version)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(metrics_url, timeout=10) as resp:
        text = resp.read().decode()
    sums = dict.fromkeys(("modelport_inference_duration_seconds",
                          "modelport_queue_delay_seconds"), 0.0)
    for family in text_string_to_metric_families(text):
        if family.name in sums:
            sums[family.name] += sum(sample.value for sample in family.samples
                                     if sample.name.endswith("_sum"))
    return sums["modelport_inference_duration_seconds"], sums["modelport_queue_delay_seconds"]


def run_wrk(wrk: str, url: str, script: Path, *, conc: int, duration: float,
            cpu: int | None) -> dict[str, Any]:
    """One wrk run; the summary its Lua ``done`` printed."""
    argv = [wrk, "-t1", f"-c{conc}", f"-d{duration:g}s", "--timeout", "5s", "-s", str(script),
            url]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    line = [x for x in out.splitlines() if x.startswith("{")][-1]
    result: dict[str, Any] = json.loads(line)
    return result


def median_cells(runs: list[list[Cell]]) -> list[Cell]:
    """Per server and workload: the median req/s, p50 and p99 over the rounds (each median
    taken on its own) and the errors of all rounds summed."""
    out = []
    for cells in zip(*runs, strict=True):
        first = cells[0]
        req_s = statistics.median(c.req_s for c in cells)
        model = [c.model_us for c in cells if c.model_us is not None]
        queue = [c.queue_us for c in cells if c.queue_us is not None]
        out.append(Cell(first.server, first.workload, first.concurrency, first.rows_per_request,
                        req_s, req_s * first.rows_per_request,
                        statistics.median(c.p50_ms for c in cells),
                        statistics.median(c.p99_ms for c in cells),
                        sum(c.errors for c in cells),
                        statistics.median(model) if model else None,
                        statistics.median(queue) if queue else None))
    return out


def cell(server: str, label: str, conc: int, rows: int, out: dict[str, Any]) -> Cell:
    """A table cell from wrk's summary."""
    seconds = out["duration_us"] / 1e6
    req_s = out["requests"] / seconds
    errors = sum(out[k] for k in ("connect", "read", "write", "status", "timeout"))
    return Cell(server, label, conc, rows, req_s, req_s * rows, out["p50_us"] / 1000,
                out["p99_us"] / 1000, errors)


def rss_mb(server: Server) -> float:
    """Resident memory of the server process, MiB (from /proc)."""
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def report(runs: list[list[Cell]], rss: dict[str, float],
           parts: dict[tuple[str, int], dict[str, float]], *, duration: float, pinned: bool,
           cpus: int, against: str | None = None) -> None:
    """Print the median table, the split and the targets; write the JSON (with every round's
    cells)."""
    cells = median_cells(runs)
    where = ("servers on CPU 0, wrk on CPU 1" if pinned else
             f"NOT pinned: only {cpus} core available, servers and wrk share it")
    print(f"\nmedians of {len(runs)} round(s) of {duration:g} s per cell; {where}\n")
    print(f"{'workload':17} {'server':17} {'req/s':>8} {'rows/s':>9} {'p50 ms':>7} {'p99 ms':>8} "
          f"{'errors':>6} {'x base':>7} {'x floor':>7} {'x bare':>7} {'us/req':>7} "
          f"{'model':>7}")
    by = {(c.workload, c.server): c for c in cells}
    for c in cells:
        base, floor, bare = (by[(c.workload, s)] for s in ("baseline", "floor", "bare"))
        model = f"{c.model_us:7.0f}" if c.model_us is not None else f"{'':7}"
        print(f"{c.workload:17} {c.server:17} {c.req_s:8.0f} {c.rows_s:9.0f} {c.p50_ms:7.2f} "
              f"{c.p99_ms:8.2f} {c.errors:6d} {c.req_s / base.req_s:7.2f} "
              f"{c.req_s / floor.req_s:7.2f} {c.req_s / bare.req_s:7.2f} {1e6 / c.req_s:7.0f} "
              f"{model}")
    print("\nx base, x floor, x bare: req/s over the tutorial's, FastAPI's constant's and the bare "
          "ASGI constant's in the same workload.\nus/req: 1 / req/s, the server's time per "
          "request when it is saturated (its one core busy; at c=1 it is the round trip).\n"
          "model: of which the model calls, per request (modelport's inference-duration metric).")
    print("\nRSS after load (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in rss.items()))
    split = print_split(by, parts)
    wire = wire_targets(by)
    targets = check_targets(by, rss)
    if against:
        targets += before_after(by, against)
    for title, group in (("targets (issue 19, closer to the wire)", wire),
                         ("targets (issue 3)", targets)):
        print(f"\n{title}:")
        for text, ok in group:
            print(f"  [{'met' if ok else 'MISSED'}] {text}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / time.strftime("serving-%Y%m%d-%H%M%S.json")
    doc = {"duration_s": duration, "rounds": len(runs), "pinned": pinned,
           "cells": [asdict(c) for c in cells],
           "rounds_cells": [[asdict(c) for c in run] for run in runs], "rss_mb": rss,
           "split_us": split,
           "targets": [{"issue": issue, "target": t, "met": ok}
                       for issue, group in (("19", wire), ("3", targets)) for t, ok in group]}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, out)
    print(f"\nwrote {out.relative_to(ROOT)}")


def before_after(by: dict[tuple[str, str], Cell], ref: str) -> list[tuple[str, bool]]:
    """Each modelport cell against the same cell served by ``ref``'s code: req/s and p99
    ratios (this tree / ref), and whether req/s stayed within 5 %."""
    print(f"\nthis tree / {ref}, per cell (req/s ratio; p99 ratio):")
    out = []
    for (workload, server), c in by.items():
        before = by.get((workload, f"{server}@{ref}"))
        if before is None:
            continue
        ratio, p99 = c.req_s / before.req_s, c.p99_ms / before.p99_ms
        print(f"  {workload:14} {server:17} {ratio:6.3f}x req/s  {p99:6.3f}x p99")
        out.append((f"{workload} {server}: {ratio:.3f}x {ref}'s req/s (>= 0.95)",
                    ratio >= 0.95))
    return out


SPLIT_WORKLOADS = [("1 row, c=64", 1), ("1 row, c=1", 1), ("100 rows, c=8", 100)]
SPLIT_SERVERS = [("modelport-onnx", "native"), ("modelport-onnx-v2", "v2")]


def per_request_us(c: Cell) -> float:
    """A cell's µs per request: 1 / req/s, or at c=1 the p50 round trip."""
    return c.p50_ms * 1000 if c.concurrency == 1 else 1e6 / c.req_s


def print_split(by: dict[tuple[str, str], Cell],
                parts: dict[tuple[str, int], dict[str, float]]) -> list[dict[str, Any]]:
    """The ONNX server's µs per request split into its parts, per workload and protocol
    (printed; returned for the JSON)."""
    from request_split import PARTS, split_row

    rows = []
    for server, protocol in SPLIT_SERVERS:
        for workload, n in SPLIT_WORKLOADS:
            c, bare = by[(workload, server)], by[(workload, "bare")]
            row = split_row(per_request_us(c), per_request_us(bare), c.queue_us or 0.0,
                            c.model_us or 0.0, parts[(protocol, n)],
                            round_trip=c.concurrency == 1)
            rows.append({"workload": workload, "protocol": protocol, **row})
    print("\nwhere the ONNX server's time per request goes (us; total: 1e6 / req/s, at c=1 the "
          "p50):")
    print(f"{'workload':17} {'body':6} " + " ".join(f"{p:>8}" for p in (*PARTS, "total")))
    for r in rows:
        print(f"{r['workload']:17} {r['protocol']:6} "
              + " ".join(f"{r[p]:8.1f}" for p in (*PARTS, "total")))
    print("http: the bare ASGI floor's us per request in the same workload (uvicorn, httptools, "
          "ASGI, and its json.loads of the body);\nqueue, model: the server's queue-delay and "
          "inference-duration sums over the cell, per request; parse, validate, encode, "
          "metrics,\nlog: modelport's own functions on the same body, timed in this process "
          "(best of 5); other: total minus the parts (a residual, may be negative).\nqueue is "
          "a wait: at c=1 it is part of the round trip and taken out of other; under load the "
          "waits of concurrent requests\noverlap with the core's work on others, so there it "
          "is shown but not taken out.")
    return rows


def wire_targets(by: dict[tuple[str, str], Cell]) -> list[tuple[str, bool]]:
    """Issue 19's targets for the ONNX server, native and V2 JSON alike."""
    out = []
    floorb = by[("100 rows, c=8", "floor")]
    for server, protocol in SPLIT_SERVERS:
        label = f"ONNX {'native' if protocol == 'native' else 'V2 JSON'}"
        b = by[("100 rows, c=8", server)]
        rows = (f"{label} 100 rows c=8 rows/s >= 0.65x floor: {b.rows_s:.0f} vs "
                f"{floorb.rows_s:.0f} ({b.rows_s / floorb.rows_s:.2f}x)",
                b.rows_s >= 0.65 * floorb.rows_s)
        bare = floor_targets(label, "bare", one64=(by[("1 row, c=64", server)].req_s,
                                                   by[("1 row, c=64", "bare")].req_s),
                             one1=(by[("1 row, c=1", server)].p50_ms,
                                   by[("1 row, c=1", "bare")].p50_ms),
                             batch=(b.req_s, b.model_us or 0.0,
                                    by[("100 rows, c=8", "bare")].req_s))
        out += [*bare[:2], rows, *bare[2:]]
    return out


def floor_targets(label: str, floor: str, *, one64: tuple[float, float],
                  one1: tuple[float, float] | None,
                  batch: tuple[float, float, float]) -> list[tuple[str, bool]]:
    """Issue 19's targets against a wire floor: ``one64`` (req/s, floor's req/s) at 1 row
    c=64, ``one1`` (p50 ms, floor's p50 ms) at 1 row c=1, ``batch`` (req/s, model µs per
    request, floor's req/s) at 100 rows c=8."""
    (req, floor_req), (b_req, model_us, floor_b) = one64, batch
    out = [(f"{label} 1 row c=64 req/s >= 0.5x {floor}: {req:.0f} vs {floor_req:.0f} "
            f"({req / floor_req:.2f}x)", req >= 0.5 * floor_req)]
    if one1 is not None:
        p50, floor_p50 = one1
        out.append((f"{label} 1 row c=1 p50 <= 1.5x {floor}'s: {p50:.3f} vs {floor_p50:.3f} ms "
                    f"({p50 / floor_p50:.2f}x)", p50 <= 1.5 * floor_p50))
    whole, floor_whole = 1e6 / b_req, 1e6 / floor_b
    rest = whole - model_us
    out.append((f"{label} 100 rows c=8 non-model time <= 1.3x {floor}'s request: {rest:.0f} us "
                f"({whole:.0f} - model {model_us:.0f}) vs {floor_whole:.0f} us "
                f"({rest / floor_whole:.2f}x)", rest <= 1.3 * floor_whole))
    return out


def check_targets(by: dict[tuple[str, str], Cell], rss: dict[str, float]) -> list[tuple[str,
                                                                                       bool]]:
    """Issue 3's targets, each with whether this run met it."""
    onnx64, base64, floor64 = (by[("1 row, c=64", s)] for s in
                               ("modelport-onnx", "baseline", "floor"))
    onnx1, floor1 = by[("1 row, c=1", "modelport-onnx")], by[("1 row, c=1", "floor")]
    onnxb, floorb, baseb = (by[("100 rows, c=8", s)] for s in
                            ("modelport-onnx", "floor", "baseline"))
    native64 = by[("1 row, c=64", "modelport-native")]
    worst_rss = max(rss["modelport-native"], rss["modelport-onnx"])
    return [
        (f"ONNX c=64 >= 5x baseline: {onnx64.req_s / base64.req_s:.2f}x",
         onnx64.req_s >= 5 * base64.req_s),
        (f"ONNX c=64 >= 0.9x floor: {onnx64.req_s / floor64.req_s:.2f}x",
         onnx64.req_s >= 0.9 * floor64.req_s),
        (f"ONNX c=64 p99 <= 25 ms: {onnx64.p99_ms:.1f} ms", onnx64.p99_ms <= 25),
        (f"ONNX c=1 p50 <= 1.5x floor p50: {onnx1.p50_ms / floor1.p50_ms:.2f}x",
         onnx1.p50_ms <= 1.5 * floor1.p50_ms),
        (f"ONNX 100-row rows/s >= 0.65x floor: {onnxb.rows_s / floorb.rows_s:.2f}x "
         f"({onnxb.rows_s / baseb.rows_s:.1f}x baseline; {1e6 / onnxb.req_s:.0f} us per request, "
         f"{onnxb.model_us or 0:.0f} of them in the model; the floor's whole request "
         f"{1e6 / floorb.req_s:.0f} us)", onnxb.rows_s >= 0.65 * floorb.rows_s),
        (f"native c=64 >= 2.5x baseline: {native64.req_s / base64.req_s:.2f}x",
         native64.req_s >= 2.5 * base64.req_s),
        ("zero errors in every cell", all(c.errors == 0 for c in by.values())),
        (f"RSS <= baseline + 30%: {worst_rss:.0f} vs {rss['baseline']:.0f} MiB",
         worst_rss <= 1.3 * rss["baseline"]),
    ]


if __name__ == "__main__":
    main()
