"""``modelport profile`` and ``modelport drift status|report``.

``drift`` talks to running servers over HTTP. Given several server URLs (the replicas of one
deployment), it fetches each one's raw window counts and adds them up — exactly — before
deciding, so the answer is the drift of the whole fleet. ``drift status --prometheus URL``
asks Prometheus for the same sums instead, over every replica it scrapes (one server or the
package gives the reference profile).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelport.errors import ConfigError, ModelportError

if TYPE_CHECKING:
    from modelport.monitoring.report import ModelView
    from modelport.monitoring.stats import DriftReport

__all__ = ["register"]

_LEVELS = {"warn": 1, "alert": 2}
Urls = Annotated[list[str], typer.Argument(help="Base URL of each server (replicas of one "
                                                "deployment are merged).", show_default=False)]


def profile(
    data: Annotated[Path, typer.Argument(help="Reference data: .csv, .parquet or .jsonl.",
                                         show_default=False)],
    package: Annotated[Path, typer.Option(help="The model package to add it to.",
                                          show_default=False)],
    bins: Annotated[int, typer.Option(help="Quantile bins per numeric feature.")] = 10,
) -> None:
    """Fit the reference profile for drift monitoring and store it in the package."""
    from modelport.monitoring.profile import build_profile
    from modelport.package import load_model, read_table, write_manifest

    loaded = load_model(package)
    if loaded.package is None:
        raise ConfigError(f"'{package}' is not a model package; make one with: modelport pack")
    frame = read_table(data)
    outputs = _predict_frame(loaded.runtime, frame)
    prof = build_profile(frame, loaded.signature, outputs, bins=bins)
    _write_atomic(loaded.package.root / "reference.json", prof.to_json())
    write_manifest(loaded.package, reference="reference.json")
    typer.echo(f"reference profile of {len(prof.features)} features and {len(prof.outputs)} "
               f"outputs from {prof.rows:,} rows written to {package / 'reference.json'}")


def status(
    urls: Annotated[list[str] | None, typer.Argument(
        help="Base URL of each server (replicas of one deployment are merged); with "
             "--prometheus, one server (or the load balancer) for the reference profile.",
        show_default=False)] = None,
    prometheus: Annotated[str | None, typer.Option(
        help="Prometheus base URL: drift from the sums of every replica's drift counters "
             "it scraped.", show_default=False)] = None,
    package: Annotated[Path | None, typer.Option(
        help="With --prometheus and no URL: the package whose reference profile to use.",
        show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the reports as JSON.")] = False,
    fail_on: Annotated[str | None, typer.Option(
        help="Exit with status 1 when any model reaches this status: warn or alert.")] = None,
    timeout: Annotated[float, typer.Option(help="HTTP timeout, seconds.")] = 10.0,
) -> None:
    """Drift status of every monitored model of one server, of a fleet of replicas, or of
    every replica Prometheus scrapes."""
    import json

    if fail_on is not None and fail_on not in _LEVELS:
        raise ConfigError("--fail-on must be warn or alert")
    if prometheus is not None:
        reports = _prometheus_reports(prometheus, urls or [], package, timeout)
    elif not urls:
        raise ConfigError("give server URLs, or --prometheus URL")
    else:
        reports = _fetch_reports(urls, timeout) if len(urls) == 1 else [
            view.report for view in _fetch_views(urls, timeout)]
    quality = _fetch_quality(urls[0], timeout) if urls and prometheus is None else {}
    if as_json:
        typer.echo(json.dumps([_with_quality(r.to_dict(), quality.get(r.model))
                               for r in reports], indent=1))
    else:
        _print_reports(reports)
        _print_quality(quality)
    if fail_on is not None and any(r.level >= _LEVELS[fail_on] for r in reports):
        raise typer.Exit(1)


def _prometheus_reports(prometheus: str, urls: list[str], package: Path | None,
                        timeout: float) -> list[DriftReport]:
    """Evaluate the fleet sums Prometheus holds, one report per model version."""
    from modelport.monitoring.drift import evaluate_snapshot
    from modelport.monitoring.fleet import snapshot_from_sums

    if not urls and package is None:
        raise ConfigError("--prometheus needs a server URL or --package for the reference "
                          "profile")
    groups = _prometheus_groups(prometheus, timeout)
    if not groups:
        raise ModelportError(f"Prometheus at {prometheus} has no drift counts "
                             "(modelport_drift_window_rows): is it scraping the replicas?")
    reports = []
    for group in groups:
        profile, thresholds = _reference(group, urls, package, timeout)
        if profile is None:
            continue
        reports.append(evaluate_snapshot(profile, snapshot_from_sums(profile, group),
                                         thresholds=thresholds, model=group.model,
                                         version=group.version))
    if not reports:
        raise ModelportError("no model version in Prometheus uses the reference profile given")
    return reports


def _prometheus_groups(prometheus: str, timeout: float) -> list[Any]:
    """The four instant queries, all evaluated at the same moment."""
    import time

    from modelport.monitoring.fleet import (
        COUNT_LABELS,
        GROUP_LABELS,
        SEEN_ROWS,
        WINDOW_COUNT,
        WINDOW_ROWS,
        group_sums,
    )

    at = f"{time.time():.3f}"
    by, by_bin = ", ".join(GROUP_LABELS), ", ".join(COUNT_LABELS)
    queries = (f"sum by ({by_bin}) ({WINDOW_COUNT})", f"sum by ({by}) ({WINDOW_ROWS})",
               f"sum by ({by}) ({SEEN_ROWS})", f"count by ({by}) ({WINDOW_ROWS})")
    vectors = [_prom_query(prometheus, q, at, timeout) for q in queries]
    return group_sums(*vectors)


def _prom_query(prometheus: str, query: str, at: str, timeout: float) -> list[Any]:
    import httpx

    target = prometheus.rstrip("/") + "/api/v1/query"
    try:
        response = httpx.get(target, params={"query": query, "time": at}, timeout=timeout)
    except httpx.HTTPError as exc:
        raise ModelportError(f"cannot reach {target}: {exc}") from exc
    body = response.json() if response.headers.get("content-type", "").startswith(
        "application/json") else {}
    if response.status_code != 200 or body.get("status") != "success":
        raise ModelportError(f"Prometheus query {query!r} failed ({response.status_code}): "
                             f"{body.get('error') or response.text[:300]}")
    return [(r["metric"], float(r["value"][1])) for r in body["data"]["result"]]


def _reference(group: Any, urls: list[str], package: Path | None,
               timeout: float) -> tuple[Any, Any]:
    """``group``'s reference profile and thresholds, from ``--package`` or from a server;
    ``(None, None)`` when that source has another profile (e.g. an older version's)."""
    from modelport.monitoring.profile import ReferenceProfile
    from modelport.monitoring.stats import DriftReport, DriftThresholds

    if package is not None:
        profile = _package_profile(package)
        thresholds = DriftThresholds()
    else:
        name = group.model
        profile = ReferenceProfile.from_dict(
            _get(urls[0], f"/monitoring/drift/{name}/reference", timeout))
        thresholds = DriftReport.from_dict(
            _get(urls[0], f"/monitoring/drift/{name}", timeout)).thresholds
    if profile.digest() != group.reference:
        typer.echo(f"skipping {group.model}:{group.version}: its counts use another reference "
                   "profile than the one given", err=True)
        return None, None
    return profile, thresholds


def _package_profile(package: Path) -> Any:
    from modelport.monitoring.profile import ReferenceProfile
    from modelport.package import open_package

    pkg = open_package(package)
    if pkg.reference_path is None:
        raise ConfigError(f"package '{package}' has no reference profile; add one with: "
                          f"modelport profile DATA --package {package}")
    return ReferenceProfile.from_json(pkg.reference_path.read_text(encoding="utf-8"))


def report(
    out: Annotated[Path, typer.Option(help="Where to write the HTML report.",
                                      show_default=False)],
    urls: Annotated[list[str] | None, typer.Argument(
        help="Server URLs (replicas are merged).", show_default=False)] = None,
    log_db: Annotated[str | None, typer.Option(
        help="Prediction-log database (SQLAlchemy URL): labels give realized accuracy; "
             "without server URLs its latest rows are the window.")] = None,
    package: Annotated[Path | None, typer.Option(
        help="Package whose reference profile to use with --log-db.")] = None,
    window: Annotated[int, typer.Option(help="Rows of the log to use with --log-db.")] = 10_000,
    timeout: Annotated[float, typer.Option(help="HTTP timeout, seconds.")] = 10.0,
) -> None:
    """Write one self-contained HTML drift report (works offline)."""
    from modelport.monitoring.report import render_report

    if urls:
        views = _fetch_views(urls, timeout)
    elif log_db and package:
        views = [_view_from_log(log_db, package, window)]
    else:
        raise ConfigError("give server URLs, or --log-db with --package")
    if log_db:
        views = [_with_accuracy(v, log_db, package, window) for v in views]
    _write_atomic(out, render_report(views))
    typer.echo(f"drift report of {len(views)} model(s) written to {out}")


def _fetch_reports(urls: list[str], timeout: float) -> list[DriftReport]:
    from modelport.monitoring.stats import DriftReport

    data = _get(urls[0], "/monitoring/drift", timeout)
    return [DriftReport.from_dict(r) for r in data["models"].values()]


def _fetch_views(urls: list[str], timeout: float) -> list[ModelView]:
    """Counts of every model from every server, merged, evaluated once."""
    from modelport.monitoring.drift import CountsSnapshot, evaluate_snapshot, merge_counts
    from modelport.monitoring.profile import ReferenceProfile
    from modelport.monitoring.report import ModelView
    from modelport.monitoring.stats import DriftReport

    first = _get(urls[0], "/monitoring/drift", timeout)["models"]
    views = []
    for name, data in first.items():
        server = DriftReport.from_dict(data)
        prof = ReferenceProfile.from_dict(_get(urls[0], f"/monitoring/drift/{name}/reference",
                                               timeout))
        snap = merge_counts(CountsSnapshot.from_dict(
            _get(u, f"/monitoring/drift/{name}/counts", timeout)) for u in urls)
        rep = evaluate_snapshot(prof, snap, thresholds=server.thresholds, model=name,
                                version=server.version)
        views.append(ModelView(prof, snap, rep, quality=data.get("quality")))
    return views


def _get(url: str, path: str, timeout: float) -> Any:
    import httpx

    target = url.rstrip("/") + path
    try:
        response = httpx.get(target, timeout=timeout)
    except httpx.HTTPError as exc:
        raise ModelportError(f"cannot reach {target}: {exc}") from exc
    if response.status_code != 200:
        raise ModelportError(f"GET {target} answered {response.status_code}: "
                             f"{response.text[:300]}")
    return response.json()


def _fetch_quality(url: str, timeout: float) -> dict[str, Any]:
    """Every model's realized and estimated quality; empty from a server without them."""
    try:
        found = _get(url, "/monitoring/quality", timeout).get("models") or {}
    except ModelportError:
        return {}
    return {k: v for k, v in found.items() if v}


def _with_quality(data: dict[str, Any], quality: dict[str, Any] | None) -> dict[str, Any]:
    return data if quality is None else {**data, "quality": quality}


def _print_quality(quality: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for model, status in quality.items():
        table = Table(title=f"{model}: quality (margin {status['margin']:g})",
                      title_justify="left")
        for column in ("version", "arm", "window", "rows", "metric", "value", "threshold",
                       "source"):
            table.add_column(column)
        for e in status["realized"]:
            limits = status["thresholds"].get(e["version"], {})
            for metric, value in e["metrics"].items():
                table.add_row(e["version"], e["arm"], e["window"], f"{e['labeled']:,}", metric,
                              _num(value), _num(limits.get(metric)), "labels")
        for e in status["estimated"]:
            if e["withheld"]:
                table.add_row(e["version"], e["arm"], e["window"], f"{e['rows']:,}", "-", "-",
                              "-", f"CBPE withheld: {e['withheld']}")
            for metric, value in e["metrics"].items():
                table.add_row(e["version"], e["arm"], e["window"], f"{e['rows']:,}", metric,
                              _num(value), "-", "CBPE estimate")
        console.print(table)


def _print_reports(reports: list[DriftReport]) -> None:
    from rich.console import Console
    from rich.table import Table

    colors = {"alert": "red", "warn": "yellow", "ok": "green", "insufficient": "dim"}
    console = Console()
    for rep in reports:
        table = Table(title=f"{rep.model} {rep.version}: [{colors[rep.status]}]{rep.status}"
                            f"[/] · window {rep.window_rows:,} rows", title_justify="left")
        for column in ("feature", "status", rep.thresholds.effect, "p (BH)", "test", "rows"):
            table.add_column(column)
        rows = sorted((*rep.features, *rep.predictions), key=lambda f: -f.level)
        for f in rows:
            table.add_row(f.name, f"[{colors[f.status]}]{f.status}[/]", _num(f.score),
                          _num(f.p_adjusted), f.test, f"{f.window:,}")
        console.print(table)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _predict_frame(runtime: Any, frame: Any, chunk: int = 50_000) -> Any:
    from modelport.types import Outputs

    sig = runtime.signature
    parts = []
    for start in range(0, len(frame), chunk):
        part = frame.iloc[start:start + chunk]
        batch = sig.from_columns({n: part[n].to_numpy() for n in sig.names}, unseen="pass")
        parts.append(runtime.predict(batch))
    return Outputs.concat(parts)


def _view_from_log(db_url: str, package: Path, window: int) -> ModelView:
    """The latest ``window`` logged rows of the package's model, counted into its bins."""
    from modelport.monitoring.drift import DriftCounters, Window, evaluate_snapshot
    from modelport.monitoring.predlog_store import Store
    from modelport.monitoring.profile import ReferenceProfile
    from modelport.monitoring.report import ModelView
    from modelport.package import open_package

    pkg = open_package(package)
    if pkg.reference_path is None:
        raise ConfigError(f"package '{package}' has no reference profile; add one with: "
                          f"modelport profile DATA --package {package}")
    prof = ReferenceProfile.from_json(pkg.reference_path.read_text(encoding="utf-8"))
    name, version = pkg.manifest.name, pkg.manifest.version
    store = Store(db_url)
    try:
        rows = _latest_rows(store, name, version, window)
    finally:
        store.dispose()
    counters = DriftCounters(prof, Window(rows=max(window, 1), buckets=1))
    _count_logged(counters, pkg.signature, rows)
    snap = counters.snapshot()
    return ModelView(prof, snap, evaluate_snapshot(prof, snap, model=name, version=version))


def _latest_rows(store: Any, model: str, version: str, limit: int) -> list[Any]:
    import sqlalchemy as sa

    table = store.predictions
    query = (sa.select(table.c.inputs, table.c.outputs, table.c.latency_s, table.c.row_index)
             .where(table.c.model == model, table.c.version == version)
             .order_by(table.c.ts.desc()).limit(limit))
    with store.engine.connect() as conn:
        return list(conn.execute(query))[::-1]


def _count_logged(counters: Any, signature: Any, rows: list[Any]) -> None:
    import numpy as np

    from modelport.types import Outputs

    if not rows:
        return
    batch = signature.from_records([r.inputs for r in rows], unseen="pass")
    preds = np.asarray([r.outputs.get("prediction") for r in rows], dtype=object)
    proba = [r.outputs.get("probabilities") for r in rows]
    classes = list(proba[0]) if isinstance(proba[0], dict) else signature.classes
    matrix = None
    if all(p is not None for p in proba):
        matrix = np.asarray([list(p.values()) if isinstance(p, dict) else p for p in proba],
                            dtype=np.float64)
    counters.observe(batch, Outputs(preds, matrix, None if classes is None else list(classes)))
    for r in rows:  # one latency per request: its first row carries it
        if r.row_index == 0:
            counters.observe_latency(r.latency_s)


def _with_accuracy(view: ModelView, db_url: str, package: Path | None = None,
                   window: int = 10_000) -> ModelView:
    """Realized accuracy from the log, and (with the package, when the server gave none) the
    quality section: the latest ``window`` labeled rows against the recorded baseline."""
    from dataclasses import replace

    from modelport.monitoring.live_quality import QualityTracker
    from modelport.monitoring.predlog_store import Store
    from modelport.monitoring.quality import QualityWindow
    from modelport.monitoring.report import Accuracy
    from modelport.package import open_package

    store = Store(db_url)
    try:
        found = store.realized_accuracy(view.report.model, view.report.version)
        quality = view.quality
        if quality is None and package is not None:
            pkg = open_package(package)
            sig = pkg.signature
            tracker = QualityTracker(windows=[QualityWindow.parse(str(max(window, 1)))],
                                     fetch=store.labeled_rows, min_labels=1)
            tracker.register(view.report.model, view.report.version, task=sig.task,
                             classes=list(sig.classes) if sig.classes else None,
                             metrics=pkg.manifest.metrics)
            tracker.refresh()
            quality = tracker.status(view.report.model)
    finally:
        store.dispose()
    return replace(view, accuracy=Accuracy(found.labeled, found.correct), quality=quality)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def register(app: typer.Typer) -> None:
    """Add ``profile`` and the ``drift`` group (``status``, ``report``)."""
    drift = typer.Typer(help="Drift of served models: status and HTML reports.",
                        no_args_is_help=True)
    drift.command("status")(status)
    drift.command("report")(report)
    app.add_typer(drift, name="drift")
    app.command("profile")(profile)
