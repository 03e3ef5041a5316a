"""``modelport predict``, ``stream`` and ``loadtest``: one library call each, plus formatting."""

from __future__ import annotations

import dataclasses
import json
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the batch, streaming and load-test commands to ``app``."""
    app.command("predict")(predict)
    app.command("stream")(stream)
    app.command("loadtest")(loadtest)


def predict(
    package: Annotated[Path, typer.Argument(help="Package directory or model file.")],
    input: Annotated[str, typer.Argument(help="CSV / Parquet / JSON-lines file, or a glob.")],
    *,
    out: Annotated[Path, typer.Option("--out", help="Output file (.parquet, or .csv).")],
    id_cols: Annotated[str, typer.Option("--id-cols", help="Input columns to keep, comma "
                                         "separated.")] = "",
    chunk_rows: Annotated[int, typer.Option(help="Rows read and scored at once.")] = 50_000,
    dask: Annotated[str | None, typer.Option(help="'local' or a scheduler address "
                                             "(tcp://host:8786).")] = None,
    dask_workers: Annotated[int | None, typer.Option(help="Worker processes for --dask "
                                                     "local (default: one per CPU).")] = None,
    rejects: Annotated[Path | None, typer.Option(help="Where rows that fail validation go "
                                                 "(default: OUT.rejects.parquet).")] = None,
) -> None:
    """Score a file (or many) offline, in chunks with constant memory."""
    from rich.console import Console
    from rich.progress import Progress

    from modelport.tools import batch

    total = batch.count_rows(batch.resolve_inputs(input))
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("scoring", total=total)
        result = batch.score(package, input, out, id_cols=[c for c in id_cols.split(",") if c],
                             chunk_rows=chunk_rows, rejects=rejects, dask=dask,
                             dask_workers=dask_workers,
                             on_rows=lambda n: bar.advance(task, n))
    typer.echo(f"rows in: {result.rows_in}  scored: {result.scored}  rejected: "
               f"{result.rejected}  ({result.rows_per_s:,.0f} rows/s)")
    typer.echo(f"predictions: {result.output}")
    typer.echo(f"rejects: {result.rejects}")


def stream(
    package: Annotated[Path, typer.Argument(help="Package directory or model file.")],
    *,
    redis: Annotated[str, typer.Option("--redis")] = "redis://127.0.0.1:6379",
    in_stream: Annotated[str, typer.Option("--in", help="Stream of requests.")] = "requests",
    out_stream: Annotated[str, typer.Option("--out", help="Stream of predictions.")] =
    "predictions",
    group: Annotated[str, typer.Option(help="Consumer group.")] = "modelport",
    consumer: Annotated[str | None, typer.Option(help="This consumer's name (default: "
                                                 "host-pid).")] = None,
    batch: Annotated[int, typer.Option(help="Most requests predicted at once.")] = 64,
    claim_idle_ms: Annotated[int, typer.Option(help="Take over requests another consumer "
                                               "left pending this long.")] = 5000,
    idle_exit: Annotated[float | None, typer.Option(help="Stop after this many seconds "
                                                    "without requests.")] = None,
    done_ttl_s: Annotated[int, typer.Option(help="Remember answered input ids this long "
                                            "(no second output for a redelivery); 0: for "
                                            "ever.")] = 7 * 24 * 3600,
) -> None:
    """Predict requests from a Redis Stream into another one (at-least-once, idempotent)."""
    from modelport.package import load_model
    from modelport.tools.stream import StreamConfig, consume

    model = load_model(package)
    config = StreamConfig(redis, in_stream, out_stream, group, batch=batch,
                          claim_idle_ms=claim_idle_ms, done_ttl_s=done_ttl_s)
    if consumer:
        config = dataclasses.replace(config, consumer=consumer)
    stopping: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))
    typer.echo(f"consumer {config.consumer}: {in_stream} -> {out_stream} (group {group})",
               err=True)
    stats = consume(model, config, stop=lambda: bool(stopping), idle_exit_s=idle_exit)
    typer.echo(f"read: {stats.read}  predicted: {stats.predicted}  rejected: {stats.rejected}"
               f"  duplicates: {stats.duplicates}  claimed: {stats.claimed}")


def loadtest(
    url: Annotated[str, typer.Argument(help="Server base URL (or the endpoint, with --data "
                                       "and no --model).")],
    *,
    model: Annotated[str | None, typer.Option(
        help="Model name served at URL (default: the one model it serves).")] = None,
    rps: Annotated[float | None, typer.Option(help="Open loop: requests per second.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Closed loop: requests in "
                                                    "flight.")] = None,
    duration: Annotated[str, typer.Option(help="Measured time, e.g. 30s.")] = "30s",
    warmup: Annotated[str, typer.Option(help="Unmeasured time first.")] = "2s",
    processes: Annotated[int, typer.Option(help="Load-generating processes.")] = 2,
    data: Annotated[Path | None, typer.Option(help="Rows to send (CSV, Parquet, "
                                              "JSON lines).")] = None,
    slo_p99: Annotated[str | None, typer.Option(help="e.g. 200ms")] = None,
    slo_rps: Annotated[float | None, typer.Option(help="Least throughput, req/s.")] = None,
    slo_error_rate: Annotated[str | None, typer.Option(help="e.g. 0.1%")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Load-test a server and judge it against SLOs (exit code 1 when one fails)."""
    from modelport.tools import loadtest as lt
    from modelport.tools.loadtest_report import Slo, parse_duration, parse_fraction

    plan = lt.LoadPlan(url, model, rps, concurrency, parse_duration(duration),
                       parse_duration(warmup), processes, data)
    slos = [Slo("p99", parse_duration(slo_p99) * 1000)] if slo_p99 else []
    slos += [Slo("rps", slo_rps)] if slo_rps is not None else []
    slos += [Slo("error_rate", parse_fraction(slo_error_rate))] if slo_error_rate else []
    report = _run_live(lt, plan, quiet=as_json).judged(slos)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_report(report)
    if not report.passed:
        raise SystemExit(1)  # typer.Exit's code is lost when the app runs non-standalone


def _run_live(lt: Any, plan: Any, *, quiet: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    columns = (TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.fields[requests]} requests, {task.fields[errors]} errors"))
    with Progress(*columns, console=Console(stderr=True, quiet=quiet), transient=True) as bar:
        task = bar.add_task("load", total=plan.warmup_s + plan.duration_s, requests=0, errors=0)
        return lt.run(plan, on_progress=lambda p: bar.update(
            task, completed=p.elapsed_s, requests=p.requests, errors=p.errors))


def _print_report(report: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    lat = report.latency_ms
    console.print(f"{report.endpoint}: {report.mode} loop, {report.target_load:g} "
                  f"{'req/s' if report.mode == 'open' else 'in flight'}, "
                  f"{report.duration_s:g} s measured, {report.processes} processes")
    console.print(f"requests {report.requests}  throughput {report.throughput_rps:,.1f} req/s"
                  f"  errors {report.error_rate:.3%}  by status {report.statuses}")
    console.print("latency ms  " + "  ".join(f"{k} {lat[k]:.2f}"
                                             for k in ("p50", "p90", "p95", "p99", "max")))
    if report.slos:
        table = Table("SLO", "objective", "actual", "verdict")
        for r in report.slos:
            actual = f"{r.actual:.4%}" if r.metric == "error_rate" else f"{r.actual:,.2f}"
            table.add_row(r.metric, r.objective, actual, "PASS" if r.passed else "FAIL")
        console.print(table)
