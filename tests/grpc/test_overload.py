"""A slow model behind gRPC: a full queue is RESOURCE_EXHAUSTED, the client's deadline is
honoured (DEADLINE_EXCEEDED), and SIGTERM drains gRPC and REST together (the last test: it
stops the module's server)."""

from __future__ import annotations

import concurrent.futures as cf
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from modelport.server.grpc import oip_pb2 as pb
from modelport.server.grpc.oip_pb2_grpc import GRPCInferenceServiceStub
from tests.grpc.conftest import Served, serving

pytestmark = pytest.mark.e2e


def slow_model(tmp: Path, delay: float) -> str:
    import joblib

    from tests.server.slowmodel import SlowSum

    path = tmp / "slow.joblib"
    joblib.dump(SlowSum(delay), path)
    return str(path)


def request(i: int) -> pb.ModelInferRequest:
    """One row of the two-feature slow model (its features are named by position)."""
    r = pb.ModelInferRequest(model_name="slow")
    t = r.inputs.add(name="x", datatype="FP64", shape=[1, 2])
    t.contents.fp64_contents.extend([float(i), 1.0])
    return r


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One row per model call of 0.3 s, and at most two calls waiting."""
    tmp = tmp_path_factory.mktemp("slow")
    served = serving(slow_model(tmp, 0.3), "--max-batch-size", "1",
                     env={"MODELPORT_MAX_QUEUE": "2"})
    yield served
    assert served.stop() == 0


def test_a_full_queue_is_resource_exhausted(slow: Served) -> None:
    with grpc.insecure_channel(slow.target) as channel:
        stub = GRPCInferenceServiceStub(channel)
        futures = [stub.ModelInfer.future(request(i), timeout=30) for i in range(6)]
        codes, details = [], []
        for f in futures:
            try:
                f.result()
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as err:
                codes.append(err.code())
                details.append(err.details())
    assert grpc.StatusCode.OK in codes
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    assert any("retry" in d for d in details)


def test_the_client_deadline_is_honoured(slow: Served) -> None:
    """A call whose deadline passes while it waits gets DEADLINE_EXCEEDED, and the server
    counts it as REST counts a timeout (504)."""
    def timeouts() -> float:
        text = httpx.get(f"{slow.url}/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("modelport_requests_total{") and 'protocol="grpc"' in line
                   and 'status="504"' in line)

    before = timeouts()
    with grpc.insecure_channel(slow.target) as channel:
        stub = GRPCInferenceServiceStub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(request(1), timeout=0.1)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 0.3  # not the model's 0.3 s
    deadline = time.monotonic() + 5
    while timeouts() < before + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert timeouts() == before + 1


def test_sigterm_drains_grpc_and_rest_together(slow: Served) -> None:
    """Calls in flight on both protocols when SIGTERM arrives all answer; new gRPC calls are
    refused; the process exits 0."""
    with grpc.insecure_channel(slow.target) as channel, cf.ThreadPoolExecutor(1) as pool:
        stub = GRPCInferenceServiceStub(channel)
        stub.ModelInfer(request(0), timeout=30)  # the model is idle again (earlier tests)
        grpc_calls = [stub.ModelInfer.future(request(i), timeout=30) for i in range(2)]
        rest_call = pool.submit(_rest_call, slow.url, 5)
        _wait_in_flight(slow.url, 3)
        slow.proc.send_signal(signal.SIGTERM)
        answers = [f.result().outputs[0].contents for f in grpc_calls]
        assert [list(a.fp64_contents) for a in answers] == [[1.0], [2.0]]
        assert rest_call.result() == 200
        with pytest.raises(grpc.RpcError) as late:
            stub.ModelInfer(request(99), timeout=10)
        assert late.value.code() == grpc.StatusCode.UNAVAILABLE
    assert slow.proc.wait(timeout=30) == 0


def _rest_call(url: str, i: int) -> int:
    with httpx.Client(timeout=30) as c:
        return c.post(f"{url}/predict", json={"instances": [[i, 1]]}).status_code


def _wait_in_flight(url: str, n: int) -> None:
    deadline = time.monotonic() + 20
    ready: Any = {}
    while time.monotonic() < deadline:
        ready = httpx.get(f"{url}/ready").json()
        if ready.get("in_flight", 0) >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"only {ready.get('in_flight')} requests in flight, wanted {n}")
