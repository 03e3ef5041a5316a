"""Fleet proofs with figures: 3 replicas behind nginx, PostgreSQL, Redis and Prometheus on one
machine (``scripts/fleet``'s topology), under ``wrk`` load.

    .venv/bin/python benchmarks/fleet.py [--quick] [--connections 32]

One run, in this order:

1. **throughput of one server**: ``modelport serve PKG`` with 1 and with 2 ``--workers``,
   driven directly by wrk (every request a row never seen before);
2. starts the fleet (its own PostgreSQL database and its own ``redis-server``, so the write and
   round-trip counts below are this run's alone) and measures its throughput through nginx;
3. **alias move** at c=CONNECTIONS: seconds until each replica serves the new version, failed
   requests; then a **broken candidate** (golden rows disagree): refused on every replica;
4. **kill -9** of one replica under load: errors, and seconds until it answers through nginx
   again once restarted; 5. **rolling restart** of the 3 replicas: requests lost;
6. **shared state**: prediction-log rows in PostgreSQL against the rows answered (exact request
   bursts), and the Redis cache's hit rate when every row is sent a second time (it lands on
   another replica than the first time: 301 rows round-robin over 3 replicas);
7. **fleet drift**: ``modelport drift status --prometheus`` against one process fed the same
   rows (equal JSON);
8. the shared parts' load per request: PostgreSQL transactions and rows, Redis commands, and
   the Prometheus series one replica exports.

Prints a table (and writes it as JSON into ``benchmarks/results/``). Takes about 4 minutes
(``--quick``: about 2). Needs nginx, wrk, prometheus and redis-server
(``scripts/install-verify-tools``) and the PostgreSQL at ``MODELPORT_TEST_PG_URL``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
BASE_PG = os.environ.get("MODELPORT_TEST_PG_URL",
                         "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BENCH_DB = "modelport_fleet_bench"


@dataclass
class Row:
    """One line of the table."""

    proof: str
    figure: str
    target: str
    met: bool | None


# -- private PostgreSQL database and Redis ------------------------------------------------------


def _own_database() -> str:
    """A database of this benchmark's own (so pg_stat_database counts only this run)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(BASE_PG, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"),
                        {"d": BENCH_DB}).first() is None:
            conn.execute(text(f'CREATE DATABASE "{BENCH_DB}"'))
    engine.dispose()
    return BASE_PG.rsplit("/", 1)[0] + f"/{BENCH_DB}"


def _drop_own_database() -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(BASE_PG, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{BENCH_DB}"'))
    engine.dispose()


def _pg_stats(url: str) -> tuple[int, int]:
    """(transactions committed, rows inserted) in the benchmark's database so far. Backends
    report to these counters at most every second, idle ones within 10 s: read them after a
    pause."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        row = conn.execute(text("SELECT xact_commit, tup_inserted FROM pg_stat_database "
                                "WHERE datname = :d"), {"d": BENCH_DB}).one()
    engine.dispose()
    return int(row[0]), int(row[1])


def _start_redis(root: Path) -> tuple[subprocess.Popen[bytes], int]:
    from tests.fleet.topology import free_port

    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while _redis_commands(port) is None:
        if time.monotonic() > deadline:
            raise SystemExit("redis-server did not start")
        time.sleep(0.1)
    return proc, port


def _redis_commands(port: int) -> int | None:
    import redis

    try:
        info = redis.Redis(port=port, socket_timeout=1).info("stats")
    except redis.RedisError:
        return None
    return int(info["total_commands_processed"])


# -- load ---------------------------------------------------------------------------------------


def _wrk(url: str, body: dict[str, Any], connections: int, seconds: float,
         vary: bool = True) -> Any:
    from tests.fleet.load import WrkRun

    return WrkRun(url, body, connections=connections, duration_s=seconds,
                  vary="chol" if vary else None)


def _single_server(package: Path, workers: int, root: Path) -> tuple[Any, str]:
    from tests.fleet.topology import BIN, free_port, wait_http

    port = free_port()
    log = root / f"single-{workers}.log"
    argv = [str(BIN / "modelport"), "serve", str(package), "--host", "127.0.0.1", "--port",
            str(port), "--workers", str(workers)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=root, stdout=out, stderr=subprocess.STDOUT,
                                env=dict(os.environ, MODELPORT_LOG_LEVEL="warning"))
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/ready", 90, log=log)
    return proc, url


def throughput_of_one_server(package: Path, body: dict[str, Any], args: Any,
                             root: Path) -> dict[int, Any]:
    """req/s of ``--workers 1`` and ``--workers 2``, direct, every row new."""
    out = {}
    for workers in (1, 2):
        proc, url = _single_server(package, workers, root)
        try:
            _wrk(f"{url}/predict", body, args.connections, 2).wait()  # warm-up
            out[workers] = _wrk(f"{url}/predict", body, args.connections, args.seconds).wait()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    return out


# -- proofs -------------------------------------------------------------------------------------


def _served(fleet: Any) -> list[str]:
    import httpx

    return [str(httpx.get(f"{fleet.replica_url(i)}/models/{fleet.spec.model}", timeout=5)
                .json()["version"]) for i in range(fleet.spec.replicas)]


def alias_move(fleet: Any, package: Path, body: dict[str, Any], args: Any) -> list[Row]:
    """Move production to 1.1.0 under load; per replica, seconds until it serves it."""
    fleet.push("1.1.0", package)
    load = _wrk(f"{fleet.lb_url}/predict", body, args.connections, 120)
    time.sleep(2)
    fleet.move_alias("1.1.0")
    moved, reached = time.monotonic(), [0.0] * fleet.spec.replicas
    while not all(reached) and time.monotonic() - moved < 30:
        for i, version in enumerate(_served(fleet)):
            if version == "1.1.0" and not reached[i]:
                reached[i] = time.monotonic() - moved
        time.sleep(0.02)
    time.sleep(1)
    result = load.stop()
    slowest = max(reached) if all(reached) else float("inf")
    return [
        Row("alias move reaches all 3 replicas",
            f"{slowest:.2f} s (each: {', '.join(f'{r:.2f}' for r in reached)})", "<= 2 s",
            slowest <= 2),
        Row(f"  requests through nginx meanwhile (c={args.connections})",
            f"{result.requests:,} sent, {result.failed} failed", "0 failed", result.failed == 0),
    ]


def broken_candidate(fleet: Any, package: Path, body: dict[str, Any], args: Any,
                     root: Path) -> list[Row]:
    """Production moved to a version whose golden rows disagree: every replica refuses it."""
    import httpx
    from tests.fleet.topology import ADMIN_KEY
    from tests.registry.pkgs import broken_golden

    before = _served(fleet)
    fleet.push("9.0.0", broken_golden(package, root / "broken"))
    load = _wrk(f"{fleet.lb_url}/predict", body, args.connections, 120)
    time.sleep(1)
    fleet.move_alias("9.0.0")
    refused, deadline = [False] * 3, time.monotonic() + 20
    while not all(refused) and time.monotonic() < deadline:
        for i in range(3):
            view = httpx.get(f"{fleet.replica_url(i)}/admin/models", timeout=5, headers={
                "Authorization": f"Bearer {ADMIN_KEY}"}).json()[fleet.spec.model]["follow"]
            refused[i] = view["failed_target"] == "9.0.0"
        time.sleep(0.1)
    time.sleep(1)
    result = load.stop()
    kept = _served(fleet) == before
    fleet.move_alias(before[0])
    return [Row("broken candidate refused on every replica",
                f"{sum(refused)}/3 refused, still serving {before[0]}: {kept}; "
                f"{result.failed} of {result.requests:,} failed", "3/3, 0 failed",
                all(refused) and kept and result.failed == 0)]


def kill_9(fleet: Any, body: dict[str, Any], args: Any) -> list[Row]:
    """kill -9 of replica 1 under load, restart after 3 s, time until it answers again."""
    import httpx

    load = _wrk(f"{fleet.lb_url}/predict", body, args.connections, 120)
    time.sleep(3)
    fleet.signal("replica-1", signal.SIGKILL)
    fleet.wait_exit("replica-1", 5)
    time.sleep(3)
    restarted = time.monotonic()
    fleet.start_replica(1)
    fleet.wait_ready(1, 90)
    ready = time.monotonic() - restarted
    port, rejoined = str(fleet.state.ports[1]), None
    with httpx.Client(timeout=10) as client:
        while rejoined is None and time.monotonic() - restarted < 60:
            resp = client.post(f"{fleet.lb_url}/predict", json=body)
            if resp.headers.get("X-Upstream", "").endswith(f":{port}"):
                rejoined = time.monotonic() - restarted
    time.sleep(1)
    result = load.stop()
    share = result.failed / max(result.requests, 1)
    return [
        Row(f"kill -9 of 1 of 3 replicas at c={args.connections}",
            f"{result.failed} failed of {result.requests:,} ({share:.3%})",
            "<= 0.1 % (0: nginx resends predictions)", result.failed == 0),
        Row("  restarted replica takes traffic again",
            f"ready {ready:.1f} s after start, in nginx rotation at "
            f"{rejoined if rejoined is None else f'{rejoined:.1f} s'}", "rejoins",
            rejoined is not None),
    ]


def rolling_restart(fleet: Any, body: dict[str, Any], args: Any) -> list[Row]:
    """SIGTERM each replica in turn, restart it, wait until ready, next."""
    load = _wrk(f"{fleet.lb_url}/predict", body, args.connections, 180)
    time.sleep(2)
    started, codes = time.monotonic(), []
    for i in range(3):
        codes.append(fleet.stop(f"replica-{i}"))
        fleet.start_replica(i)
        fleet.wait_ready(i, 90)
    took = time.monotonic() - started
    time.sleep(1)
    result = load.stop()
    return [Row(f"rolling restart of 3 replicas at c={args.connections}",
                f"{result.failed} lost of {result.requests:,} in {took:.0f} s; exit codes "
                f"{codes}", "0 lost, each drains (exit 0)",
                result.failed == 0 and codes == [0, 0, 0])]


def shared_state(fleet: Any, records: list[dict[str, Any]], args: Any) -> list[Row]:
    """Prediction log rows vs answered rows; cache hit rate of a second pass."""
    import sqlalchemy as sa
    from tests.fleet.load import send_exactly

    n = 2000 if not args.quick else 600
    bodies = [{"features": dict(r, chol=10**7 + k)} for k, r in
              enumerate(records[i % len(records)] for i in range(n))]
    answers = send_exactly(f"{fleet.lb_url}/predict", bodies, concurrency=16)
    ids = [a.json()["request_id"] for a in answers if a.status_code == 200]
    engine = sa.create_engine(fleet.log_url)
    query = sa.text("SELECT count(*) FROM modelport_predictions WHERE model = :m AND "
                    "request_id = ANY(:ids)")
    logged, deadline = -1, time.monotonic() + 30
    while logged < len(ids) and time.monotonic() < deadline:
        time.sleep(0.5)
        with engine.connect() as conn:
            logged = int(conn.execute(query, {"m": fleet.spec.model, "ids": ids}).scalar_one())
    engine.dispose()
    ok = len(ids)
    rows = [dict(records[k], chol=2 * 10**7 + k) for k in range(301)]
    first = _cache_counts(fleet)
    # one at a time: round robin sends row k of the second pass to the replica after the one
    # that answered it first, so only a shared cache can hit
    send_exactly(f"{fleet.lb_url}/predict", [{"features": r} for r in rows], concurrency=1)
    mid = _cache_counts(fleet)
    send_exactly(f"{fleet.lb_url}/predict", [{"features": r} for r in rows], concurrency=1)
    last = _cache_counts(fleet)
    hits = last["hit"] - mid["hit"]
    rate = hits / max(hits + last["miss"] - mid["miss"], 1)
    first_hits = mid["hit"] - first["hit"]
    return [
        Row("prediction-log rows in PostgreSQL = rows answered",
            f"{logged:,} logged, {ok:,} answered of {n:,} sent", "equal", logged == ok == n),
        Row("Redis cache shared: hit rate of a second pass",
            f"{rate:.1%} ({hits:.0f} hits; first pass {first_hits:.0f} hits)",
            "100 % (a cache per replica: 0 %)", rate == 1.0),
    ]


def _cache_counts(fleet: Any) -> dict[str, float]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    out = {"hit": 0.0, "miss": 0.0}
    for i in range(fleet.spec.replicas):
        text = httpx.get(f"{fleet.replica_url(i)}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "modelport_cache_lookups_total" and \
                        s.labels.get("model") == fleet.spec.model:
                    out[s.labels["result"]] += s.value
    return out


def fleet_drift(fleet: Any, records: list[dict[str, Any]], root: Path) -> list[Row]:
    """drift status --prometheus against one process fed the same rows."""
    from tests.fleet.load import send_exactly
    from tests.fleet.topology import BIN, free_port, prom_value, wait_http
    from typer.testing import CliRunner

    from modelport.cli import app

    port = free_port()
    argv = [str(BIN / "modelport"), "serve", f"{fleet.spec.model}@production", "--host",
            "127.0.0.1", "--port", str(port), "--db", fleet.registry_url, "--store",
            str(fleet.store)]
    with open(root / "drift-single.log", "wb") as log:
        proc = subprocess.Popen(argv, cwd=root, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ, MODELPORT_LOG_LEVEL="warning"))
    try:
        single = f"http://127.0.0.1:{port}"
        wait_http(f"{single}/ready", 90, log=root / "drift-single.log")
        query = (f'sum(modelport_drift_window_rows{{model="{fleet.spec.model}", '
                 f'version="2.0.0"}})')
        rows = [dict(r, age=r["age"] + 15) for r in records[:900]]
        bodies = [{"instances": rows[i:i + 3]} for i in range(0, len(rows), 3)]
        for url in (f"{fleet.lb_url}/predict", f"{single}/predict"):
            send_exactly(url, bodies, concurrency=8)
        deadline = time.monotonic() + 20
        while prom_value(fleet.prom_url, query) != 900 and time.monotonic() < deadline:
            time.sleep(0.5)

        def status(*args: str) -> Any:
            return json.loads(CliRunner().invoke(app, ["drift", "status", *args,
                                                       "--json"]).stdout)

        by_fleet = status(fleet.lb_url, "--prometheus", fleet.prom_url)
        alone = status(single)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    equal = by_fleet == alone
    return [Row("fleet drift (Prometheus sums) = one process fed the same rows",
                f"equal: {equal}; {by_fleet[0]['status']} over "
                f"{by_fleet[0]['window_rows']:,} rows", "equal, exactly", equal)]


def fresh_fleet_for_drift(fleet: Any) -> None:
    """A new version (same artifact) so that the fleet's drift windows start empty."""
    fleet.push("2.0.0", Path(fleet.spec.package))
    fleet.move_alias("2.0.0")
    deadline = time.monotonic() + 30
    while _served(fleet) != ["2.0.0"] * 3 and time.monotonic() < deadline:
        time.sleep(0.1)


def shared_parts(fleet: Any, body: dict[str, Any], args: Any, pg_url: str,
                 redis_port: int) -> tuple[list[Row], dict[str, float]]:
    """Fleet throughput through nginx, with PostgreSQL and Redis work per request."""
    from tests.fleet.topology import prom_value

    time.sleep(11)  # counters settle
    idle0, t0 = _pg_stats(pg_url)[0], time.monotonic()
    time.sleep(12)
    idle_rate = (_pg_stats(pg_url)[0] - idle0) / (time.monotonic() - t0)
    (commits0, rows0), redis0 = _pg_stats(pg_url), _redis_commands(redis_port) or 0
    t1 = time.monotonic()
    result = _wrk(f"{fleet.lb_url}/predict", body, args.connections, args.seconds).wait()
    redis_cmds = (_redis_commands(redis_port) or 0) - redis0
    time.sleep(11)  # the last log batch, and the counters settle
    commits1, rows1 = _pg_stats(pg_url)
    commits = commits1 - commits0 - idle_rate * (time.monotonic() - t1)
    series = prom_value(fleet.prom_url, 'count({__name__=~"modelport_.+", '
                                        'replica="replica-0"})') or 0
    drift_series = prom_value(fleet.prom_url, 'count({__name__=~"modelport_drift_.+", '
                                              'replica="replica-0"})') or 0
    figures = {"rps": result.rps, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
               "pg_commits_per_request": commits / max(result.requests, 1),
               "pg_idle_commits_per_s": idle_rate,
               "pg_rows_per_request": (rows1 - rows0) / max(result.requests, 1),
               "redis_commands_per_request": redis_cmds / max(result.requests, 1),
               "series_per_replica": series, "drift_series_per_replica": drift_series,
               "failed": result.failed}
    rows = [
        Row(f"fleet of 3 through nginx, c={args.connections}",
            f"{result.rps:,.0f} req/s, p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
            f"{result.failed} failed", "", None),
        Row("  PostgreSQL per request: transactions (log, batched); rows",
            f"{figures['pg_commits_per_request']:.4f}; {figures['pg_rows_per_request']:.2f} "
            f"(+ {idle_rate:.1f} transactions/s idle: alias polls)", "", None),
        Row("  Redis commands per request (MGET + SET, 2 round trips)",
            f"{figures['redis_commands_per_request']:.2f}", "", None),
        Row("  Prometheus series one replica exports (1 model)",
            f"{series:.0f} ({drift_series:.0f} drift)", "", None),
    ]
    return rows, figures


# -- main ---------------------------------------------------------------------------------------


def _records(package_dir: Path) -> list[dict[str, Any]]:
    import pandas as pd

    frame = pd.read_csv(package_dir.parent / "heart.csv").drop(columns="condition")
    rows: list[dict[str, Any]] = json.loads(frame.to_json(orient="records"))
    return rows


def main() -> None:
    """Run every proof; print the table; write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 s load cells")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    args.seconds = 5 if args.quick else 10
    from tests.fleet.topology import find_nginx

    missing = [t for t in ("wrk", "prometheus", "redis-server") if shutil.which(t) is None]
    if find_nginx() is None or missing:
        raise SystemExit(f"missing {missing or ['nginx']}: run scripts/install-verify-tools")
    pg_url = _own_database()
    os.environ["MODELPORT_TEST_PG_URL"] = pg_url
    with tempfile.TemporaryDirectory(prefix="modelport-fleet-bench-") as tmp:
        root = Path(tmp)
        redis_proc, redis_port = _start_redis(root)
        os.environ["MODELPORT_TEST_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        try:
            rows, figures = run(root, args, pg_url, redis_port)
        finally:
            redis_proc.terminate()
            redis_proc.wait(10)
            _drop_own_database()
    _print(rows, args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"fleet-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"rows": [r.__dict__ for r in rows], "figures": figures,
                               "connections": args.connections, "cpus": os.cpu_count()},
                              indent=1))
    print(f"\nwritten to {out}")


def run(root: Path, args: Any, pg_url: str, redis_port: int) -> tuple[list[Row], dict[str, Any]]:
    """Every measurement, in order."""
    from tests.fleet.topology import Fleet, FleetSpec, example_package

    package = example_package(root / "example")
    records = _records(package)
    body = {"features": records[0]}
    single = throughput_of_one_server(package, body, args, root)
    rows = [Row(f"one server, --workers {w}, c={args.connections}",
                f"{r.rps:,.0f} req/s, p99 {r.p99_ms:.1f} ms", "", None)
            for w, r in single.items()]
    rows.append(Row("  --workers 2 / --workers 1", f"{single[2].rps / single[1].rps:.2f}x",
                    f"(this machine: {os.cpu_count()} CPUs)", None))
    fleet = Fleet.create(root / "fleet", FleetSpec(str(package), "fleet_bench", 3,
                                                    prometheus=True))
    try:
        fleet.up()
        part_rows, figures = shared_parts(fleet, body, args, pg_url, redis_port)
        rows += part_rows
        rows += alias_move(fleet, package, body, args)
        rows += broken_candidate(fleet, package, body, args, root)
        rows += kill_9(fleet, body, args)
        rows += rolling_restart(fleet, body, args)
        rows += shared_state(fleet, records, args)
        fresh_fleet_for_drift(fleet)
        rows += fleet_drift(fleet, records, root)
    finally:
        fleet.down()
    figures["single"] = {w: r.rps for w, r in single.items()}
    return rows, figures


def _print(rows: list[Row], args: Any) -> None:
    width = max(len(r.proof) for r in rows)
    fig = max(len(r.figure) for r in rows)
    print(f"\nmodelport fleet: 3 replicas behind nginx, PostgreSQL, Redis, Prometheus; "
          f"{os.cpu_count()} CPUs; wrk c={args.connections}\n")
    print(f"{'proof':<{width}}  {'measured':<{fig}}  {'target':<32}  met")
    print("-" * (width + fig + 42))
    for r in rows:
        met = "" if r.met is None else ("yes" if r.met else "NO")
        print(f"{r.proof:<{width}}  {r.figure:<{fig}}  {r.target:<32}  {met}")


if __name__ == "__main__":
    main()
