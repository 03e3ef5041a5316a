"""What the tracing hooks cost when tracing is off: an in-process ASGI A/B, one run.

    .venv/bin/python benchmarks/tracing.py [--quick] [--requests N] [--rounds R]

1. trains a cheap model (a LogisticRegression on 4 numeric features, answered from a float
   matrix in tens of microseconds: the hooks' share of a request is largest when the model
   costs least) and packs it;
2. copies ``src/modelport`` twice to a temporary folder and removes the hooks from one: each
   ``with tracing.span(...) if tracing.ON else tracing.NOOP:`` becomes ``if True:`` and each
   ``if tracing.ON:`` becomes ``if False:``, which Python's compiler drops — the code path
   without the hooks, byte for byte otherwise;
3. in one subprocess per variant and round (rounds alternate the order), drives the app's ASGI
   callable directly (no sockets, no HTTP client: what is timed is modelport's own request
   path, edge, fast lane, validation, micro-batcher, model, encoding) with N one-row
   ``POST /models/bench/predict`` requests after a warm-up, timing each;
4. prints each variant's median request time over all rounds, and the overhead of ``off``
   (hooks in, tracing off) over ``baseline`` (no hooks) — the issue asks for at most 3 % — and,
   for information, ``on`` (tracing on, spans made and dropped by a provider without
   exporter), and the two hooks' own cost timed alone with ``timeit`` (free of the noise a
   shared machine adds to whole requests).

Variants: ``baseline`` (the copy without hooks), ``off`` (this checkout, tracing off), ``on``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
_WITH = re.compile(r"with tracing\.span\([^)]*\) if tracing\.ON else tracing\.NOOP:")
_IF = re.compile(r"if tracing\.ON:")


def copy_source(dest: Path, *, strip: bool) -> int:
    """Copy ``src/modelport`` into ``dest`` (both variants run from a copy, so that where the
    files lie makes no difference), without the tracing hooks when ``strip``; how many were
    cut."""
    shutil.copytree(SRC / "modelport", dest / "modelport",
                    ignore=shutil.ignore_patterns("__pycache__"))
    if not strip:
        return 0
    cut = 0
    for path in (dest / "modelport").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        new, n_with = _WITH.subn("if True:", text)
        new, n_if = _IF.subn("if False:", new)
        if n_with or n_if:
            path.write_text(new, encoding="utf-8")
            cut += n_with + n_if
    return cut


def make_package(dest: Path) -> Path:
    import joblib
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from modelport.package import pack

    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(500, 4)), columns=["a", "b", "c", "d"])
    y = (x.a + x.b > 0).astype(int)
    joblib.dump(LogisticRegression().fit(x, y), dest / "bench.joblib")
    return pack(dest / "bench.joblib", dest / "bench", name="bench").root


async def drive(app: Any, requests: int, warmup: int) -> list[int]:
    """Per-request nanoseconds of ``requests`` one-row predictions through ``app``."""
    body = json.dumps({"features": {"a": 0.1, "b": -0.3, "c": 1.2, "d": 0.0}}).encode()
    base = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/models/bench/predict",
            "raw_path": b"/models/bench/predict", "query_string": b"", "root_path": "",
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    times = []
    clock = time.perf_counter_ns
    for i in range(warmup + requests):
        started = clock()
        await app(dict(base), receive, send)
        if i >= warmup:
            times.append(clock() - started)
    if set(statuses) != {200}:
        raise SystemExit(f"unexpected statuses: {sorted(set(statuses))}")
    return times


def child(variant: str, package: str, requests: int, warmup: int) -> None:
    """Run in a subprocess: build the app, drive it, print the times as JSON."""
    import logging

    logging.getLogger("modelport.access").setLevel(logging.WARNING)  # no log I/O timed
    from modelport.config import Settings
    from modelport.package import load_model
    from modelport.server import tracing
    from modelport.server.app import create_app

    if variant == "on":
        from opentelemetry.sdk.trace import TracerProvider

        tracing.enable(TracerProvider())  # spans made and ended, exported nowhere
    app = create_app([load_model(Path(package))], Settings(tracing="off"))
    times = asyncio.run(drive(app, requests, warmup))
    print(json.dumps({"variant": variant, "times": times}))


def run(variant: str, package: Path, sources: dict[str, Path], requests: int, warmup: int
        ) -> list[int]:
    src = sources["baseline" if variant == "baseline" else "hooked"]
    env = {**os.environ, "PYTHONPATH": str(src), "OTEL_SDK_DISABLED": "",
           "PYTHONHASHSEED": "0"}
    out = subprocess.run([sys.executable, __file__, "--child", variant, str(package),
                          "--requests", str(requests), "--warmup", str(warmup)],
                         env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    times: list[int] = json.loads(out.stdout.strip().splitlines()[-1])["times"]
    return times


def hook_cost_ns(loops: int = 2_000_000) -> float:
    """What the two hooks on a prediction's way cost with tracing off, timed alone: the
    ``with … if tracing.ON else tracing.NOOP:`` block and the ``if tracing.ON:`` check, against
    the same code without them."""
    import timeit

    from modelport.server import tracing

    hooked = ("with tracing.span('x') if tracing.ON else tracing.NOOP:\n    x = 1\n"
              "if tracing.ON:\n    x = 2")
    bare = "if True:\n    x = 1\nif False:\n    x = 2"
    env = {"tracing": tracing}
    with_hooks = min(timeit.repeat(hooked, globals=env, number=loops, repeat=5))
    without = min(timeit.repeat(bare, globals=env, number=loops, repeat=5))
    return (with_hooks - without) / loops * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 5,000 requests")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=3_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "PACKAGE"))
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.requests, args.warmup)
        return
    if args.quick:
        args.requests, args.rounds, args.warmup = 5_000, 1, 1_000
    sys.path.insert(0, str(SRC))
    variants = ["baseline", "off", "on"]
    with tempfile.TemporaryDirectory() as tmp:
        sources = {"baseline": Path(tmp) / "baseline-src", "hooked": Path(tmp) / "hooked-src"}
        cut = copy_source(sources["baseline"], strip=True)
        copy_source(sources["hooked"], strip=False)
        package = make_package(Path(tmp))
        print(f"hooks removed from the baseline copy: {cut}")
        per_round: dict[str, list[float]] = {v: [] for v in variants}
        every: dict[str, list[int]] = {v: [] for v in variants}
        for r in range(args.rounds):
            order = variants if r % 2 == 0 else variants[::-1]
            for variant in order:
                times = run(variant, package, sources, args.requests, args.warmup)
                every[variant] += times
                per_round[variant].append(statistics.median(times) / 1000)
            print(f"round {r + 1}: " + ", ".join(
                f"{v} {per_round[v][-1]:.1f} us" for v in variants), flush=True)
    medians = {v: statistics.median(every[v]) / 1000 for v in variants}
    ref = medians["baseline"]
    print(f"\nmedian request time over {args.rounds} round(s) x {args.requests:,} requests:")
    for v in variants:
        print(f"  {v:9s} {medians[v]:8.1f} us  {100 * (medians[v] / ref - 1):+6.2f} % vs "
              "baseline")
    rounds = [100 * (o / b - 1) for o, b in zip(per_round["off"], per_round["baseline"],
                                                strict=True)]
    print(f"off vs baseline per round: {', '.join(f'{x:+.2f} %' for x in rounds)}")
    hook_ns = hook_cost_ns()
    print(f"the hooks themselves (timeit, no noise from the rest): {hook_ns:.0f} ns per request "
          f"(2 on a prediction's way) = {100 * hook_ns / (ref * 1000):.3f} % of the baseline")
    overhead = 100 * (medians["off"] / ref - 1)
    verdict = "PASS" if overhead <= 3.0 else "FAIL"
    print(f"tracing off: {overhead:+.2f} % over the code path without hooks "
          f"(target <= 3 %): {verdict}")


if __name__ == "__main__":
    main()
