"""Open Inference Protocol V2 (KServe / Triton / MLServer), with the binary-tensor and
model-repository extensions. Errors answer ``{"error": "..."}``."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

import modelport
from modelport.errors import ModelNotFound
from modelport.server.fastlane import FastRoute
from modelport.server.models import ServedModel
from modelport.server.rollout import retire
from modelport.server.state import app_state, predict, resolve_model
from modelport.server.v2codec import decode_request, encode_response, feature_datatype, to_columns

__all__ = ["FAST_ROUTES", "router"]

router = APIRouter(prefix="/v2", tags=["v2 (Open Inference Protocol)"])
_HEADER = "inference-header-content-length"


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


@router.get("", summary="Server metadata")
async def server_metadata() -> Response:
    """Name, version and the protocol extensions this server speaks."""
    return _json({"name": "modelport", "version": modelport.__version__,
                  "extensions": ["binary_tensor_data", "model_repository"]})


def _metadata(request: Request, served: ServedModel) -> Response:
    sig = served.signature
    outputs = [{"name": "predict", "datatype": "BYTES" if sig.classes and any(
        isinstance(c, str) for c in sig.classes) else ("INT64" if sig.classes else "FP64"),
        "shape": [-1]}]
    if sig.has_proba:
        outputs.append({"name": "predict_proba", "datatype": "FP64",
                        "shape": [-1, len(sig.classes or ())]})
    repo = app_state(request).repo
    return _json({
        "name": served.name,
        "versions": [s.version for s in repo.versions(served.name)],
        "platform": served.loaded.runtime.flavor,
        "inputs": [{"name": f.name, "datatype": feature_datatype(f.dtype), "shape": [-1]}
                   for f in sig.features],
        "outputs": outputs,
        "parameters": {"content_type": "pd"},
    })


@router.get("/models/{name}", summary="Model metadata")
async def model_metadata(request: Request, name: str) -> Response:
    """Inputs (one tensor per feature, MLServer's ``pd`` convention) and outputs."""
    return _metadata(request, app_state(request).repo.get(name))


@router.get("/models/{name}/versions/{version}", summary="Model version metadata")
async def version_metadata(request: Request, name: str, version: str) -> Response:
    """Metadata of one version."""
    return _metadata(request, app_state(request).repo.get(name, version))


def _ready(request: Request, name: str, version: str | None) -> Response:
    served = app_state(request).repo.get(name, version)
    return _json({"name": served.name, "ready": served.ready})


@router.get("/models/{name}/ready", summary="Model readiness")
async def model_ready(request: Request, name: str) -> Response:
    """200 when loaded and warmed; 503 while loading; 404 when unknown."""
    return _ready(request, name, None)


@router.get("/models/{name}/versions/{version}/ready", summary="Model version readiness")
async def version_ready(request: Request, name: str, version: str) -> Response:
    """Readiness of one version."""
    return _ready(request, name, version)


async def _infer(request: Request, name: str | None, version: str | None) -> Response:
    state = app_state(request)
    served = resolve_model(request, name, version)
    header = request.headers.get(_HEADER)
    body, tensors = decode_request(await request.body(), int(header) if header and
                                   header.isdigit() else None)
    batch = to_columns(tensors, served.signature, unseen=state.settings.unseen_categories,
                       max_rows=state.settings.max_batch_rows)
    outputs = await predict(request, served, batch, "v2")
    payload, head_len = encode_response(body, outputs, model=served.name, version=served.version,
                                        request_id=request.state.request_id)
    if head_len is None:
        return Response(payload, media_type="application/json")
    return Response(payload, media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(head_len)})


FAST_ROUTES = [FastRoute(router.prefix + path, _infer) for path in (
    "/models/{name}/infer", "/models/{name}/versions/{version}/infer")]
"""Answered by the fast lane; the FastAPI routes below (same paths) document them."""


@router.post("/models/{name}/infer", summary="Inference")
async def infer(request: Request, name: str) -> Response:
    """JSON tensors, or the binary-tensor extension (``Inference-Header-Content-Length``)."""
    return await _infer(request, name, None)


@router.post("/models/{name}/versions/{version}/infer", summary="Inference with a version")
async def infer_version(request: Request, name: str, version: str) -> Response:
    """Inference with one version."""
    return await _infer(request, name, version)


@router.post("/repository/index", summary="Repository index")
async def repository_index(request: Request) -> Response:
    """Every model this server knows, loaded or not."""
    state = app_state(request)
    out = [{"name": s.name, "version": s.version, "state": "READY" if s.ready else "LOADING",
            "reason": ""} for s in state.repo.all()]
    for name in state.repo.known_unloaded():
        out.append({"name": name, "version": "", "state": "UNAVAILABLE", "reason": "unloaded"})
    return _json(out)


@router.post("/repository/models/{name}/load", summary="Load a model")
async def repository_load(request: Request, name: str) -> Response:
    """(Re)load a model this server knows from its source."""
    repo = app_state(request).repo
    source = repo.source(name)
    if source is None:
        raise ModelNotFound(f"model '{name}' is not in this server's repository")
    repo.serve(source)
    return _json({})


@router.post("/repository/models/{name}/unload", summary="Unload a model")
async def repository_unload(request: Request, name: str) -> Response:
    """Stop serving a model; it stays in the index and can be loaded again."""
    gone = app_state(request).repo.unload(name)
    for served in gone:
        await retire(served)
    return _json({})
