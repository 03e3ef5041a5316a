"""Settings: the only place modelport reads the environment.

Every field can be set as ``MODELPORT_<FIELD>`` (e.g. ``MODELPORT_PORT=9000``); the CLI builds a
:class:`Settings` from its flags plus the environment and passes it down explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Runtime configuration of a modelport server and its tools."""

    model_config = SettingsConfigDict(env_prefix="MODELPORT_", extra="ignore")

    model: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """What to serve: model files, package directories, model-settings.json, registry refs."""

    host: str = "127.0.0.1"
    """Interface to bind."""

    port: int = 8000
    """TCP port to bind."""

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
    """Log level of the JSON access log."""

    registry_db: str = "sqlite:///.modelport/registry.db"
    """Registry catalog: an SQLAlchemy URL (SQLite file or postgresql+psycopg://)."""

    registry_store: Path = Path(".modelport/artifacts")
    """Directory of the content-addressed artifact store."""

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

    @field_validator("api_keys", "admin_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("model", "providers", mode="before")
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
            elif name in {"model", "providers"}:
                text = ",".join(value)
            else:
                text = str(value)
            out[f"MODELPORT_{name.upper()}"] = text
        return out

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
