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
        help="Model files, package directories, MLflow model directories, model-settings.json, "
             "config .yaml files, registry references (heart@production, heart:1.2.0) or "
             "MLflow registry URIs (models:/heart@champion, models:/heart/3).",
        show_default=False)],
    host: Annotated[str | None, typer.Option(help="Interface to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port.")] = None,
    root_path: Annotated[str | None, typer.Option(
        help="Path prefix a reverse proxy serves this server under (it strips it before "
             "forwarding), e.g. /models-api: /ui, /docs and /redoc link with it.")] = None,
    grpc_port: Annotated[int | None, typer.Option(
        help="TCP port of the Open Inference Protocol over gRPC (default 8081); 0 turns gRPC "
             "off.")] = None,
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
    access_log_level: Annotated[str | None, typer.Option(
        help="Access lines written: info (every request), warning (4xx and 5xx), error (5xx) "
             "or off.", show_default=False)] = None,
    access_log_sample: Annotated[float | None, typer.Option(
        help="Share of successful requests (below 400) that get an access line, 0 to 1; "
             "failed ones always do.", show_default=False)] = None,
    db: Annotated[str | None, typer.Option(
        "--db", help="Registry catalog URL for NAME@ALIAS targets: sqlite:///path.db or "
                     "postgresql+psycopg://… [env: MODELPORT_REGISTRY_DB]",
        show_default=False)] = None,
    store: Annotated[Path | None, typer.Option(
        "--store", help="Registry artifact store directory [env: MODELPORT_REGISTRY_STORE]",
        show_default=False)] = None,
    mlflow_tracking_uri: Annotated[str | None, typer.Option(
        "--mlflow-tracking-uri", help="MLflow tracking server for models:/NAME/VERSION and "
        "models:/NAME@ALIAS targets [env: MLFLOW_TRACKING_URI]", show_default=False)] = None,
    device: Annotated[str | None, typer.Option(
        help="auto (a GPU when one is usable, else the CPU; logged), cpu or cuda (refuses to "
             "start without one). Torch, ONNX and XGBoost models.")] = None,
    providers: Annotated[str | None, typer.Option(
        help="ONNX Runtime execution providers in order, comma-separated (e.g. "
             "TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider); one "
             "that is not installed stops the start.")] = None,
    log_file: Annotated[Path | None, typer.Option(
        help="Write the JSON log to this file instead of stderr.")] = None,
    log_max_bytes: Annotated[int | None, typer.Option(
        help="Rotate --log-file past this size (0: never; it is reopened when moved or on "
             "SIGHUP, for logrotate).")] = None,
    log_backups: Annotated[int | None, typer.Option(
        help="Rotated log files kept (--log-max-bytes).")] = None,
    trust_type: Annotated[list[str] | None, typer.Option(
        "--trust-type", help="A type a .skops model may hold beyond those skops trusts (as "
                             "the refusal names it); repeat for several.",
        show_default=False)] = None,
    max_models: Annotated[int | None, typer.Option(
        help="Most models loaded at once: models then load on their first request and the "
             "least recently used idle one is unloaded past it.", show_default=False)] = None,
    max_memory: Annotated[str | None, typer.Option(
        help="Most memory of loaded models (e.g. 512MiB, 2GB), estimated per model; lazy "
             "loading and unloading as with --max-models.", show_default=False)] = None,
) -> None:
    """Serve models over REST (native /predict, V2 Open Inference Protocol, V1) and the Open
    Inference Protocol over gRPC (--grpc-port)."""
    from modelport.config import Settings
    from modelport.errors import ConfigError
    from modelport.runtimes.devices import DEVICES
    from modelport.server.run import serve as run

    flags: dict[str, Any] = {
        "model": targets, "host": host, "port": port, "root_path": root_path,
        "grpc_port": grpc_port,
        "workers": workers,
        "max_batch_size": max_batch_size, "max_batch_wait_ms": max_batch_wait_ms,
        "runtime": runtime, "unseen_categories": unseen_categories,
        "api_keys_file": api_keys_file, "admin_keys_file": admin_keys_file,
        "max_body_bytes": max_body_bytes,
        "log_level": log_level, "access_log_level": access_log_level,
        "access_log_sample": access_log_sample, "registry_db": db, "registry_store": store,
        "mlflow_tracking_uri": mlflow_tracking_uri,
        "device": device, "providers": providers, "log_file": log_file,
        "log_max_bytes": log_max_bytes, "log_backups": log_backups,
    }
    if device is not None and device not in DEVICES:
        raise ConfigError(f"--device: '{device}' is not one of {', '.join(DEVICES)}")
    flags.update(_budget_flags(trust_type, max_models, max_memory))
    settings = Settings(**{k: v for k, v in flags.items() if v is not None})
    if settings.workers > 1:
        from modelport.monitoring.metrics import reset_multiprocess_dir

        if settings.metrics_multiproc_dir is None:
            settings.metrics_multiproc_dir = Path(tempfile.mkdtemp(prefix="modelport-metrics-"))
        reset_multiprocess_dir(settings.metrics_multiproc_dir)
        os.environ.update(settings.to_env())
    run(settings)


def _budget_flags(trust_type: list[str] | None, max_models: int | None,
                  max_memory: str | None) -> dict[str, Any]:
    """The Settings of --trust-type, --max-models and --max-memory, each checked (a bad one is
    a clear error naming the flag, not a validation trace)."""
    from modelport.config import parse_size
    from modelport.errors import ConfigError

    out: dict[str, Any] = {}
    if trust_type:
        out["trust_types"] = list(trust_type)
    if max_models is not None:
        if max_models < 1:
            raise ConfigError(f"--max-models: {max_models} is not a number of models (>= 1)")
        out["max_models"] = max_models
    if max_memory is not None:
        try:
            out["max_memory"] = parse_size(max_memory)
        except ValueError as exc:
            raise ConfigError(f"--max-memory: {exc}") from None
    return out


def pack(
    model: Annotated[Path, typer.Argument(
        help="The trained model file, or an MLflow model directory (its MLmodel flavor's "
             "artifact, signature and input example are used).", show_default=False)],
    name: Annotated[str, typer.Option(help="Model name.")],
    version: Annotated[str, typer.Option(help="Semantic version.")] = "1.0.0",
    reference: Annotated[Path | None, typer.Option(
        help="Training-like data (CSV/Parquet): feature types, examples, golden rows, "
             "reference profile.")] = None,
    target: Annotated[str | None, typer.Option(
        help="Label column of the reference data (dropped from the features).")] = None,
    out: Annotated[Path | None, typer.Option(help="Package directory to write.")] = None,
    example: Annotated[Path | None, typer.Option(
        help="Torch models: an example input batch (.npy, .npz by input name, or .csv/.parquet "
             "whose columns name the features); kept as the package's sidecar.")] = None,
    outputs: Annotated[str, typer.Option(
        help="Torch models with --example: what the model returns: logits, probabilities or "
             "values (a regression); auto guesses from the example's output.")] = "auto",
    fmt: Annotated[str, typer.Option(
        "--format", help="native keeps the file as it is; skops converts a joblib/pickle "
                         "scikit-learn model to the skops format (no code runs when it is "
                         "loaded) after proving both answer the same.")] = "native",
    trust_type: Annotated[list[str] | None, typer.Option(
        "--trust-type", help="A type a .skops model may hold beyond those skops trusts; "
                             "repeat for several.", show_default=False)] = None,
) -> None:
    """Write a model package: artifact, modelport.yaml (signature, versions, sha256s)."""
    from modelport.errors import ConfigError
    from modelport.package import pack as make
    from modelport.runtimes import Example

    if fmt not in ("native", "skops"):
        raise ConfigError(f"--format: '{fmt}' is not one of native, skops")
    if fmt == "skops":
        _pack_skops(model, out or Path(name), name, version, reference, target)
        return
    pkg = make(model, out or Path(name), name=name, version=version, reference=reference,
               target=target, example=None if example is None else Example(example, outputs),
               trusted=tuple(trust_type or ()))
    sig = pkg.signature
    typer.echo(f"packed {pkg.manifest.name}:{pkg.manifest.version} ({pkg.manifest.flavor}, "
               f"{len(sig.features)} features, {sig.task}) into {pkg.root}")


def _pack_skops(model: Path, out: Path, name: str, version: str, reference: Path | None,
                target: str | None) -> None:
    from modelport.tools.convert import pack_skops, trusted_line

    done = pack_skops(model, out, name=name, version=version, reference=reference,
                      target=target)
    m = done.package.manifest
    typer.echo(f"packed {m.name}:{m.version} (skops, converted from {model.name}; "
               f"{done.rows_compared} rows answered identically) into {done.package.root}")
    if done.untrusted_types:
        typer.echo("the file holds types skops does not trust by default; serve it with: "
                   f"modelport serve {done.package.root} {trusted_line(done.untrusted_types)}")


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``pack``."""
    app.command()(serve)
    app.command()(pack)
