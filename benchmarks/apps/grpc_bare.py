"""The gRPC wire floor: a bare ``grpc.aio`` server answering ``ModelInfer`` with a constant.

    python benchmarks/apps/grpc_bare.py --port PORT

It implements the Open Inference Protocol's ``ModelInfer`` (modelport's generated stubs) on the
event loop modelport's gRPC server shares with uvicorn (uvloop), with the standard health
service for readiness, and nothing else: grpc decodes the request message, the servicer looks
at the first input's shape only to pick a constant ``ModelInferResponse`` (one row or 100 rows'
worth of ``predict`` and ``predict_proba``, raw contents as tritonclient asks by default), and
grpc encodes it. No model, no validation, no metrics, no log: what grpc.aio itself costs per
call, the yardstick of issue 19's gRPC targets.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import uvloop
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from modelport.server.grpc import oip_pb2 as pb
from modelport.server.grpc import oip_pb2_grpc


def _answer(rows: int) -> Any:
    response = pb.ModelInferResponse(model_name="heart", model_version="1", id="")
    response.outputs.add(name="predict", datatype="INT64", shape=[rows])
    response.outputs.add(name="predict_proba", datatype="FP64", shape=[rows, 2])
    response.raw_output_contents.append(np.zeros(rows, "<i8").tobytes())
    response.raw_output_contents.append(np.full((rows, 2), 0.5, "<f8").tobytes())
    return response


_ONE, _MANY = _answer(1), _answer(100)


class Floor(oip_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc, unused-ignore]
    """``ModelInfer`` answering a constant; every other method: grpc's UNIMPLEMENTED."""

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        """One row or 100 rows' worth of a constant answer."""
        inputs = request.inputs
        return _MANY if inputs and inputs[0].shape and inputs[0].shape[0] > 1 else _ONE


async def serve(port: int) -> None:
    """Serve on 127.0.0.1:``port`` until killed."""
    server = aio.server()
    oip_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Floor(), server)  # type: ignore[no-untyped-call]
    checks = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await checks.set("", health_pb2.HealthCheckResponse.SERVING)
    await server.wait_for_termination()


def main() -> None:
    """Parse ``--port`` and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    uvloop.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
