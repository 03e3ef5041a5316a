"""The OpenAPI document: generated from the routes, then made exact for this server.

Routes state their own answers (``responses=`` from :func:`~modelport.server.schemas.answers`).
This module adds what depends on the running server, so that a client generated from
``/openapi.json`` (or a property-based tester) meets no surprise:

- each prediction route (native, V1, V2) is shown once per served model — ``/models/heart/
  predict``, ``/v2/models/heart/infer``, one path per served version too — with that model's
  request schema (every feature required, typed, categories as ``enum``) and answer schema;
  the generic ``{name}`` templates, whose body depends on the model, are left out;
- the edge's refusals where they apply: 401 (and ``security``) when keys are needed, 403 on
  admin routes, 413 on every route that takes a body;
- error bodies as the server writes them: ``{"error"}`` on V2 routes, ``{"error", "field",
  "row", "request_id"}`` elsewhere; FastAPI's own validation-error schema is replaced.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from modelport.config import Settings
from modelport.server.edge import OPEN_PATHS, is_admin_path
from modelport.server.errors import is_mlflow, is_v2
from modelport.server.fastlane import ModelportApp
from modelport.server.mlflow_scoring import mlflow_request
from modelport.server.models import ModelRepository
from modelport.server.schemas import ErrorBody, MlflowErrorBody, V2ErrorBody, meaning
from modelport.server.schemas_model import (
    native_answer,
    native_request,
    record_schema,
    row_schema,
    v1_answer,
    v1_request,
    v2_answer,
    v2_request,
)
from modelport.server.state import AppState
from modelport.server.v2codec import feature_datatype
from modelport.signature import Signature

__all__ = ["build_document", "install_openapi"]

Doc = dict[str, Any]

_REF = "#/components/schemas/"
_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
_SCHEMES = {"bearer": {"type": "http", "scheme": "bearer",
                       "description": "Authorization: Bearer KEY"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}


def install_openapi(app: FastAPI, state: AppState) -> None:
    """Replace ``app.openapi`` with :func:`build_document` (built afresh on each call: the
    served models change)."""
    def build() -> Doc:
        return build_document(app, state.repo, state.settings)

    app.openapi = build  # type: ignore[method-assign]


def build_document(app: FastAPI, repo: ModelRepository, settings: Settings) -> Doc:
    """The document for ``app`` as it serves ``repo``'s models now."""
    doc = get_openapi(title=app.title, version=app.version, description=app.description,
                      routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for model in (ErrorBody, V2ErrorBody, MlflowErrorBody):
        schemas[model.__name__] = model.model_json_schema()
    keys: dict[str, str] = {}
    paths: Doc = {}
    per_model = _per_model_routes(app)
    for template, item in doc["paths"].items():
        if template not in per_model:
            paths[template] = item
            continue
        for path, name, sig in _model_paths(template, repo):
            key = _schema_key(name, sig, keys)
            op = _model_operation(item["post"], name, sig, kind=per_model[template],
                                  settings=settings, schemas=schemas, key=key)
            op["operationId"] = re.sub(r"\W+", "_", f"{op['operationId']}_{path}")
            op["parameters"] = [p for p in op.get("parameters", ())
                                if "{" + p["name"] + "}" in path]
            paths[path] = {"post": op}
    doc["paths"] = dict(sorted(paths.items(), key=lambda entry: _place(entry[0])))
    for path, item in doc["paths"].items():
        for op in item.values():
            _finish(path, op, settings)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    doc["components"]["securitySchemes"] = _SCHEMES
    return doc


def _per_model_routes(app: FastAPI) -> dict[str, str]:
    """The prediction routes, whose request body depends on the model (documented once per
    model), with the kind of body each takes: the rows of the app's route tables."""
    routes = app.fast_routes if isinstance(app, ModelportApp) else ()
    return {route.path: route.kind for route in routes}


def _place(path: str) -> tuple[bool, bool]:
    """Where a path goes in the document (the sort is stable): the admin routes, which change
    what is served, after the rest; among them the loads last, after the unloads. A client
    (or a tester) going through the document in order keeps a model to talk to."""
    return is_admin_path(path), path.endswith("/load")


def _model_paths(template: str, repo: ModelRepository) -> Iterator[tuple[str, str, Signature]]:
    """(path, model, signature) for each served (or unloaded but known) model: the primary
    model for ``/predict``, each served version for versioned templates."""
    names = [repo.primary] if "{name}" not in template else repo.names() + repo.known_unloaded()
    for name in names:
        if name is None:
            continue
        path = template.replace("{name}", name)
        if "{version}" not in template:
            sig = _signature(repo, name)
            if sig is not None:
                yield path, name, sig
            continue
        for served in repo.versions(name):
            yield path.replace("{version}", served.version), name, served.signature


def _signature(repo: ModelRepository, name: str) -> Signature | None:
    default = repo.default_version(name)
    for served in repo.versions(name):
        if served.version == default:
            return served.signature
    source = repo.source(name)
    return None if source is None else source.signature


def _schema_key(name: str, sig: Signature, keys: dict[str, str]) -> str:
    """The components prefix of ``name``'s schemas: ``Heart``; ``Heart2``… for a version
    whose signature differs from the one seen first."""
    text = f"{name}\0{json.dumps(sig.to_dict(), sort_keys=True, default=str)}"
    if text not in keys:
        base = "".join(p.capitalize() for p in re.split(r"[^0-9A-Za-z]+", name) if p)
        taken = set(keys.values())
        n = 1
        while (key := base + (str(n) if n > 1 else "")) in taken:
            n += 1
        keys[text] = key
    return keys[text]


def _model_operation(generic: Doc, name: str, sig: Signature, *, kind: str,
                     settings: Settings, schemas: Doc, key: str) -> Doc:
    """A copy of the generic prediction operation with ``name``'s request and answer; its
    schemas go into ``schemas`` under names starting with ``key``."""
    op = copy.deepcopy(generic)
    body, answer, example = _bodies(sig, kind, settings, schemas, key)
    schemas[f"{key}{kind.capitalize()}Request"] = body
    op["requestBody"] = {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"{_REF}{key}{kind.capitalize()}Request"}, "example": example}}}
    op["summary"] = f"{op.get('summary', 'Predict')}: {name}"
    content = {"application/json": {"schema": answer}}
    if kind == "v2":
        content["application/octet-stream"] = {"schema": {"type": "string",
                                                          "format": "binary"}}
    op["responses"]["200"] = {"description": "Predictions", "content": content}
    return op


def _bodies(sig: Signature, kind: str, settings: Settings, schemas: Doc,
            key: str) -> tuple[Doc, Doc, Any]:
    """Request schema, answer schema and example request of one kind of prediction route."""
    unseen = settings.unseen_categories
    schemas[f"{key}Record"] = record_schema(sig, unseen)
    schemas[f"{key}Row"] = row_schema(sig, unseen)
    record, row = {"$ref": f"{_REF}{key}Record"}, {"$ref": f"{_REF}{key}Row"}
    if kind == "v2":
        return v2_request(sig, unseen=unseen), v2_answer(), _v2_example(sig)
    if kind == "v2explain":  # infer's bodies, an explanation back (server/explain.py)
        return v2_request(sig, unseen=unseen), {"$ref": f"{_REF}V2ExplainAnswer"}, \
            _v2_example(sig)
    if kind == "explain":  # predict's bodies, at most explain_max_rows rows
        return (native_request(sig, record, row, unseen=unseen,
                               max_rows=settings.explain_max_rows),
                {"$ref": f"{_REF}ExplainAnswer"}, {"features": sig.example_record()})
    if kind == "v1":
        return (v1_request(record, row, max_rows=settings.max_batch_rows), v1_answer(sig),
                {"instances": [sig.example_record()]})
    if kind == "mlflow":
        loose = {k: v for k, v in record_schema(sig, unseen).items()
                 if k != "additionalProperties"}
        schemas[f"{key}MlflowRecord"] = loose
        body = mlflow_request(sig, unseen=unseen, max_rows=settings.max_batch_rows,
                              record={"$ref": f"{_REF}{key}MlflowRecord"}, row=row)
        example = {"dataframe_split": {"columns": list(sig.names),
                                       "data": [list(sig.example_record().values())]}}
        return body, v1_answer(sig), example
    rows = settings.max_batch_rows if kind == "native" else settings.max_bulk_rows
    return (native_request(sig, record, row, unseen=unseen, max_rows=rows), native_answer(sig),
            {"features": sig.example_record()})


def _v2_example(sig: Signature) -> Doc:
    return {"inputs": [{"name": f.name, "datatype": feature_datatype(f.dtype), "shape": [1],
                        "data": [f.example_value()]} for f in sig.features]}


def _finish(path: str, op: Doc, settings: Settings) -> None:
    """Error bodies as written, FastAPI's validation errors replaced, the edge's refusals."""
    responses: Doc = op.setdefault("responses", {})
    auto = responses.get("422", {}).get("content", {}).get("application/json", {})
    if auto.get("schema", {}).get("$ref", "").endswith("HTTPValidationError"):
        del responses["422"]
        if "requestBody" in op:
            status = 400 if is_v2(path) or is_mlflow(path) else 422
            responses[str(status)] = _error(status, path)
    if "requestBody" in op:
        responses["413"] = _error(413, path)
    for status in _refusals(path, settings):
        responses[str(status)] = _error(status, path)
    if _needs_key(path, settings):
        op["security"] = _SECURITY
    if is_v2(path):
        for answer in responses.values():
            schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
            if schema.get("$ref") == f"{_REF}ErrorBody":
                schema["$ref"] = f"{_REF}V2ErrorBody"


def _error(status: int, path: str) -> Doc:
    name = "V2ErrorBody" if is_v2(path) else "ErrorBody"
    schema: Doc = {"$ref": f"{_REF}{name}"}
    if is_mlflow(path) and status not in (401, 403):  # those are the edge's, as 413 may be
        mlflow = {"$ref": f"{_REF}MlflowErrorBody"}
        schema = {"anyOf": [schema, mlflow]} if status == 413 else mlflow
    return {"description": meaning(status), "content": {"application/json": {"schema": schema}}}


def _refusals(path: str, settings: Settings) -> tuple[int, ...]:
    """What the edge answers before the route runs (see :mod:`~modelport.server.edge`)."""
    if is_admin_path(path):
        if not settings.all_admin_keys():
            return (403,)
        return (401, 403) if settings.all_api_keys() else (401,)
    return (401,) if _needs_key(path, settings) else ()


def _needs_key(path: str, settings: Settings) -> bool:
    """Admin routes always (with no admin key configured, none is accepted); the rest when
    prediction keys are configured, except the probes."""
    return is_admin_path(path) or (bool(settings.all_api_keys()) and path not in OPEN_PATHS)
