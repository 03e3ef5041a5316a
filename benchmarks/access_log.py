"""What each access-log setting costs: one run, the same server four times.

    .venv/bin/python benchmarks/access_log.py [--rounds N] [--duration S]

Trains, packs and converts the model of ``serving.py`` (its helpers), then starts
``modelport serve PKG --runtime onnx`` four times, each pinned to CPU 0 and writing its log to
stderr redirected into a file (as ``serving.py`` does), with:

- ``info``: the default, a line per request;
- ``sample 0.1``: ``--access-log-sample 0.1`` (a tenth of the successful requests);
- ``warning``: ``--access-log-level warning`` (only 4xx and 5xx: none in this load);
- ``off``: ``--access-log-level off``.

``wrk`` on CPU 1 drives one-row ``POST /predict`` at concurrency 64 and 1, the servers taking
turns, for ``--rounds`` rounds; the table shows each setting's median req/s, its ratio to
``off`` and the bytes of log it wrote per request and per second.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving  # this folder's module: the shared helpers

SETTINGS = [("info", []), ("sample 0.1", ["--access-log-sample", "0.1"]),
            ("warning", ["--access-log-level", "warning"]),
            ("off", ["--access-log-level", "off"])]


def main() -> None:
    """Run the comparison and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0)
    args = parser.parse_args()
    wrk = serving.find_wrk()
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, load_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    with tempfile.TemporaryDirectory(prefix="mp-accesslog-") as name:
        tmp = Path(name)
        pkg, _, rows = serving.prepare(tmp)
        base = [str(serving.BIN / "modelport"), "serve", str(pkg), "--host", "127.0.0.1",
                "--runtime", "onnx"]
        servers = [serving.Server(label, [*base, *flags], "/predict", "/predict", True,
                                  env={"PYTHONPATH": str(serving.ROOT / "src")})
                   for label, flags in SETTINGS]
        script = tmp / "one.lua"
        script.write_text(serving.LUA.replace("BODY", json.dumps({"features": rows[0]})))
        results: dict[tuple[str, int], list[tuple[float, float]]] = {}
        try:
            for s in servers:
                serving.start(s, server_cpu, tmp)
            for s in servers:
                serving.wait_ready(s)
            for r in range(args.rounds):
                for conc in (64, 1):
                    for s in servers:
                        log = tmp / f"{s.name}.log"
                        serving.run_wrk(wrk, s.url("/predict"), script, conc=conc, duration=1,
                                        cpu=load_cpu)
                        before = log.stat().st_size
                        out = serving.run_wrk(wrk, s.url("/predict"), script, conc=conc,
                                              duration=args.duration, cpu=load_cpu)
                        written = log.stat().st_size - before
                        req_s = out["requests"] / (out["duration_us"] / 1e6)
                        results.setdefault((s.name, conc), []).append(
                            (req_s, written / max(1, out["requests"])))
                print(f"round {r + 1} of {args.rounds} done", flush=True)
        finally:
            for s in servers:
                serving.stop(s)
    print(f"\nmedians of {args.rounds} rounds of {args.duration:g} s; one-row POST /predict, "
          "ONNX runtime")
    print(f"{'setting':12} {'conc':>4} {'req/s':>8} {'x off':>6} {'log B/req':>10} "
          f"{'log KB/s':>9}")
    for conc in (64, 1):
        off = statistics.median(x for x, _ in results[("off", conc)])
        for label, _ in SETTINGS:
            req_s = statistics.median(x for x, _ in results[(label, conc)])
            per_req = statistics.median(b for _, b in results[(label, conc)])
            print(f"{label:12} {conc:4d} {req_s:8.0f} {req_s / off:6.3f} {per_req:10.1f} "
                  f"{per_req * req_s / 1000:9.1f}")


if __name__ == "__main__":
    main()
