"""``modelport serve`` and ``modelport pack``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["register"]


def serve(
    targets: Annotated[list[str], typer.Argument(
        help="Model files, package directories, model-settings.json, config .yaml files or "
             "registry references (heart@production, heart:1.2.0).", show_default=False)],
    host: Annotated[str | None, typer.Option(help="Interface to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port.")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
    max_batch_size: Annotated[int | None, typer.Option(
        help="Most rows merged into one model call.")] = None,
    max_batch_wait_ms: Annotated[float | None, typer.Option(
        help="Longest wait for a batch to fill (only under load).")] = None,
    runtime: Annotated[str | None, typer.Option(
        help="auto (ONNX when parity was proven), native or onnx.")] = None,
    unseen_categories: Annotated[str | None, typer.Option(
        "--unseen", help="reject (422) or pass unseen categories to the encoder.")] = None,
    api_keys_file: Annotated[Path | None, typer.Option(
        help="File with one API key per line; also MODELPORT_API_KEYS=k1,k2.")] = None,
    admin_keys_file: Annotated[Path | None, typer.Option(
        help="File with one admin key per line; also MODELPORT_ADMIN_KEYS=k1,k2. Without an "
             "admin key the admin API and V2 repository routes are off.")] = None,
    max_body_bytes: Annotated[int | None, typer.Option(help="Largest request body.")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning.")] = None,
) -> None:
    """Serve models over REST: native /predict, V2 (Open Inference Protocol) and V1."""
    from modelport.config import Settings
    from modelport.server.run import serve as run

    flags: dict[str, Any] = {
        "model": targets, "host": host, "port": port, "workers": workers,
        "max_batch_size": max_batch_size, "max_batch_wait_ms": max_batch_wait_ms,
        "runtime": runtime, "unseen_categories": unseen_categories,
        "api_keys_file": api_keys_file, "admin_keys_file": admin_keys_file,
        "max_body_bytes": max_body_bytes,
        "log_level": log_level,
    }
    settings = Settings(**{k: v for k, v in flags.items() if v is not None})
    if settings.workers > 1:
        from modelport.monitoring.metrics import reset_multiprocess_dir

        if settings.metrics_multiproc_dir is None:
            settings.metrics_multiproc_dir = Path(tempfile.mkdtemp(prefix="modelport-metrics-"))
        reset_multiprocess_dir(settings.metrics_multiproc_dir)
        os.environ.update(settings.to_env())
    run(settings)


def pack(
    model: Annotated[Path, typer.Argument(help="The trained model file.", show_default=False)],
    name: Annotated[str, typer.Option(help="Model name.")],
    version: Annotated[str, typer.Option(help="Semantic version.")] = "1.0.0",
    reference: Annotated[Path | None, typer.Option(
        help="Training-like data (CSV/Parquet): feature types, examples, golden rows, "
             "reference profile.")] = None,
    target: Annotated[str | None, typer.Option(
        help="Label column of the reference data (dropped from the features).")] = None,
    out: Annotated[Path | None, typer.Option(help="Package directory to write.")] = None,
) -> None:
    """Write a model package: artifact, modelport.yaml (signature, versions, sha256s)."""
    from modelport.package import pack as make

    pkg = make(model, out or Path(name), name=name, version=version, reference=reference,
               target=target)
    sig = pkg.signature
    typer.echo(f"packed {pkg.manifest.name}:{pkg.manifest.version} ({pkg.manifest.flavor}, "
               f"{len(sig.features)} features, {sig.task}) into {pkg.root}")


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``pack``."""
    app.command()(serve)
    app.command()(pack)
