"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService``.

A second front door over the same data plane as REST, served with grpc.aio in the same process
and event loop (:class:`~modelport.server.grpc.door.GrpcDoor`), with ``grpc.health.v1`` and
server reflection. ``oip.proto`` is the protocol; ``oip_pb2*`` are its generated stubs
(committed; ``scripts/gen-grpc-stubs`` regenerates them). Importing this package imports grpc:
only :mod:`modelport.server.run` does, and only when a gRPC port is set.
"""
