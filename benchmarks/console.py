"""Does an open console move the server's p99? V2 inference at c=64, with and without one.

    .venv/bin/python benchmarks/console.py [--rounds N] [--duration S] [--all-pages]

One run, one machine:

1. trains the bundled example (``examples/heart/train.py``) and packs it with its reference
   data (so drift is on) into a temporary folder;
2. starts ``modelport serve PKG`` with the prediction log on (SQLite) pinned to CPU 0 with
   ``taskset`` (the load generator and the console get CPU 1; with one core nothing is pinned);
3. in each round, drives ``POST /v2/models/heart/infer`` (one row, JSON tensors) with ``wrk``
   at 64 connections for ``--duration`` seconds twice: once alone, once while a console is
   open. The console is the page's own polling done by a client thread: every ``POLL_MS``
   what an open tab on the Rollout page asks for (the summary and the rollout with its live
   per-arm figures); ``--all-pages`` makes it heavier than any tab: all four pages' data
   (summary, rollout, drift with a histogram, the latest 50 logged predictions).
   Which of the two goes first alternates between rounds, so drift in the machine's load
   falls on both alike;
4. prints p50/p99 and req/s of both, per round and as medians over the rounds, and the ratio
   of the p99 medians (the issue's bar: within 5 %); before the load, the server's CPU time
   per second while idle without and with the console (what the console costs, measured
   away from the load's noise); writes it all as JSON into
   ``benchmarks/results/console-<time>.json``.

The machine is shared and noisy: compare the medians, and run more rounds when in doubt.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BIN = Path(sys.executable).parent
POLL_MS = 2000
TAB_PATHS = ("/ui/api/summary", "/ui/api/models/heart/rollout")
ALL_PATHS = (*TAB_PATHS, "/ui/api/models/heart/drift?feature=age",
             "/ui/api/predictions?limit=50")
LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[BODY]==]
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('\\n{"requests": %d, "duration_us": %d, "errors": %d, '
    .. '"p50_us": %d, "p99_us": %d}\\n', summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per cell")
    parser.add_argument("--all-pages", action="store_true",
                        help="poll all four pages' data, not one tab's")
    args = parser.parse_args()
    paths = ALL_PATHS if args.all_pages else TAB_PATHS
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("wrk is needed: install the Debian/Ubuntu package 'wrk' (apt-get install wrk)")
    cpus = os.cpu_count() or 1
    server_cpu, load_cpu = (0, 1) if cpus > 1 and shutil.which("taskset") else (None, None)
    if load_cpu is not None:  # the console's thread runs here: never on the server's CPU
        os.sched_setaffinity(0, {load_cpu})
    with tempfile.TemporaryDirectory(prefix="modelport-console-bench-") as name:
        tmp = Path(name)
        pkg, body = prepare(tmp)
        proc, url = start(pkg, tmp, server_cpu)
        try:
            script = tmp / "infer.lua"
            script.write_text(LUA.replace("BODY", json.dumps(body)), encoding="utf-8")
            cells(wrk, url, script, load_cpu, 2, console=None)  # warm-up
            cost = idle_cost(proc.pid, url, paths)
            rounds = []
            for i in range(args.rounds):
                order = (False, True) if i % 2 == 0 else (True, False)
                got = {console: cells(wrk, url, script, load_cpu, args.duration,
                                      console=paths if console else None)
                       for console in order}
                rounds.append({"without": got[False], "with": got[True]})
                print(f"round {i + 1}: p99 {got[False]['p99_ms']:.2f} ms without, "
                      f"{got[True]['p99_ms']:.2f} ms with the console open "
                      f"({got[True]['polls']} console requests)", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    report(rounds, cost, pinned=server_cpu is not None, duration=args.duration)


def idle_cost(pid: int, url: str, paths: tuple[str, ...],
              seconds: float = 20.0) -> dict[str, float]:
    """The server's CPU time per second, idle, without and with an open console: what the
    console itself costs, free of the load's noise (``/proc``, 10 ms ticks)."""
    def cpu() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    out = {}
    for console in (False, True):
        poller = Console(url, paths) if console else None
        if poller is not None:
            poller.start()
        before = cpu()
        time.sleep(seconds)
        out["with" if console else "without"] = (cpu() - before) / seconds * 1000
        if poller is not None:
            poller.stop.set()
            poller.join()
    print(f"idle server CPU: {out['without']:.1f} ms/s without, {out['with']:.1f} ms/s with "
          "the console open", flush=True)
    return out


def prepare(tmp: Path) -> tuple[Path, dict[str, Any]]:
    """The example trained and packed with its reference data; a one-row V2 request."""
    spec = importlib.util.spec_from_file_location("heart_train",
                                                  ROOT / "examples" / "heart" / "train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["heart_train"] = module
    spec.loader.exec_module(module)
    module.train(tmp)
    from modelport.package import pack

    pkg = tmp / "heart"
    pack(tmp / "model.joblib", pkg, name="heart", version="1.0.0",
         reference=tmp / "heart.csv", target="condition")
    row = {"age": 63, "sex": 1, "cp": 3, "trestbps": 145, "chol": 233, "fbs": 1,
           "restecg": 0, "thalach": 150, "exang": 0, "oldpeak": 2.3, "slope": 0, "ca": 0,
           "thal": "fixed"}
    inputs = [{"name": k, "shape": [1], "data": [v], "datatype": "BYTES" if isinstance(v, str)
               else "FP64" if isinstance(v, float) else "INT64"} for k, v in row.items()]
    return pkg, {"inputs": inputs}


def start(pkg: Path, tmp: Path, cpu: int | None) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [str(BIN / "modelport"), "serve", str(pkg), "--port", str(port), "--grpc-port", "0",
            "--log-file", str(tmp / "access.log")]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    env = {**os.environ, "MODELPORT_LOG_DB": f"sqlite:///{tmp / 'predictions.db'}",
           "MODELPORT_LOG_SPOOL_DIR": str(tmp / "spool")}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=1) as answer:
                if answer.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    sys.exit("the server did not become ready in 60 s")


class Console(threading.Thread):
    """An open console: every ``POLL_MS`` the data of one tab (or of all four pages)."""

    def __init__(self, url: str, paths: tuple[str, ...]) -> None:
        super().__init__(daemon=True)
        self.url, self.paths, self.polls, self.failures = url, paths, 0, 0
        self.seconds: list[float] = []
        """Each console request's time, as the console saw it."""
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for path in self.paths:
                started = time.perf_counter()
                try:
                    with urllib.request.urlopen(self.url + path, timeout=10) as answer:
                        answer.read()
                    self.polls += 1
                    self.seconds.append(time.perf_counter() - started)
                except OSError:
                    self.failures += 1
            self.stop.wait(POLL_MS / 1000)


def cells(wrk: str, url: str, script: Path, cpu: int | None, duration: int, *,
          console: tuple[str, ...] | None) -> dict[str, Any]:
    """One wrk run at c=64, with or without an open console (polling ``console``)."""
    poller = Console(url, console) if console else None
    if poller is not None:
        poller.start()
    argv = [wrk, "-t1", "-c64", f"-d{duration}s", "-s", str(script),
            f"{url}/v2/models/heart/infer"]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    if poller is not None:
        poller.stop.set()
        poller.join()
    line = next(x for x in out.splitlines() if x.startswith('{"requests"'))
    got = json.loads(line)
    return {"rps": got["requests"] / (got["duration_us"] / 1e6), "errors": got["errors"],
            "p50_ms": got["p50_us"] / 1000, "p99_ms": got["p99_us"] / 1000,
            "polls": poller.polls if poller else 0,
            "poll_failures": poller.failures if poller else 0,
            "poll_ms_median": statistics.median(poller.seconds) * 1000
            if poller and poller.seconds else None}


def report(rounds: list[dict[str, Any]], cost: dict[str, float], *, pinned: bool,
           duration: int) -> None:
    med = {side: {k: statistics.median(r[side][k] for r in rounds)
                  for k in ("rps", "p50_ms", "p99_ms")} for side in ("without", "with")}
    ratio = med["with"]["p99_ms"] / med["without"]["p99_ms"]
    paired = statistics.median(r["with"]["p99_ms"] / r["without"]["p99_ms"] for r in rounds)
    print(f"\nPOST /v2/models/heart/infer, 1 row, c=64, {len(rounds)} rounds of {duration} s "
          f"({'server on CPU 0, load on CPU 1' if pinned else 'not pinned'}); medians:")
    print(f"{'':<22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for side, label in (("without", "no console"), ("with", "one console open")):
        m = med[side]
        print(f"{label:<22}{m['rps']:>10.0f}{m['p50_ms']:>10.2f}{m['p99_ms']:>10.2f}")
    print(f"p99 with / without: {ratio:.3f} (ratio of the medians; median of the rounds' "
          f"ratios {paired:.3f}; bar: <= 1.05)")
    polls = [r["with"]["poll_ms_median"] for r in rounds if r["with"]["poll_ms_median"]]
    if polls:
        print(f"a console request took {statistics.median(polls):.1f} ms (median) under load")
    print(f"the console's own cost, idle: {cost['with'] - cost['without']:.1f} ms of server CPU "
          "per second")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"console-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"rounds": rounds, "medians": med, "p99_ratio": ratio,
                               "p99_ratio_paired": paired, "idle_cpu_ms_per_s": cost,
                               "pinned": pinned, "duration_s": duration}, indent=2),
                   encoding="utf-8")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
