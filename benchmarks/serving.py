"""HTTP serving throughput: modelport against a tutorial FastAPI server and the FastAPI floor.

    .venv/bin/python benchmarks/serving.py [--quick] [--duration S] [--against REF]

One run, one machine, in this order:

1. trains the issue's model (``apps/heart_model.py``: ``Pipeline(StandardScaler,
   GradientBoostingClassifier(100))`` on the 13 heart features of the bundled example's
   synthetic data) into a temporary folder, packs it and converts it to ONNX with
   ``modelport optimize``;
2. starts four servers, each pinned to CPU 0 with ``taskset`` (``wrk`` gets CPU 1; on a one-core
   machine nothing is pinned, and the table says so):
   - ``baseline``: the tutorial app (``benchmarks/apps/tutorial.py``: pydantic, sync endpoint,
     ``predict`` + ``predict_proba``),
   - ``floor``: the same FastAPI stack returning a constant (``benchmarks/apps/floor.py``),
   - ``modelport-native``: ``modelport serve PKG --runtime native`` (scikit-learn),
   - ``modelport-onnx``: ``modelport serve PKG --runtime onnx``;
   every server writes one access-log line per request (uvicorn's for the FastAPI apps,
   modelport's JSON line for modelport) to a file;
3. checks every server's answers against the model itself (the floor only for a valid body);
4. drives each with ``wrk`` (found on PATH or installed with ``apt-get install -y wrk``):
   single-row bodies at concurrency 1, 8 and 64, then 100-row bodies at concurrency 8. Servers
   take turns workload by workload, so load from other processes falls on all of them alike;
5. prints req/s, rows/s, p50, p99, errors and ratios to the baseline and to the floor, the
   RSS of each server after the load, and which of the issue's targets were met; writes it all
   as JSON into ``benchmarks/results/``.

``--against REF`` (a commit, branch or tag) also serves the same package with the code of REF
(checked out with ``git worktree`` into the temporary folder), as ``modelport-native@REF`` and
``modelport-onnx@REF``, in the same rounds, and prints each cell's ratio of this tree to REF:
the before/after comparison of a change, measured in one run.

Every cell runs in each of 3 rounds (5 s each, after a 1 s warm-up) and the table shows the
medians: a full run takes about 6 minutes. ``--quick`` runs one round of 3 s cells.
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
                start(s, server_cpu, tmp)
            for s in servers:
                wait_ready(s)
            check_answers(servers, model_path, rows)
            runs = [drive(servers, wrk, rows, duration=duration, cpu=load_cpu, tmp=tmp,
                          title=f"round {r + 1} of {rounds}") for r in range(rounds)]
            rss = {s.name: rss_mb(s) for s in servers}
        finally:
            for s in servers:
                stop(s)
            if args.against:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                str(tmp / "before")], check=False, capture_output=True)
    report(runs, rss, duration=duration, pinned=server_cpu is not None, cpus=len(cpus),
           against=args.against)


def checkout(ref: str, where: Path) -> Path:
    """The source folder of ``ref``, checked out (detached) into ``where``."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), ref],
                   check=True, capture_output=True)
    return where / "src"


def before_servers(servers: list[Server], src: Path, ref: str) -> list[Server]:
    """The modelport servers again, running the code in ``src`` (the ``--against`` ref)."""
    return [replace(s, name=f"{s.name}@{ref}", env={**s.env, "PYTHONPATH": str(src)})
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


def prepare(tmp: Path) -> tuple[Path, Path, list[dict[str, Any]]]:
    """Train the issue's model, pack it, convert it to ONNX; return package, joblib file, rows."""
    import pandas as pd

    from modelport.package import pack
    from modelport.tools.optimize import optimize

    sys.path.insert(0, str(APPS))
    from heart_model import train

    model_path, csv, features = train(tmp / "heart")
    pack(model_path, tmp / "pkg", name="heart", reference=csv, target="condition")
    parity = optimize(tmp / "pkg", data=csv).parity
    print(f"ONNX parity on {parity.rows} rows: max |dp| {parity.max_abs_diff:.2g}, labels "
          f"differing {parity.label_mismatches}", flush=True)
    rows: list[list[float]] = json.loads(pd.read_csv(csv)[features].head(100).to_json(
        orient="values"))
    return tmp / "pkg", model_path, rows


def make_servers(pkg: Path, model_path: Path) -> list[Server]:
    """The four servers, in table order."""
    uvicorn = [str(BIN / "python"), "-m", "uvicorn", "--app-dir", str(APPS), "--host",
               "127.0.0.1", "--loop", "uvloop", "--http", "httptools"]
    modelport = [str(BIN / "modelport"), "serve", str(pkg), "--host", "127.0.0.1"]
    this_tree = {"PYTHONPATH": str(ROOT / "src")}  # this checkout's code, whatever is installed
    return [
        Server("baseline", [*uvicorn, "tutorial:app"], "/predict", "/predict/batch", True,
               env={"BENCH_MODEL": str(model_path)}),
        Server("floor", [*uvicorn, "floor:app"], "/predict", "/predict/batch", False),
        Server("modelport-native", [*modelport, "--runtime", "native"], "/predict", "/predict",
               True, env=this_tree),
        Server("modelport-onnx", [*modelport, "--runtime", "onnx"], "/predict", "/predict", True,
               tolerance=1e-4, env=this_tree),
    ]


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


def post(url: str, body: dict[str, Any]) -> Any:
    """POST ``body`` as JSON; the decoded answer (non-200 is an error)."""
    req = urllib.request.Request(url, json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def answers(doc: dict[str, Any]) -> tuple[list[Any], list[list[float]]]:
    """Labels and probabilities from any of the servers' response shapes."""
    if "prediction" in doc:
        return [doc["prediction"]], [doc["probabilities"]]
    return list(doc["predictions"]), list(doc["probabilities"])


def check_answers(servers: list[Server], model_path: Path, rows: list[list[float]]) -> None:
    """Every server answers one row and 100 rows as the model does (the floor: validly)."""
    import joblib
    import numpy as np
    import pandas as pd

    model = joblib.load(model_path)
    frame = pd.DataFrame(rows, columns=model.feature_names_in_)
    want_labels, want_proba = model.predict(frame).tolist(), model.predict_proba(frame)
    for s in servers:
        for path, body, n in ((s.single, {"features": rows[0]}, 1),
                              (s.batch, {"instances": rows}, len(rows))):
            labels, proba = answers(post(s.url(path), body))
            if len(labels) != n or len(proba) != n:
                sys.exit(f"{s.name} {path}: {len(labels)} answers for {n} rows")
            diff = float(np.max(np.abs(np.asarray(proba) - want_proba[:n])))
            if s.exact and (labels != want_labels[:n] or diff > s.tolerance):
                sys.exit(f"{s.name} {path}: answers differ from the model (max |dp| {diff:.3g})")
        print(f"checked {s.name}: " + ("answers match the model" if s.exact
                                      else "valid answers (a constant)"), flush=True)


def drive(servers: list[Server], wrk: str, rows: list[list[float]], *, duration: float,
          cpu: int | None, tmp: Path, title: str) -> list[Cell]:
    """Every workload against every server, servers taking turns."""
    print(f"-- {title}", flush=True)
    single = json.dumps({"features": rows[0]})
    batch = json.dumps({"instances": rows})
    cells = []
    for label, conc, n_rows in WORKLOADS:
        for s in servers:
            script = tmp / f"{s.name}-{n_rows}.lua"
            script.write_text(LUA.replace("BODY", single if n_rows == 1 else batch))
            url = s.url(s.single if n_rows == 1 else s.batch)
            run_wrk(wrk, url, script, conc=conc, duration=1, cpu=cpu)  # warm-up
            before = model_seconds(s)
            out = run_wrk(wrk, url, script, conc=conc, duration=duration, cpu=cpu)
            c = cell(s.name, label, conc, n_rows, out)
            if before is not None:
                model_s = (model_seconds(s) or 0.0) - before
                c = replace(c, model_us=model_s / max(1, out["requests"]) * 1e6)
            cells.append(c)
            model = f"  model {c.model_us:6.1f} us/req" if c.model_us is not None else ""
            print(f"{label:14} {s.name:17} {c.req_s:9.0f} req/s  p50 {c.p50_ms:7.2f} ms  "
                  f"p99 {c.p99_ms:7.2f} ms  errors {c.errors}{model}", flush=True)
    return cells


def model_seconds(server: Server) -> float | None:
    """Seconds a modelport server has spent in model calls so far (the sum of its
    ``modelport_inference_duration_seconds`` histogram); ``None`` for the other servers."""
    if not server.name.startswith("modelport"):
        return None
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(server.url("/metrics"), timeout=10) as resp:
        text = resp.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text)
               if family.name == "modelport_inference_duration_seconds"
               for sample in family.samples if sample.name.endswith("_sum"))


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
        out.append(Cell(first.server, first.workload, first.concurrency, first.rows_per_request,
                        req_s, req_s * first.rows_per_request,
                        statistics.median(c.p50_ms for c in cells),
                        statistics.median(c.p99_ms for c in cells),
                        sum(c.errors for c in cells),
                        statistics.median(model) if model else None))
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


def report(runs: list[list[Cell]], rss: dict[str, float], *, duration: float, pinned: bool,
           cpus: int, against: str | None = None) -> None:
    """Print the median table and the targets; write the JSON (with every round's cells)."""
    cells = median_cells(runs)
    where = ("servers on CPU 0, wrk on CPU 1" if pinned else
             f"NOT pinned: only {cpus} core available, servers and wrk share it")
    print(f"\nmedians of {len(runs)} round(s) of {duration:g} s per cell; {where}\n")
    print(f"{'workload':14} {'server':17} {'req/s':>8} {'rows/s':>9} {'p50 ms':>7} {'p99 ms':>8} "
          f"{'errors':>6} {'x base':>7} {'x floor':>7} {'us/req':>7} {'model':>7}")
    by = {(c.workload, c.server): c for c in cells}
    for c in cells:
        base, floor = by[(c.workload, "baseline")], by[(c.workload, "floor")]
        model = f"{c.model_us:7.0f}" if c.model_us is not None else f"{'':7}"
        print(f"{c.workload:14} {c.server:17} {c.req_s:8.0f} {c.rows_s:9.0f} {c.p50_ms:7.2f} "
              f"{c.p99_ms:8.2f} {c.errors:6d} {c.req_s / base.req_s:7.2f} "
              f"{c.req_s / floor.req_s:7.2f} {1e6 / c.req_s:7.0f} {model}")
    print("\nus/req: 1 / req/s, the server's time per request when it is saturated (its one core "
          "busy; at c=1 it is the round trip).\nmodel: of which the model calls, per request "
          "(modelport's inference-duration metric).")
    print("\nRSS after load (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in rss.items()))
    targets = check_targets(by, rss)
    if against:
        targets += before_after(by, against)
    print("\ntargets (issue 3):")
    for text, ok in targets:
        print(f"  [{'met' if ok else 'MISSED'}] {text}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / time.strftime("serving-%Y%m%d-%H%M%S.json")
    doc = {"duration_s": duration, "rounds": len(runs), "pinned": pinned,
           "cells": [asdict(c) for c in cells],
           "rounds_cells": [[asdict(c) for c in run] for run in runs], "rss_mb": rss,
           "targets": [{"target": t, "met": ok} for t, ok in targets]}
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


def check_targets(by: dict[tuple[str, str], Cell], rss: dict[str, float]) -> list[tuple[str,
                                                                                       bool]]:
    """The issue's targets, each with whether this run met it."""
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
