"""``inference.GRPCInferenceService``: each RPC is a thin codec over the data plane.

An RPC makes a :class:`~modelport.server.dataplane.RequestContext` from the call (request id
from ``x-request-id`` metadata or a new one, the metadata as headers for sticky traffic, the
client's deadline), asks the data plane, and encodes the answer; errors are translated once by
:mod:`modelport.server.grpc.status`. The answer's trailing metadata carries ``x-request-id``,
``x-model-name``, ``x-model-version`` and ``x-model-arm`` as REST's headers do.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from grpc import aio

import modelport
from modelport.errors import NotReady
from modelport.runtimes import device_of
from modelport.server.accesslog import access_log
from modelport.server.dataplane import RequestContext
from modelport.server.grpc import oip_pb2 as pb
from modelport.server.grpc.auth import ADMIN_METHODS, Keys
from modelport.server.grpc.codec import check_outputs, decode_infer, encode_infer
from modelport.server.grpc.oip_pb2_grpc import GRPCInferenceServiceServicer
from modelport.server.grpc.status import refusal_of
from modelport.server.models import ServedModel
from modelport.server.state import AppState
from modelport.server.v2codec import feature_datatype, output_metadata, to_columns

__all__ = ["INFER_ROUTE", "InferenceServicer"]

INFER_ROUTE = "/inference.GRPCInferenceService/ModelInfer"
"""The ``route`` label of ModelInfer calls in the request metrics."""
if TYPE_CHECKING:  # grpc's classes take type arguments only in its stubs
    Context = aio.ServicerContext[Any, Any]
_T = TypeVar("_T")


class InferenceServicer(GRPCInferenceServiceServicer):
    """The Open Inference Protocol's RPCs over one app's data plane."""

    def __init__(self, state: AppState, keys: Keys) -> None:
        self._state = state
        self._keys = keys
        self._plane = state.dataplane
        self._id_prefix = uuid.uuid4().hex[:16]
        self._ids = itertools.count()

    async def ServerLive(self, request: pb.ServerLiveRequest,
                         context: Context) -> pb.ServerLiveResponse:
        """Whether the process answers."""
        return pb.ServerLiveResponse(live=self._plane.live())

    async def ServerReady(self, request: pb.ServerReadyRequest,
                          context: Context) -> pb.ServerReadyResponse:
        """Whether every model is loaded and warmed and the server is not draining."""
        return pb.ServerReadyResponse(ready=self._plane.ready())

    async def ModelReady(self, request: pb.ModelReadyRequest,
                         context: Context) -> pb.ModelReadyResponse:
        """Whether one model (version) answers now; NOT_FOUND when it is not served."""
        return await self._answer(context, lambda: pb.ModelReadyResponse(
            ready=self._plane.model_ready(request.name, request.version or None)))

    async def ServerMetadata(self, request: pb.ServerMetadataRequest,
                             context: Context) -> pb.ServerMetadataResponse:
        """Name, version and protocol extensions."""
        return pb.ServerMetadataResponse(name="modelport", version=modelport.__version__,
                                         extensions=["model_repository"])

    async def ModelMetadata(self, request: pb.ModelMetadataRequest,
                            context: Context) -> pb.ModelMetadataResponse:
        """Inputs (one tensor per feature: ``content_type`` ``pd``) and outputs."""
        return await self._answer(context, lambda: self._metadata(
            self._state.repo.get(request.name, request.version or None)))

    def _metadata(self, served: ServedModel) -> pb.ModelMetadataResponse:
        sig = served.signature
        meta = pb.ModelMetadataResponse(
            name=served.name, platform=served.loaded.runtime.flavor,
            versions=[s.version for s in self._state.repo.versions(served.name)])
        for f in sig.features:
            meta.inputs.add(name=f.name, datatype=feature_datatype(f.dtype), shape=[-1])
        for out in output_metadata(sig):
            meta.outputs.add(name=out["name"], datatype=out["datatype"], shape=out["shape"])
        meta.parameters["content_type"].string_param = "pd"
        meta.parameters["device"].string_param = device_of(served.loaded.runtime)
        return meta

    async def ModelInfer(self, request: pb.ModelInferRequest,
                         context: Context) -> pb.ModelInferResponse:
        """One inference: resolve -> decode -> validate -> data plane -> encode."""
        started = time.perf_counter()
        ctx = self._context(context)
        status = 200
        try:
            return await self._infer(request, ctx)
        except asyncio.CancelledError:  # the client went away, or its deadline passed
            late = ctx.deadline is not None and time.monotonic() >= ctx.deadline
            status = 504 if late else 499
            raise
        except Exception as exc:
            refusal = refusal_of(exc, ctx.request_id)
            status = refusal.http_status
            await context.abort(refusal.code, refusal.message,
                                trailing_metadata=_answer_metadata(ctx))
            raise  # abort raises; this line is never reached
        finally:
            if status == 200:
                context.set_trailing_metadata(_answer_metadata(ctx))
            self._observe(ctx, status, time.perf_counter() - started)

    async def _infer(self, request: pb.ModelInferRequest,
                     ctx: RequestContext) -> pb.ModelInferResponse:
        state = self._state
        if state.shutting_down:
            raise NotReady("the server is shutting down: send the request to another replica")
        served = self._plane.resolve(ctx, request.model_name or None,
                                     request.model_version or None)
        ctx.model, ctx.version = served.name, served.version  # bad input is counted under it
        call = decode_infer(request)
        check_outputs(call.outputs, served.signature)
        batch = to_columns(call.tensors, served.signature,
                           unseen=state.settings.unseen_categories,
                           max_rows=state.settings.max_batch_rows)
        outputs = await self._plane.infer(ctx, served, batch)
        return encode_infer(call, outputs, model=served.name, version=served.version,
                            request_id=request.id or ctx.request_id)

    def _context(self, context: Context) -> RequestContext:
        headers = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        rid = headers.get("x-request-id", "")[:128] or self._new_id()
        left = context.time_remaining()
        deadline = None if left is None else time.monotonic() + left
        return RequestContext(rid, "grpc", headers, route="grpc", deadline=deadline)

    def _new_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):016x}"

    def _observe(self, ctx: RequestContext, status: int, seconds: float) -> None:
        for observe in self._state.on_request:  # request metrics, alerts
            try:
                observe(ctx, INFER_ROUTE, status, seconds)
            except Exception:  # monitoring must never fail a request
                logging.getLogger("modelport").exception("request observer %r failed", observe)
        if ctx.model is not None:
            for answered in self._state.on_answer:  # the console's live statistics
                try:
                    answered(ctx, status, seconds)
                except Exception:
                    logging.getLogger("modelport").exception("answer hook %r failed", answered)
        access_log.request("grpc", INFER_ROUTE, status, seconds, request_id=ctx.request_id,
                           model=ctx.model, version=ctx.version)

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest,
                              context: Context) -> pb.RepositoryIndexResponse:
        """Every model this server knows, loaded or not (``ready``: only the ready ones)."""
        await self._admin(context, "RepositoryIndex")
        index = pb.RepositoryIndexResponse()
        for s in self._plane.models():
            if s.ready or not request.ready:
                index.models.add(name=s.name, version=s.version,
                                 state="READY" if s.ready else "LOADING")
        if not request.ready:
            for name in self._plane.unloaded():
                index.models.add(name=name, state="UNAVAILABLE", reason="unloaded")
        return index

    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest,
                                  context: Context) -> pb.RepositoryModelLoadResponse:
        """(Re)load a model this server knows, after it passes its golden rows
        (FAILED_PRECONDITION if not)."""
        await self._admin(context, "RepositoryModelLoad")
        try:
            await self._plane.load(request.model_name)
        except Exception as exc:
            await _abort(context, exc, "")
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest,
                                    context: Context) -> pb.RepositoryModelUnloadResponse:
        """Stop serving a model; it stays in the index and can be loaded again."""
        await self._admin(context, "RepositoryModelUnload")
        try:
            await self._plane.unload(request.model_name)
        except Exception as exc:
            await _abort(context, exc, "")
        return pb.RepositoryModelUnloadResponse()

    async def _admin(self, context: Context, rpc: str) -> None:
        """Refuse the call unless it carries an admin key (also checked without the key
        interceptor, which is only there when prediction keys are configured)."""
        method = f"/inference.GRPCInferenceService/{rpc}"
        assert method in ADMIN_METHODS
        refusal = self._keys.refusal(method, context.invocation_metadata())
        if refusal is not None:
            await context.abort(*refusal)

    @staticmethod
    async def _answer(context: Context, answer: Callable[[], _T]) -> _T:
        try:
            return answer()
        except Exception as exc:
            await _abort(context, exc, "")
            raise  # abort raises; this line is never reached


async def _abort(context: Context, exc: Exception, request_id: str) -> None:
    refusal = refusal_of(exc, request_id or "-")
    await context.abort(refusal.code, refusal.message)


def _answer_metadata(ctx: RequestContext) -> tuple[tuple[str, str], ...]:
    if ctx.model is None or ctx.version is None:
        return (("x-request-id", ctx.request_id),)
    pairs = [("x-request-id", ctx.request_id), ("x-model-name", ctx.model),
             ("x-model-version", ctx.version)]
    if ctx.arm is not None:
        pairs.append(("x-model-arm", ctx.arm))
    return tuple(pairs)
