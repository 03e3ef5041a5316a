"""Soak: one modelport server answers a million requests; does its memory stay flat?

    .venv/bin/python benchmarks/soak.py [--requests N] [--runtime auto|native|onnx]

Trains, packs and converts the serving benchmark's model (``serving.prepare``), starts
``modelport serve PKG`` pinned to CPU 0 (wrk on CPU 1; helpers from ``serving.py``), checks its
answers against the model, then drives one-row requests with ``wrk`` in chunks of a few seconds
until ``--requests`` (1,000,000) were answered. A thread reads the server's RSS from
``/proc/PID/status`` every ``--sample-s`` seconds. The table gives the RSS once ``--warmup``
requests (50,000) were answered and at the end, the growth between them, req/s and errors; the
exit status is 1 when the growth exceeds ``--max-growth`` (5 %) or a request failed. The run is
written as JSON into ``benchmarks/results/``; the last run's figures are in
``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from serving import (
    BIN,
    LUA,
    RESULTS,
    ROOT,
    Server,
    check_answers,
    find_wrk,
    prepare,
    rss_mb,
    run_wrk,
    start,
    stop,
    wait_ready,
)


@dataclass
class Soak:
    """What one soak run saw."""

    runtime: str
    concurrency: int
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    warm_rss_mib: float | None = None
    warm_at: int | None = None
    """Requests answered when the warm-up RSS was taken."""
    end_rss_mib: float = 0.0
    samples: list[tuple[float, float]] = field(default_factory=list)
    """(seconds since the load began, RSS in MiB), every ``--sample-s``."""
    chunks: list[tuple[int, float]] = field(default_factory=list)
    """(requests answered so far, RSS in MiB) after each wrk chunk."""

    @property
    def growth_pct(self) -> float:
        """RSS growth from after the warm-up to the end, percent."""
        warm = self.warm_rss_mib or self.end_rss_mib
        return (self.end_rss_mib / warm - 1) * 100


def main() -> None:
    """Run the soak and print its table; exit 1 when memory grew too much or requests failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--warmup", type=int, default=50_000, help="requests before the first "
                        "RSS figure")
    parser.add_argument("--runtime", default="auto", choices=["auto", "native", "onnx"])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--chunk-s", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--sample-s", type=float, default=2.0)
    parser.add_argument("--max-growth", type=float, default=5.0, help="percent")
    args = parser.parse_args()
    wrk = find_wrk()
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, load_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    soak = Soak(args.runtime, args.concurrency)
    with tempfile.TemporaryDirectory(prefix="mp-soak-") as name:
        tmp = Path(name)
        pkg, model_path, rows = prepare(tmp)
        server = Server("modelport", [str(BIN / "modelport"), "serve", str(pkg), "--host",
                                      "127.0.0.1", "--runtime", args.runtime],
                        "/predict", "/predict", exact=True, tolerance=1e-4)
        try:
            start(server, server_cpu, tmp)
            wait_ready(server)
            check_answers([server], model_path, rows)
            script = tmp / "one-row.lua"
            script.write_text(LUA.replace("BODY", json.dumps({"features": rows[0]})))
            drive(server, wrk, script, soak, args=args, cpu=load_cpu)
        finally:
            stop(server)
    report(soak, args, pinned=server_cpu is not None)
    if soak.growth_pct > args.max_growth or soak.errors:
        sys.exit(1)


def drive(server: Server, wrk: str, script: Path, soak: Soak, *, args: argparse.Namespace,
          cpu: int | None) -> None:
    """wrk chunks until ``args.requests`` were answered, RSS sampled meanwhile."""
    began = time.monotonic()
    done = threading.Event()
    sampler = threading.Thread(target=sample, args=(server, soak, began, args.sample_s, done),
                               daemon=True)
    sampler.start()
    rate = 5000.0
    try:
        while soak.requests < args.requests:
            left = (args.requests - soak.requests) / rate
            seconds = max(1, min(args.chunk_s, round(left + 0.5)))
            out = run_wrk(wrk, server.url("/predict"), script, conc=args.concurrency,
                          duration=seconds, cpu=cpu)
            soak.requests += out["requests"]
            soak.errors += sum(out[k] for k in ("connect", "read", "write", "status",
                                                "timeout"))
            rate = max(1.0, out["requests"] / (out["duration_us"] / 1e6))
            rss = rss_mb(server)
            soak.chunks.append((soak.requests, rss))
            if soak.warm_rss_mib is None and soak.requests >= args.warmup:
                soak.warm_rss_mib, soak.warm_at = rss, soak.requests
            print(f"{soak.requests:>9,} requests  {rate:7.0f} req/s  RSS {rss:6.1f} MiB  "
                  f"errors {soak.errors}", flush=True)
    finally:
        soak.seconds = time.monotonic() - began
        done.set()
        sampler.join()
    soak.end_rss_mib = rss_mb(server)


def sample(server: Server, soak: Soak, began: float, every_s: float,
           done: threading.Event) -> None:
    """Append (seconds, RSS MiB) to ``soak.samples`` every ``every_s`` until ``done``."""
    while not done.wait(every_s):
        soak.samples.append((time.monotonic() - began, rss_mb(server)))


def report(soak: Soak, args: argparse.Namespace, *, pinned: bool) -> None:
    """Print the table and write the JSON."""
    rss = [r for _, r in soak.samples] or [soak.end_rss_mib]
    where = "server on CPU 0, wrk on CPU 1" if pinned else "NOT pinned (one core)"
    print(f"\nsoak: modelport serve --runtime {soak.runtime}, one-row requests at "
          f"c={soak.concurrency}; {where}\n")
    rows = [
        ("requests", f"{soak.requests:,}"),
        ("duration", f"{soak.seconds:.0f} s"),
        ("req/s", f"{soak.requests / soak.seconds:,.0f}"),
        ("errors", f"{soak.errors}"),
        (f"RSS after warm-up ({soak.warm_at or 0:,} requests)",
         f"{soak.warm_rss_mib or 0:.1f} MiB"),
        ("RSS at the end", f"{soak.end_rss_mib:.1f} MiB"),
        ("growth", f"{soak.growth_pct:+.2f} %  (limit {args.max_growth:g} %)"),
        ("RSS min / median / max of samples",
         f"{min(rss):.1f} / {statistics.median(rss):.1f} / {max(rss):.1f} MiB "
         f"({len(soak.samples)} samples, every {args.sample_s:g} s)"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    ok = soak.growth_pct <= args.max_growth and not soak.errors
    print(f"\n[{'met' if ok else 'MISSED'}] RSS growth after warm-up <= {args.max_growth:g} % "
          "with no failed request")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / time.strftime("soak-%Y%m%d-%H%M%S.json")
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({**asdict(soak), "growth_pct": soak.growth_pct,
                               "max_growth_pct": args.max_growth, "pinned": pinned}, indent=1))
    os.replace(tmp, out)
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
