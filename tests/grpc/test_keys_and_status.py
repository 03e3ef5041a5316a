"""Keys from metadata and errors as status codes: the REST edge's rules, in gRPC's terms."""

from __future__ import annotations

import logging

import grpc
import pytest

from modelport.errors import (
    Conflict,
    InvalidInput,
    ModelNotFound,
    ModelportError,
    NonFiniteOutput,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    Unauthorized,
    UnsupportedMediaType,
)
from modelport.server.grpc.auth import Keys, metadata_key
from modelport.server.grpc.status import refusal_of

INFER = "/inference.GRPCInferenceService/ModelInfer"
LOAD = "/inference.GRPCInferenceService/RepositoryModelLoad"
HEALTH = "/grpc.health.v1.Health/Check"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
BOTH = Keys(api_keys=["p"], admin_keys=["a"])
C = grpc.StatusCode


@pytest.mark.parametrize(("metadata", "key"), [
    ((("authorization", "Bearer k"),), b"k"),
    ((("authorization", "bearer  k "),), b"k"),
    ((("x-api-key", "k"),), b"k"),
    ((("x-api-key", "x"), ("authorization", "Bearer k")), b"k"),
    ((("authorization", "Basic k"),), b""),
    ((("x-api-key-bin", b"k"),), b""),
    (None, b""),
], ids=["bearer", "bearer, any case and spaces", "x-api-key", "bearer wins",
        "not bearer", "binary metadata", "none"])
def test_the_key_comes_from_authorization_bearer_or_x_api_key(metadata: object,
                                                               key: bytes) -> None:
    assert metadata_key(metadata) == key  # type: ignore[arg-type]


@pytest.mark.parametrize(("keys", "method", "key", "code"), [
    (BOTH, INFER, None, C.UNAUTHENTICATED),
    (BOTH, INFER, "wrong", C.UNAUTHENTICATED),
    (BOTH, INFER, "p", None),
    (BOTH, INFER, "a", None),
    (BOTH, REFLECTION, None, C.UNAUTHENTICATED),
    (BOTH, HEALTH, None, None),
    (BOTH, "/inference.GRPCInferenceService/ServerReady", None, None),
    (BOTH, LOAD, "p", C.PERMISSION_DENIED),
    (BOTH, LOAD, None, C.UNAUTHENTICATED),
    (BOTH, LOAD, "a", None),
    (Keys(api_keys=[], admin_keys=[]), INFER, None, None),
    (Keys(api_keys=[], admin_keys=[]), LOAD, "anything", C.PERMISSION_DENIED),
    (Keys(api_keys=[], admin_keys=["a"]), LOAD, "a", None),
], ids=["no key", "wrong key", "prediction key", "admin key predicts", "reflection needs a key",
        "health is open", "readiness is open", "prediction key on admin", "no key on admin",
        "admin key on admin", "no keys: open", "no admin key: admin off",
        "admin key without prediction keys"])
def test_each_rpc_needs_the_key_rest_needs_for_its_route(keys: Keys, method: str,
                                                         key: str | None,
                                                         code: grpc.StatusCode | None) -> None:
    metadata = None if key is None else (("authorization", f"Bearer {key}"),)
    refusal = keys.refusal(method, metadata)
    assert (refusal[0] if refusal else None) == code


def test_admin_rpcs_without_an_admin_key_say_how_to_turn_them_on() -> None:
    refusal = Keys(api_keys=[], admin_keys=[]).refusal(LOAD, None)
    assert refusal is not None
    assert "MODELPORT_ADMIN_KEYS" in refusal[1]
    assert "--admin-keys-file" in refusal[1]


@pytest.mark.parametrize(("error", "code", "http"), [
    (InvalidInput("bad", field="age", row=2), C.INVALID_ARGUMENT, 400),
    (UnsupportedMediaType("no"), C.INVALID_ARGUMENT, 415),
    (Unauthorized("key"), C.UNAUTHENTICATED, 401),
    (ModelNotFound("model 'x' is not served"), C.NOT_FOUND, 404),
    (Conflict("golden rows failed"), C.FAILED_PRECONDITION, 409),
    (PayloadTooLarge("big"), C.RESOURCE_EXHAUSTED, 413),
    (NotReady("loading"), C.UNAVAILABLE, 503),
    (Overloaded("queue full"), C.RESOURCE_EXHAUSTED, 503),
    (RequestTimeout("late"), C.DEADLINE_EXCEEDED, 504),
], ids=["bad input", "media type", "key", "not found", "conflict", "too large", "loading",
        "queue full", "deadline"])
def test_errors_map_to_status_codes_with_rest_messages(error: ModelportError,
                                                       code: grpc.StatusCode,
                                                       http: int) -> None:
    refusal = refusal_of(error, "rid")
    assert (refusal.code, refusal.http_status) == (code, http)
    assert refusal.message == error.message


def test_bad_input_names_the_row_and_the_field() -> None:
    assert refusal_of(InvalidInput("missing", field="age", row=2), "r").message == (
        "row 2, field 'age': missing")


@pytest.mark.parametrize("error", [NonFiniteOutput(), RuntimeError("secret detail")],
                         ids=["model answered NaN", "a bug"])
def test_failures_are_internal_with_the_request_id_and_logged(
        error: Exception, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="modelport"):
        refusal = refusal_of(error, "req-42")
    assert (refusal.code, refusal.http_status) == (C.INTERNAL, 500)
    assert "quote request id req-42" in refusal.message
    assert "secret detail" not in refusal.message
    assert "req-42" in caplog.text
