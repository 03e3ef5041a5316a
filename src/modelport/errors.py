"""The one error tree of modelport.

Every error a user can meet is a :class:`ModelportError`. Each leaf carries the HTTP status it
maps to as a plain ``int`` (``status``) so the server translates it once, and the CLI turns it
into an exit code once; nothing here imports a web framework.

::

    ModelportError (500)
    ├── InvalidInput (422)            bad request body: names the field/row and the problem
    │   └── UnsupportedMediaType (415)
    ├── Unauthorized (401)            missing or wrong API key
    ├── NotFound (404)
    │   └── ModelNotFound (404)       unknown model or version
    ├── Conflict (409)                e.g. deleting a version an alias points at
    │   └── GoldenCheckFailed (409)   a model raised on (or misanswered) its golden rows: refused
    ├── PayloadTooLarge (413)
    ├── NotReady (503)                model still loading / warming up
    ├── Overloaded (503)              queue full; carries ``retry_after`` seconds
    │   └── RateLimited (429)         over a route's rate limit (explanations); ``retry_after``
    ├── RequestTimeout (504)          the request waited longer than its deadline
    ├── PredictionError (500)         the model raised at predict time
    │   └── NonFiniteOutput (500)     the model answered NaN or infinity
    ├── ModelLoadError (500)          an artifact could not be loaded
    │   ├── MissingExtra (500)        a flavor's library is not installed; says what to pip install
    │   └── IntegrityError (500)      a sha256 did not match: the package was altered
    └── ConfigError (500)             a setting or a CLI argument makes no sense
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ConfigError",
    "Conflict",
    "GoldenCheckFailed",
    "IntegrityError",
    "InvalidInput",
    "MissingExtra",
    "ModelLoadError",
    "ModelNotFound",
    "ModelportError",
    "NonFiniteOutput",
    "NotFound",
    "NotReady",
    "Overloaded",
    "PayloadTooLarge",
    "PredictionError",
    "RateLimited",
    "RequestTimeout",
    "Unauthorized",
    "UnsupportedMediaType",
]


class ModelportError(Exception):
    """Root of every error modelport raises on purpose."""

    status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ModelportError):
    """The request body is not what the model's signature accepts."""

    status = 422
    exit_code = 2

    def __init__(self, message: str, *, field: str | None = None, row: int | None = None) -> None:
        where = []
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        text = f"{', '.join(where)}: {message}" if where else message
        super().__init__(text)
        self.field = field
        self.row = row


class UnsupportedMediaType(InvalidInput):
    """The body's content type cannot be decoded."""

    status = 415


class Unauthorized(ModelportError):
    """A protected route was called without a valid API key."""

    status = 401
    exit_code = 2


class NotFound(ModelportError):
    """Something named in the request does not exist."""

    status = 404
    exit_code = 2


class ModelNotFound(NotFound):
    """No model (or no such version of it) is served or registered."""


class Conflict(ModelportError):
    """The request conflicts with the current state (e.g. deleting an aliased version)."""

    status = 409
    exit_code = 2


class GoldenCheckFailed(Conflict):
    """A model raised on a golden row, answered it with NaN/inf, or answered it differently
    from what was recorded: it is not packed, pushed or put live (the live version stays)."""


class PayloadTooLarge(ModelportError):
    """The body is larger than the configured limit."""

    status = 413
    exit_code = 2


class NotReady(ModelportError):
    """The model is not loaded or warmed up yet."""

    status = 503


class Overloaded(ModelportError):
    """The queue in front of the model is full; the client should retry later."""

    status = 503

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(Overloaded):
    """More requests than a route's rate limit allows (the explanation route); the client
    should retry after ``retry_after`` seconds."""

    status = 429


class RequestTimeout(ModelportError):
    """The request waited longer than its deadline."""

    status = 504


class PredictionError(ModelportError):
    """The model raised while predicting; the details go to the log, not the client."""


class NonFiniteOutput(PredictionError):
    """The model answered NaN or infinity: a failed prediction, never an answer to pass on."""

    def __init__(self, message: str = "model returned non-finite output") -> None:
        super().__init__(message)


class ModelLoadError(ModelportError):
    """An artifact could not be loaded."""


class MissingExtra(ModelLoadError):
    """The library a flavor needs is not installed."""

    def __init__(self, extra: str, module: str) -> None:
        super().__init__(
            f"loading this model needs the '{module}' package; "
            f"install it with: pip install 'modelport[{extra}]'"
        )
        self.extra = extra


class IntegrityError(ModelLoadError):
    """A file's sha256 does not match the one recorded in the package: it was altered."""


class ConfigError(ModelportError):
    """A setting or argument makes no sense."""

    exit_code = 2
