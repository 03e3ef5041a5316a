"""OpenAPI with a request schema per served model, built from its signature, with a real
example — so ``/docs`` shows exactly what each model takes."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from modelport.server.state import AppState
from modelport.signature import Signature

__all__ = ["install_openapi"]


def _schema_name(model: str) -> str:
    return "".join(p.capitalize() for p in model.replace("-", "_").replace(".", "_").split("_"))


def record_schema(sig: Signature) -> dict[str, Any]:
    """JSON Schema of one record keyed by feature name."""
    return {"type": "object", "additionalProperties": False,
            "required": list(sig.names),
            "properties": {f.name: f.json_schema() for f in sig.features}}


def request_schema(ref: str, sig: Signature) -> dict[str, Any]:
    """The three accepted native body shapes."""
    return {"oneOf": [
        {"type": "object", "title": "One record", "required": ["features"],
         "properties": {"features": {"$ref": ref}}},
        {"type": "object", "title": "Several records or rows", "required": ["instances"],
         "properties": {"instances": {"type": "array", "items": {"oneOf": [
             {"$ref": ref}, {"type": "array", "minItems": len(sig.features),
                             "maxItems": len(sig.features)}]}}}},
        {"type": "object", "title": "Columns", "required": ["columns"],
         "properties": {"columns": {"type": "object", "additionalProperties":
                                    {"type": "array"}}}},
    ]}


def _operation(model: str, sig: Signature, ref: str, batch: bool) -> dict[str, Any]:
    return {"post": {
        "tags": ["native"],
        "summary": f"Predict with '{model}'" + (" (large batch)" if batch else ""),
        "operationId": f"predict_{model}" + ("_batch" if batch else ""),
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": request_schema(ref, sig),
            "example": {"features": sig.example_record()}}}},
        "responses": {"200": {"description": "Predictions"},
                      "422": {"description": "Invalid input: names the field and row"},
                      "404": {"description": "Unknown model or version"}},
    }}


def install_openapi(app: FastAPI, state: AppState) -> None:
    """Replace ``app.openapi`` with one that documents every served model."""

    def build() -> dict[str, Any]:
        doc = get_openapi(title=app.title, version=app.version, description=app.description,
                          routes=app.routes)
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for name in state.repo.names():
            served = state.repo.get(name)
            sig = served.signature
            key = f"{_schema_name(name)}Record"
            schemas[key] = record_schema(sig)
            ref = f"#/components/schemas/{key}"
            doc["paths"][f"/models/{name}/predict"] = _operation(name, sig, ref, False)
            doc["paths"][f"/models/{name}/predict/batch"] = _operation(name, sig, ref, True)
            if name == state.repo.primary:
                for path in ("/predict", "/predict/batch"):
                    op = doc["paths"].get(path, {}).get("post")
                    if op is not None:
                        op["requestBody"] = _operation(name, sig, ref, False)["post"][
                            "requestBody"]
        return doc

    app.openapi = build  # type: ignore[method-assign]
