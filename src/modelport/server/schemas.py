"""What the server's answers and fixed request bodies look like, as pydantic models: the
OpenAPI document is generated from these, so it cannot drift from them.

Error bodies are the two shapes :mod:`~modelport.server.errors` writes (and the edge's refusals,
which carry only ``error``). :func:`answers` turns a route's possible statuses into FastAPI's
``responses=`` so each route states them where it is declared.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from modelport.registry.versions import VERSION_PATTERN

__all__ = [
    "AliasMove",
    "Answer",
    "Empty",
    "ErrorBody",
    "MlflowErrorBody",
    "Liveness",
    "ModelDocument",
    "ModelList",
    "ModelMetadata",
    "ModelReady",
    "Readiness",
    "RepositoryEntry",
    "RepositoryIndex",
    "Rollback",
    "ServerMetadata",
    "V1ModelList",
    "V2ErrorBody",
    "answers",
    "meaning",
]


class ErrorBody(BaseModel):
    """An error of the native and V1 protocols (and of every other non-V2 route)."""

    model_config = ConfigDict(extra="forbid")

    error: str
    """What went wrong and what to do about it."""
    field: str | None = None
    """The feature or body field at fault (bad input only)."""
    row: int | None = Field(default=None, ge=0)
    """The row at fault (bad input only)."""
    request_id: str | None = None
    """Quote it when reporting a 500 (absent on the edge's 401/403/413)."""


class V2ErrorBody(BaseModel):
    """An error of the V2 (Open Inference Protocol) routes: ``{"error": "..."}`` only."""

    model_config = ConfigDict(extra="forbid")

    error: str


class MlflowErrorBody(BaseModel):
    """An error of the MLflow scoring routes (``/invocations``), as an MLflow scoring server
    writes it: ``{"error_code": "BAD_REQUEST", "message": "..."}``."""

    model_config = ConfigDict(extra="forbid")

    error_code: str
    """MLflow's code: ``BAD_REQUEST``, ``RESOURCE_DOES_NOT_EXIST``, ``INTERNAL_ERROR``, …"""
    message: str
    """What went wrong (bad input: the row and the field)."""


class Answer(BaseModel):
    """Any JSON object (answers whose fields are described in the route's summary)."""

    model_config = ConfigDict(extra="allow")


class Readiness(BaseModel):
    """``/ready``: 200 when every model is loaded and warmed, 503 otherwise (same body)."""

    status: Literal["ready", "not ready"]
    models: dict[str, bool]
    """``name:version`` -> ready."""
    in_flight: int
    reason: str | None = None
    """``shutting down`` while draining."""


class Liveness(BaseModel):
    """``/health``: the process answers."""

    status: Literal["alive"]


class ModelSummary(BaseModel):
    """One entry of ``GET /models``."""

    name: str
    default_version: str | None
    versions: list[str]
    ready: bool


class ModelList(BaseModel):
    """``GET /models``."""

    models: list[ModelSummary]


class ModelDocument(BaseModel):
    """``GET /models/{name}``: what the model takes and gives."""

    name: str
    version: str
    flavor: str
    outputs: list[str]
    signature: dict[str, Any]
    """Features (name, dtype, categories, nullable, example), input kind, task, classes."""
    example: dict[str, Any]
    """A request body that works: ``{"features": {...}}``."""
    classes: list[Any] | None


class V1ModelList(BaseModel):
    """``GET /v1/models``."""

    models: list[str]


class ModelReady(BaseModel):
    """``GET /v1/models/{name}``, ``GET /v2/models/{name}/ready``."""

    name: str
    ready: bool


class ServerMetadata(BaseModel):
    """``GET /v2``."""

    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    """One input or output of ``GET /v2/models/{name}``."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    """``GET /v2/models/{name}[/versions/{version}]``."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any]


class RepositoryEntry(BaseModel):
    """One entry of ``POST /v2/repository/index``."""

    name: str
    version: str
    state: Literal["READY", "LOADING", "UNAVAILABLE"]
    reason: str


class RepositoryIndex(RootModel[list[RepositoryEntry]]):
    """``POST /v2/repository/index``: every model this server knows, loaded or not."""


class Empty(BaseModel):
    """``{}``."""

    model_config = ConfigDict(extra="forbid")


class AliasMove(BaseModel):
    """The body of ``PUT /admin/models/{name}/aliases/{alias}``."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(pattern=VERSION_PATTERN)
    """The registered version the alias should point to."""
    reason: str | None = None
    """Recorded in the alias history."""


class Rollback(BaseModel):
    """The (optional) body of ``POST /admin/models/{name}/aliases/{alias}/rollback``."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = None
    """Recorded in the alias history."""


_MEANING = {
    400: "Invalid input: names the input tensor and the problem",
    401: "No valid API key (Authorization: Bearer KEY or X-API-Key)",
    403: "Refused: an admin key is needed (or admin routes are off: no admin key configured)",
    404: "Unknown model or version",
    409: "Conflicts with the current state (e.g. no registry; a candidate failed its golden "
         "rows)",
    413: "The body is larger than the server's limit (MODELPORT_MAX_BODY_BYTES)",
    415: "Unsupported content type or charset (the supported ones are named)",
    422: "Invalid input: names the field and the row",
    429: "Over the route's rate limit (see Retry-After)",
    500: "The model failed on this input; quote the request id",
    501: "Needs an optional package that is not installed (named in the error)",
    503: "Not ready, or the queue is full (see Retry-After)",
    504: "No answer within the request timeout",
}


def answers(ok: type[BaseModel] | None, *errors: int,
            ok_status: int = 200) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses=`` for a route: its success answer and the errors it can give
    (each with :class:`ErrorBody`; the document swaps in :class:`V2ErrorBody` on V2 routes)."""
    out: dict[int | str, dict[str, Any]] = {}
    if ok is not None:
        out[ok_status] = {"model": ok}
    for status in errors:
        out[status] = {"model": ErrorBody, "description": _MEANING[status]}
    return out


def meaning(status: int) -> str:
    """The description the document gives an error status."""
    return _MEANING.get(status, "Error")
