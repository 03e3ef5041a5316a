"""gRPC beside REST V2 JSON: the same server, the same model, the same rows, one run.

    .venv/bin/python benchmarks/grpc_vs_rest.py [--quick] [--duration S] [--rounds N]

(Not ``grpc.py``: run as a script, its folder comes first on ``sys.path`` and a file of that
name would stand in for the grpc package.)

1. trains, packs and converts to ONNX the model of ``benchmarks/serving.py`` (its
   ``prepare``): ``Pipeline(StandardScaler, GradientBoostingClassifier(100))`` on the 13 heart
   features;
2. starts one ``modelport serve PKG --runtime onnx`` (REST and gRPC in one process) and the
   gRPC floor (``apps/grpc_bare.py``: a bare ``grpc.aio`` server on uvloop whose
   ``ModelInfer`` answers a constant ``ModelInferResponse``), both pinned to CPU 0; the load
   generators get CPU 1;
3. checks that REST V2 JSON, gRPC raw and gRPC typed all answer 1 and 100 rows as the model
   does, and that the floor answers validly;
4. drives every protocol with a load generator written in C, so that the client is not what is
   measured: ``wrk`` (HTTP/1.1) for REST V2 JSON, ``h2load`` (HTTP/2, the nghttp2-client
   package) for gRPC, posting the same request each time:
   - 1 row, 1 request in flight; 1 row, 64 in flight (one call per connection at a time);
   - 100 rows, 8 in flight;
   every request is the Open Inference Protocol's ``pd`` layout: one tensor per feature
   (``INT64``/``FP64``), in JSON for REST, in ``raw_input_contents`` (tritonclient's default)
   or in typed ``contents`` for gRPC; the gRPC floor gets the raw bodies;
5. prints req/s, rows/s, p50 and p99 (h2load's per-request log for gRPC), errors (gRPC errors
   travel in trailers, so they are read from the server's request metrics), the model's time
   per request (the growth of ``modelport_inference_duration_seconds_sum``), the ratios to
   REST and to the gRPC floor; issue 19's targets for gRPC raw and typed against the floor
   (1 row c=64: req/s >= 0.5x the floor's; 1 row c=1: p50 <= 1.5x the floor's; 100 rows c=8:
   the time per request outside the model <= 1.3x the floor's whole request) and issue 13's;
   writes JSON into ``benchmarks/results/``.

Every cell runs in each round (3 rounds of 5 s after a 1 s warm-up; ``--quick``: 1 round of
3 s) and the table shows the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import LUA, ROOT, find_wrk, floor_targets, free_port, histogram_sums, prepare

RESULTS = ROOT / "benchmarks" / "results"
BIN = Path(sys.executable).parent
INFER = "/inference.GRPCInferenceService/ModelInfer"
WORKLOADS = [("1 row, c=1", 1, 1), ("1 row, c=64", 64, 1), ("100 rows, c=8", 8, 100)]
PROTOCOLS = ["REST V2 JSON", "gRPC raw", "gRPC typed", "gRPC floor"]
FLOOR = "gRPC floor"
"""The bare grpc.aio server (``apps/grpc_bare.py``), sent the gRPC raw bodies."""


@dataclass(frozen=True)
class Cell:
    """One load run of one protocol."""

    protocol: str
    workload: str
    concurrency: int
    rows_per_request: int
    req_s: float
    rows_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    model_us: float | None = None
    """Model time per request (modelport's inference-duration metric; None for the floor)."""


def main() -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round of 3 s cells")
    parser.add_argument("--duration", type=int, help="whole seconds per cell (default 5)")
    parser.add_argument("--rounds", type=int, help="rounds over every cell (default 3)")
    args = parser.parse_args()
    duration = max(1, args.duration or (3 if args.quick else 5))
    rounds = max(1, args.rounds or (1 if args.quick else 3))
    wrk, h2load = find_wrk(), find_h2load()
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, load_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    with tempfile.TemporaryDirectory(prefix="mp-grpc-") as name:
        tmp = Path(name)
        pkg, model_path, rows = prepare(tmp)
        bodies = write_bodies(tmp, pkg, rows)
        proc, http, grpc_at = start(pkg, server_cpu, tmp)
        floor: subprocess.Popen[bytes] | None = None
        try:
            floor, floor_at = start_floor(server_cpu, tmp)
            check_answers(http, grpc_at, model_path, bodies, rows)
            check_floor(floor_at, bodies)
            load = Load(wrk, h2load, http, grpc_at, floor_at, load_cpu, tmp)
            runs = [drive(load, bodies, duration, f"round {r + 1} of {rounds}")
                    for r in range(rounds)]
        finally:
            for p in (proc, floor):
                if p is not None:
                    p.terminate()
                    p.wait(30)
    report(runs, duration=duration, pinned=server_cpu is not None)


def find_h2load() -> str:
    """The ``h2load`` binary (Debian's nghttp2-client), installed when missing and root."""
    found = shutil.which("h2load")
    if not found and os.geteuid() == 0 and shutil.which("apt-get"):
        print("h2load not found: apt-get install -y nghttp2-client", flush=True)
        subprocess.run(["apt-get", "install", "-y", "nghttp2-client"], check=False,
                       stdout=subprocess.DEVNULL)
        found = shutil.which("h2load")
    if not found:
        sys.exit("h2load is needed: install the Debian/Ubuntu package 'nghttp2-client'")
    return found


def write_bodies(tmp: Path, pkg: Path,
                 rows: list[list[float]]) -> dict[tuple[str, int], Path]:
    """The request bodies of every protocol for 1 and 100 rows, as files for the loaders: one
    tensor per feature, of the datatype the model's V2 metadata gives it."""
    from modelport.package import load_model
    from modelport.server.grpc import oip_pb2 as pb
    from modelport.server.v2codec import feature_datatype

    features = load_model(pkg).signature.features
    out: dict[tuple[str, int], Path] = {}
    for n in (1, 100):
        columns = [list(c) for c in zip(*rows[:n], strict=True)]
        specs = [(f.name, feature_datatype(f.dtype), col)
                 for f, col in zip(features, columns, strict=True)]
        rest = {"inputs": [{"name": s, "shape": [n], "datatype": d,
                            "data": [int(v) for v in col] if d == "INT64" else col}
                           for s, d, col in specs]}
        out[("REST V2 JSON", n)] = tmp / f"rest-{n}.json"
        out[("REST V2 JSON", n)].write_text(json.dumps(rest))
        out[(FLOOR, n)] = tmp / f"grpc-raw-{n}.bin"  # written below
        for kind in ("raw", "typed"):
            request = pb.ModelInferRequest(model_name="heart")
            for name, datatype, col in specs:
                tensor = request.inputs.add(name=name, datatype=datatype, shape=[n])
                values = [int(v) for v in col] if datatype == "INT64" else col
                if kind == "raw":
                    fmt = "<i8" if datatype == "INT64" else "<f8"
                    request.raw_input_contents.append(_pack(values, fmt))
                elif datatype == "INT64":
                    tensor.contents.int64_contents.extend(values)
                else:
                    tensor.contents.fp64_contents.extend(values)
            message = request.SerializeToString()
            path = tmp / f"grpc-{kind}-{n}.bin"
            path.write_bytes(b"\x00" + struct.pack(">I", len(message)) + message)  # gRPC frame
            out[(f"gRPC {kind}", n)] = path
    return out


def _pack(values: list[Any], fmt: str) -> bytes:
    import numpy as np

    return np.asarray(values, dtype=fmt).tobytes()


def start(pkg: Path, cpu: int | None, tmp: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """``modelport serve PKG --runtime onnx`` with REST and gRPC; waits until both answer."""
    port, grpc_port = free_port(), free_port()
    argv = [str(BIN / "modelport"), "serve", str(pkg), "--runtime", "onnx", "--host",
            "127.0.0.1", "--port", str(port), "--grpc-port", str(grpc_port)]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    log = (tmp / "server.log").open("wb")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}  # this checkout's code
    proc = subprocess.Popen(argv, cwd=tmp, env=env, stdout=log, stderr=log)
    log.close()
    http, grpc_at = f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited with {proc.returncode}: see {tmp / 'server.log'}")
        if _grpc_ready(grpc_at):
            return proc, http, grpc_at
        time.sleep(0.2)
    proc.kill()
    sys.exit("the server was not ready within 120 s")


def start_floor(cpu: int | None, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The bare grpc.aio floor (``apps/grpc_bare.py``), pinned as the server is; waits until
    its health service answers."""
    port = free_port()
    argv = [str(BIN / "python"), str(ROOT / "benchmarks" / "apps" / "grpc_bare.py"), "--port",
            str(port)]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    log = (tmp / "grpc-floor.log").open("wb")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}  # its stubs: this checkout's
    proc = subprocess.Popen(argv, cwd=tmp, env=env, stdout=log, stderr=log)
    log.close()
    target = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the gRPC floor exited with {proc.returncode}: see {tmp / 'grpc-floor.log'}")
        if _grpc_ready(target):
            return proc, target
        time.sleep(0.2)
    proc.kill()
    sys.exit("the gRPC floor was not ready within 60 s")


def check_floor(target: str, bodies: dict[tuple[str, int], Path]) -> None:
    """The floor answers the 1- and 100-row raw requests with a valid ModelInferResponse of
    as many rows."""
    import grpc

    from modelport.server.grpc import oip_pb2 as pb
    from modelport.server.grpc.oip_pb2_grpc import GRPCInferenceServiceStub

    with grpc.insecure_channel(target) as channel:
        stub = GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        for n in (1, 100):
            answer = stub.ModelInfer(pb.ModelInferRequest.FromString(
                bodies[(FLOOR, n)].read_bytes()[5:]), timeout=10)
            if _proba(answer).shape != (n, 2):
                sys.exit(f"the gRPC floor answered {n} rows with {_proba(answer).shape}")
    print("checked gRPC floor: valid answers (a constant)", flush=True)


def _grpc_ready(target: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            answer = stub.Check(health_pb2.HealthCheckRequest(),  # type: ignore[attr-defined]
                                timeout=1)
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


def check_answers(http: str, grpc_at: str, model_path: Path,
                  bodies: dict[tuple[str, int], Path], rows: list[list[float]]) -> None:
    """REST V2 JSON, gRPC raw and gRPC typed answer 1 and 100 rows as the model does."""
    import grpc
    import joblib
    import numpy as np
    import pandas as pd

    from modelport.server.grpc import oip_pb2 as pb
    from modelport.server.grpc.oip_pb2_grpc import GRPCInferenceServiceStub

    model = joblib.load(model_path)
    frame = pd.DataFrame(rows, columns=model.feature_names_in_)
    want = model.predict_proba(frame)
    with grpc.insecure_channel(grpc_at) as channel:
        stub = GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        for n in (1, 100):
            req = urllib.request.Request(f"{http}/v2/models/heart/infer",
                                         bodies[("REST V2 JSON", n)].read_bytes(), method="POST",
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                doc = json.loads(resp.read())
            got = {o["name"]: np.reshape(o["data"], o["shape"]) for o in doc["outputs"]}
            answers = {"REST V2 JSON": got["predict_proba"]}
            for kind in ("raw", "typed"):
                answer = stub.ModelInfer(pb.ModelInferRequest.FromString(
                    bodies[(f"gRPC {kind}", n)].read_bytes()[5:]), timeout=10)
                answers[f"gRPC {kind}"] = _proba(answer)
            for protocol, proba in answers.items():
                diff = float(np.max(np.abs(proba - want[:n])))
                if diff > 1e-4:  # ONNX: float32 inside
                    sys.exit(f"{protocol}, {n} rows: answers differ from the model ({diff:.3g})")
    print("checked REST V2 JSON, gRPC raw and gRPC typed: answers match the model", flush=True)


def _proba(answer: Any) -> Any:
    import numpy as np

    i = [o.name for o in answer.outputs].index("predict_proba")
    shape = list(answer.outputs[i].shape)
    fp32 = answer.outputs[i].datatype == "FP32"  # ONNX answers float32
    if answer.raw_output_contents:
        return np.frombuffer(answer.raw_output_contents[i], "<f4" if fp32 else "<f8").reshape(
            shape)
    contents = answer.outputs[i].contents
    return np.reshape(contents.fp32_contents if fp32 else contents.fp64_contents, shape)


@dataclass(frozen=True)
class Load:
    """The load generators and where they send."""

    wrk: str
    h2load: str
    http: str
    grpc_at: str
    floor_at: str
    cpu: int | None
    tmp: Path

    def pinned(self, argv: list[str]) -> list[str]:
        """``argv`` on the load generators' CPU."""
        return argv if self.cpu is None else ["taskset", "-c", str(self.cpu), *argv]


def drive(load: Load, bodies: dict[tuple[str, int], Path], duration: int,
          title: str) -> list[Cell]:
    """Every workload on every protocol, the protocols taking turns."""
    print(f"-- {title}", flush=True)
    cells = []
    for label, conc, n in WORKLOADS:
        for protocol in PROTOCOLS:
            body = bodies[(protocol, n)]
            run = run_wrk if protocol.startswith("REST") else run_h2load
            target = load.floor_at if protocol == FLOOR else load.grpc_at
            run(load, body, conc, 1, target)  # warm-up
            errors = grpc_errors(load.http)
            before = histogram_sums(f"{load.http}/metrics")[0]
            req_s, p50, p99, failed, requests = run(load, body, conc, duration, target)
            model_us = None
            if protocol != FLOOR:
                model_s = histogram_sums(f"{load.http}/metrics")[0] - before
                model_us = model_s / max(1, requests) * 1e6
            if protocol.startswith("gRPC") and protocol != FLOOR:
                failed += grpc_errors(load.http) - errors
            c = Cell(protocol, label, conc, n, req_s, req_s * n, p50, p99, failed, model_us)
            cells.append(c)
            model = f"  model {model_us:6.1f} us/req" if model_us is not None else ""
            print(f"{label:14} {protocol:13} {c.req_s:8.0f} req/s {c.rows_s:9.0f} rows/s  "
                  f"p50 {c.p50_ms:6.2f} ms  p99 {c.p99_ms:6.2f} ms  errors {c.errors}{model}",
                  flush=True)
    return cells


def run_wrk(load: Load, body: Path, conc: int, duration: int,
            _target: str = "") -> tuple[float, float, float, int, int]:
    """REST: req/s, p50 ms, p99 ms, errors, requests answered."""
    script = load.tmp / f"{body.stem}.lua"
    script.write_text(LUA.replace("BODY", body.read_text()))
    argv = load.pinned([load.wrk, "-t1", f"-c{conc}", f"-d{duration}s", "--timeout", "5s",
                        "-s", str(script), f"{load.http}/v2/models/heart/infer"])
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    doc = json.loads([x for x in out.splitlines() if x.startswith("{")][-1])
    errors = sum(doc[k] for k in ("connect", "read", "write", "status", "timeout"))
    return (doc["requests"] / (doc["duration_us"] / 1e6), doc["p50_us"] / 1000,
            doc["p99_us"] / 1000, errors, doc["requests"])


def run_h2load(load: Load, body: Path, conc: int, duration: int,
               target: str) -> tuple[float, float, float, int, int]:
    """gRPC over h2c to ``target``: req/s, p50 ms, p99 ms, HTTP-level failures (gRPC statuses
    are counted from the server's metrics by the caller), requests that succeeded."""
    log = load.tmp / "h2load.log"
    log.unlink(missing_ok=True)  # h2load appends
    argv = load.pinned([load.h2load, "-D", str(duration), "-c", str(conc), "-m", "1",
                        "-d", str(body), "-H", "content-type: application/grpc",
                        "-H", "te: trailers", f"--log-file={log}",
                        f"http://{target}{INFER}"])
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("requests:"))
    parts = {k: int(v) for v, k in (p.split()[:2] for p in line.split(":", 1)[1].split(","))}
    micros = sorted(int(x.split("\t")[2]) for x in log.read_text().splitlines() if x)
    return (parts["succeeded"] / duration, _percentile(micros, 50) / 1000,
            _percentile(micros, 99) / 1000, parts["failed"] + parts["errored"],
            parts["succeeded"])


def _percentile(values: list[int], pct: float) -> float:
    if not values:
        return float("nan")
    return float(values[min(len(values) - 1, round(pct / 100 * (len(values) - 1)))])


def grpc_errors(http: str) -> int:
    """gRPC calls the server answered with an error so far (its request metrics). Status 499
    (the client went away) is not one: h2load ends each run by closing its connections, and
    the calls it still had in flight (waiting for a batch) are cancelled."""
    with urllib.request.urlopen(f"{http}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return int(sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines()
                   if x.startswith("modelport_requests_total{") and 'protocol="grpc"' in x
                   and 'status="200"' not in x and 'status="499"' not in x))


def report(runs: list[list[Cell]], *, duration: int, pinned: bool) -> None:
    """The median table, the ratios and the targets; the JSON file."""
    cells = [_median(group) for group in zip(*runs, strict=True)]
    where = "server on CPU 0, load on CPU 1" if pinned else "NOT pinned (one core)"
    print(f"\nmedians of {len(runs)} round(s) of {duration} s per cell; {where}\n")
    print(f"{'workload':14} {'protocol':13} {'req/s':>8} {'rows/s':>9} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'errors':>6} {'x REST':>7} {'x floor':>7} {'us/req':>7} "
          f"{'model':>7}")
    by = {(c.workload, c.protocol): c for c in cells}
    for c in cells:
        rest, floor = by[(c.workload, "REST V2 JSON")], by[(c.workload, FLOOR)]
        model = f"{c.model_us:7.0f}" if c.model_us is not None else f"{'':7}"
        print(f"{c.workload:14} {c.protocol:13} {c.req_s:8.0f} {c.rows_s:9.0f} {c.p50_ms:7.2f} "
              f"{c.p99_ms:7.2f} {c.errors:6d} {c.req_s / rest.req_s:7.2f} "
              f"{c.req_s / floor.req_s:7.2f} {1e6 / c.req_s:7.0f} {model}")
    print("\nx floor: req/s over the bare grpc.aio floor's (apps/grpc_bare.py) in the same "
          "workload; us/req: 1 / req/s; model: of which the model calls (inference-duration "
          "metric).")
    one, batch = ("1 row, c=64", "100 rows, c=8")
    targets = [
        (f"gRPC 1-row c=64 >= REST V2 JSON: raw {by[(one, 'gRPC raw')].req_s:.0f} vs "
         f"{by[(one, 'REST V2 JSON')].req_s:.0f} req/s",
         by[(one, "gRPC raw")].req_s >= by[(one, "REST V2 JSON")].req_s),
        (f"gRPC 100-row raw rows/s >= 1.5x REST JSON: "
         f"{by[(batch, 'gRPC raw')].rows_s / by[(batch, 'REST V2 JSON')].rows_s:.2f}x",
         by[(batch, "gRPC raw")].rows_s >= 1.5 * by[(batch, "REST V2 JSON")].rows_s),
        ("zero errors in every cell", all(c.errors == 0 for c in cells)),
    ]
    wire = []
    for protocol in ("gRPC raw", "gRPC typed"):
        c1, c64, cb = (by[(w, protocol)] for w in ("1 row, c=1", one, batch))
        wire += floor_targets(f"modelport {protocol}", "the gRPC floor",
                              one64=(c64.req_s, by[(one, FLOOR)].req_s),
                              one1=(c1.p50_ms, by[("1 row, c=1", FLOOR)].p50_ms),
                              batch=(cb.req_s, cb.model_us or 0.0, by[(batch, FLOOR)].req_s))
    for title, group in (("targets (issue 19, against the bare gRPC floor)", wire),
                         ("targets (issue 13)", targets)):
        print(f"\n{title}:")
        for text, ok in group:
            print(f"  [{'met' if ok else 'MISSED'}] {text}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / time.strftime("grpc-%Y%m%d-%H%M%S.json")
    out.write_text(json.dumps({"duration_s": duration, "rounds": len(runs), "pinned": pinned,
                               "cells": [asdict(c) for c in cells],
                               "rounds_cells": [[asdict(c) for c in r] for r in runs],
                               "targets": [{"issue": issue, "target": t, "met": ok}
                                           for issue, group in (("19", wire), ("13", targets))
                                           for t, ok in group]},
                              indent=2))
    print(f"\nwrote {out.relative_to(ROOT)}")


def _median(group: tuple[Cell, ...]) -> Cell:
    first = group[0]
    req_s = statistics.median(c.req_s for c in group)
    model = [c.model_us for c in group if c.model_us is not None]
    return Cell(first.protocol, first.workload, first.concurrency, first.rows_per_request,
                req_s, req_s * first.rows_per_request,
                statistics.median(c.p50_ms for c in group),
                statistics.median(c.p99_ms for c in group), sum(c.errors for c in group),
                statistics.median(model) if model else None)


if __name__ == "__main__":
    main()
