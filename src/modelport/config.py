"""Settings: the only place modelport reads the environment.

Every field can be set as ``MODELPORT_<FIELD>`` (e.g. ``MODELPORT_PORT=9000``); the CLI builds a
:class:`Settings` from its flags plus the environment and passes it down explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings", "parse_size"]


class Settings(BaseSettings):
    """Runtime configuration of a modelport server and its tools."""

    model_config = SettingsConfigDict(env_prefix="MODELPORT_", extra="ignore")

    model: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """What to serve: model files, package directories, model-settings.json, registry refs."""

    host: str = "127.0.0.1"
    """Interface to bind."""

    port: int = 8000
    """TCP port to bind."""

    root_path: str = Field(default="", pattern=r"^(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*$")
    """The path prefix a reverse proxy serves this server under (``/models-api``), which it
    strips before forwarding: links in ``/ui``, ``/docs`` and ``/redoc`` and the OpenAPI
    ``servers`` carry it. Empty: served at the root."""

    grpc_port: int = Field(default=8081, ge=0, le=65535)
    """TCP port of the Open Inference Protocol over gRPC (``inference.GRPCInferenceService``,
    health and reflection), served by the same process and event loop as REST; 0 turns gRPC
    off."""

    grpc_max_message_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    """Largest gRPC message received or sent; a larger one gets RESOURCE_EXHAUSTED."""

    workers: int = 1
    """Worker processes (uvicorn); metrics switch to multiprocess mode when > 1."""

    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    """API keys; when any is set every route but the probes needs one."""

    api_keys_file: Path | None = None
    """A file with one API key per line (read once at start)."""

    admin_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    """Admin keys: the admin API and the V2 repository routes (everything that changes what is
    served) answer only to one of these; with none set those routes are off (403). An admin key
    also works wherever a prediction key does."""

    admin_keys_file: Path | None = None
    """A file with one admin key per line (read once at start)."""

    public_metrics: bool = False
    """Let ``/metrics`` be scraped without an API key (probes are always open)."""

    max_body_bytes: int = 32 * 1024 * 1024
    """Largest accepted request body; larger bodies get 413."""

    max_batch_rows: int = 10_000
    """Most rows one request may carry; more gets 422."""

    max_bulk_rows: int = 1_000_000
    """Most rows one ``/predict/batch`` request may carry."""

    max_batch_size: int = 64
    """Most rows the micro-batcher merges into one model call."""

    max_batch_wait_ms: float = 2.0
    """Longest a request waits for others to join its batch (only when the model is busy)."""

    max_queue: int = 2048
    """Most requests waiting for the model; more get 503 with Retry-After."""

    request_timeout_s: float = 30.0
    """Deadline for one request in the queue and model; past it, 504."""

    unseen_categories: Literal["reject", "pass"] = "reject"
    """What to do with a category the encoder never saw: reject (422) or pass it to the model."""

    runtime: Literal["auto", "native", "onnx"] = "auto"
    """Which runtime serves a package: ``auto`` uses ONNX only when parity was proven."""

    graceful_timeout_s: float = 20.0
    """On SIGTERM, how long in-flight requests may take before the server exits anyway."""

    log_level: str = "info"
    """Log level of the JSON log (application and access lines)."""

    access_log_level: Literal["info", "warning", "error", "off"] = "info"
    """Which requests get an access line: every one (``info``), 4xx and 5xx (``warning``),
    5xx (``error``), none (``off``)."""

    access_log_sample: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    """Share of successful requests (status below 400) that get an access line; failed ones
    always do (at ``access_log_level``). Sampled lines carry ``sample_rate``."""

    registry_db: str = "sqlite:///.modelport/registry.db"
    """Registry catalog: an SQLAlchemy URL (SQLite file or postgresql+psycopg://)."""

    registry_store: Path = Path(".modelport/artifacts")
    """Directory of the content-addressed artifact store."""

    mlflow_tracking_uri: str | None = Field(default=None, validation_alias=AliasChoices(
        # env names match case-insensitively: the second is also MLFLOW_TRACKING_URI
        "MODELPORT_MLFLOW_TRACKING_URI", "mlflow_tracking_uri"))
    """The MLflow tracking server that ``models:/NAME/VERSION`` and ``models:/NAME@ALIAS``
    targets resolve against (``http://host:5000``); also read from ``MLFLOW_TRACKING_URI``."""

    prediction_cache: Literal["off", "memory", "redis"] = "off"
    """Answer identical rows from a cache keyed by model version + row: in process (LRU) or
    in Redis (shared by replicas)."""

    cache_max_entries: int = 100_000
    """Rows the in-memory cache keeps."""

    cache_redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis for ``prediction_cache=redis``."""

    cache_ttl_s: float = 3600.0
    """How long a cached answer lives in Redis."""

    log_db: str | None = None
    """Prediction log: an SQLAlchemy URL (``sqlite:///predictions.db`` or
    ``postgresql+psycopg://…``); unset = no prediction log."""

    log_sample_rate: float = 1.0
    """Share of predictions written to the prediction log."""

    log_spool_dir: Path = Path(".modelport/spool")
    """Where log records wait (append-only) while the log database is unreachable."""

    metrics_multiproc_dir: Path | None = None
    """Directory for Prometheus multiprocess files; set automatically when workers > 1."""

    alert_webhook: str | None = None
    """Slack-compatible webhook URL for drift, error-rate and latency alerts."""

    drift_check_s: float = 15.0
    """How often drift is evaluated for the metrics gauges and alerts."""

    quality_windows: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["1000", "1d"])
    """Windows of realized quality (labels from ``/feedback`` joined to the prediction log):
    a row count (the latest N labeled predictions) or a duration (``30m``, ``1h``, ``7d``)."""

    quality_check_s: float = Field(default=60.0, gt=0)
    """How often realized quality is recomputed from the prediction log (a query per model);
    estimates and the retraining trigger follow ``drift_check_s``."""

    quality_min_labels: int = Field(default=100, ge=1)
    """Labels a window needs before its metrics are computed (and CBPE rows its estimate)."""

    quality_margin: float = Field(default=0.05, ge=0)
    """How far below the validation baseline quality may fall before its alert fires:
    absolute for accuracy, F1, ROC AUC and R²; relative (x baseline) for log loss, MAE, RMSE."""

    quality_estimate_rows: int = Field(default=1000, ge=10)
    """Served rows per version and arm in the label-free (CBPE) estimate's window."""

    quality_max_ece: float = Field(default=0.05, gt=0)
    """Largest expected calibration error (measured by ``modelport validate``) at which CBPE
    estimates are published; above it they are withheld, with the reason."""

    retrain_webhook: str | None = None
    """URL called once per episode when drift or quality alerts fire longer than
    ``retrain_after_s`` (a generic endpoint, or a GitHub ``repository_dispatch`` URL)."""

    retrain_style: Literal["generic", "github"] = "generic"
    """Body of the retraining call: the evidence as JSON, or ``{"event_type",
    "client_payload"}`` for GitHub's ``repository_dispatch``."""

    retrain_token: SecretStr | None = None
    """Sent as ``Authorization: Bearer`` with the retraining call (never logged)."""

    retrain_event_type: str = "modelport-retrain"
    """``event_type`` of the ``repository_dispatch`` (the workflow's ``types:`` filter)."""

    retrain_after_s: float = Field(default=3600.0, ge=0)
    """How long drift or quality alerts must fire before the retraining webhook is called."""

    retrain_attempts: int = Field(default=3, ge=1, le=10)
    """Attempts per retraining call (bounded retries, doubling pauses from 0.5 s)."""

    registry_poll_s: float = 2.0
    """How often a server serving ``name@alias`` checks whether the alias moved."""

    swap_grace_s: float = 10.0
    """After a switch, how long the old version keeps answering requests already routed to it."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where models run: ``auto`` takes a GPU (CUDA, TensorRT; OpenVINO for ONNX) when one is
    installed and usable, else the CPU, and logs its choice; ``cuda`` refuses to start without
    one; ``cpu`` never uses one. Applies to torch, ONNX and XGBoost models."""

    providers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """ONNX Runtime execution providers, in order (``CUDAExecutionProvider,
    CPUExecutionProvider``); overrides ``device`` for ONNX models. One that is not installed
    stops the start with an error."""

    log_file: Path | None = None
    """Write the JSON log to this file instead of stderr."""

    log_max_bytes: int = Field(default=0, ge=0)
    """Rotate ``log_file`` when it would grow past this size (0: never; reopen on SIGHUP for
    logrotate instead)."""

    log_backups: int = Field(default=5, ge=0)
    """Rotated files kept beside ``log_file`` (``app.log.1`` … ``app.log.N``)."""

    explain_rate: float = Field(default=5.0, ge=0)
    """Explanation requests per second (a token bucket shared by every client; 0: no limit);
    more get 429 with Retry-After. Explanations cost hundreds of predictions each."""

    explain_burst: int = Field(default=10, ge=1)
    """Explanation requests allowed at once above ``explain_rate`` (the bucket's size)."""

    explain_max_rows: int = Field(default=100, ge=1)
    """Most rows one explanation request may carry; more get 422."""

    explain_max_queue: int = Field(default=64, ge=1)
    """Most explanation requests waiting for the explainer thread; more get 503."""

    explain_samples: int = Field(default=512, ge=16)
    """The kernel explainer's budget: coalitions evaluated per explained row."""

    explain_background_rows: int = Field(default=50, ge=1)
    """Rows of the kernel explainer's background sample (drawn from the reference profile)."""

    tracing: Literal["auto", "on", "off"] = "auto"
    """OpenTelemetry tracing: ``auto`` turns it on when the standard ``OTEL_*`` variables
    configure an exporter (``OTEL_TRACES_EXPORTER``, ``OTEL_EXPORTER_OTLP_ENDPOINT``, ...)
    and ``OTEL_SDK_DISABLED`` is not true; ``on`` exports with OTLP by default; ``off``
    never traces."""

    trust_types: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Types a ``.skops`` model may hold beyond those skops trusts by default (fully qualified,
    as the refusal lists them); nothing else in a skops file is ever built."""

    max_models: int | None = Field(default=None, ge=1)
    """Most models loaded at once: with this or ``max_memory`` set, models load on their first
    request and the least recently used idle one is unloaded past the budget. Unset (and
    ``max_memory`` unset): every model loads at start and stays loaded."""

    max_memory: int | None = Field(default=None, ge=1)
    """Most bytes of loaded models (estimated per model, see ``modelport.server.pool``); given
    as bytes or with a unit: ``512MiB``, ``2GB``, ``1.5GiB``."""

    @field_validator("api_keys", "admin_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("max_memory", mode="before")
    @classmethod
    def _parse_size(cls, value: object) -> object:
        return parse_size(value) if isinstance(value, str) else value

    @field_validator("model", "providers", "trust_types", "quality_windows", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> object:
        if isinstance(value, str):
            return [m.strip() for m in value.split(",") if m.strip()]
        return value

    def to_env(self) -> dict[str, str]:
        """These settings as ``MODELPORT_*`` variables, for worker processes to rebuild them."""
        out: dict[str, str] = {}
        for name, value in self:
            if value is None:
                continue
            if name in {"api_keys", "admin_keys"}:
                text = ",".join(k.get_secret_value() for k in value)
            elif name in {"model", "providers", "trust_types", "quality_windows"}:
                text = ",".join(value)
            elif isinstance(value, SecretStr):
                text = value.get_secret_value()
            else:
                text = str(value)
            out[f"MODELPORT_{name.upper()}"] = text
        return out

    def tracing_on(self) -> bool:
        """Whether to trace requests (``tracing``, and for ``auto`` the ``OTEL_*``
        variables); the OpenTelemetry SDK reads the rest of them itself."""
        env = os.environ
        if self.tracing != "auto":
            return self.tracing == "on"
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return False
        exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
        if exporter:
            return exporter != "none"
        return any(env.get(k) for k in ("OTEL_EXPORTER_OTLP_ENDPOINT",
                                        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))

    def otel_exporters(self) -> list[str]:
        """The span exporters ``OTEL_TRACES_EXPORTER`` names (default ``otlp``), OTLP's as
        ``otlp-grpc`` or ``otlp-http`` after ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` (else
        ``OTEL_EXPORTER_OTLP_PROTOCOL``; default ``http/protobuf``, as the specification
        says)."""
        env = os.environ
        names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
        protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                    or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip()
        otlp = "otlp-grpc" if protocol == "grpc" else "otlp-http"
        return [otlp if n == "otlp" else n for n in names if n and n != "none"]

    def all_api_keys(self) -> list[str]:
        """Keys from the setting and from ``api_keys_file``, secrets revealed for comparison."""
        return _keys(self.api_keys, self.api_keys_file)

    def all_admin_keys(self) -> list[str]:
        """Admin keys from the setting and from ``admin_keys_file``, revealed for comparison."""
        return _keys(self.admin_keys, self.admin_keys_file)


def _keys(given: list[SecretStr], file: Path | None) -> list[str]:
    keys = [k.get_secret_value() for k in given]
    if file is not None:
        text = file.read_text(encoding="utf-8")
        keys += [line.strip() for line in text.splitlines() if line.strip()]
    return keys


_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
          "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def parse_size(text: str) -> int:
    """Bytes in ``512MiB``, ``2GB``, ``1.5GiB``, ``1048576`` (KiB/MiB/GiB and K/M/G: powers of
    1024; KB/MB/GB: of 1000); ValueError naming the accepted forms otherwise."""
    import re

    found = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    unit = found.group(2).lower() if found else ""
    if found is None or unit not in _UNITS:
        raise ValueError(f"'{text}' is not a size: give bytes or a number with KiB, MiB, GiB "
                         "(or KB, MB, GB), e.g. 512MiB")
    size = int(float(found.group(1)) * _UNITS[unit])
    if size < 1:
        raise ValueError(f"'{text}' is not a size above zero")
    return size
