"""Redis Streams predictions against the real Redis on 127.0.0.1:6379 (unique keys per test)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelport.package import LoadedModel, load_model
from modelport.tools.stream import StreamConfig, consume

redis = pytest.importorskip("redis")


@pytest.fixture
def client() -> Iterator[Any]:
    """A Redis client; the test's keys are deleted afterwards."""
    conn = redis.Redis(host="127.0.0.1", port=6379, decode_responses=True)
    try:
        conn.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    yield conn
    conn.close()


@pytest.fixture
def config(client: Any) -> Iterator[StreamConfig]:
    """Stream names unique to the test."""
    prefix = f"mp-test-stream-{uuid.uuid4().hex[:10]}"
    yield StreamConfig(in_stream=f"{prefix}:in", out_stream=f"{prefix}:out", consumer="first",
                       batch=16, block_ms=100, claim_idle_ms=60_000)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)


@pytest.fixture(scope="module")
def model(heart_package: Path) -> LoadedModel:
    """The example model, loaded once."""
    return load_model(heart_package)


def _send(client: Any, config: StreamConfig, model: LoadedModel, n: int) -> list[str]:
    record = json.dumps(model.signature.example_record())
    pipe = client.pipeline()
    for i in range(n):
        pipe.xadd(config.in_stream, {"id": f"req-{i}", "features": record})
    pipe.execute()
    return [f"req-{i}" for i in range(n)]


def _output_ids(client: Any, config: StreamConfig) -> Counter[str]:
    return Counter(fields["id"] for _, fields in client.xrange(config.out_stream))


def test_every_request_gets_one_prediction_with_model_and_version(
        client: Any, config: StreamConfig, model: LoadedModel) -> None:
    ids = _send(client, config, model, 40)
    stats = consume(model, config, idle_exit_s=0.3)
    _, first = client.xrange(config.out_stream, count=1)[0]
    assert (stats.read, stats.predicted, stats.rejected) == (40, 40, 0)
    assert _output_ids(client, config) == Counter(ids)
    assert first["model"] == "heart" and first["version"] == "1.0.0"
    assert json.loads(first["prediction"]) in (0, 1)
    assert set(json.loads(first["probabilities"])) == {"0", "1"}
    assert client.xpending(config.in_stream, config.group)["pending"] == 0


def test_one_field_per_feature_is_read_like_a_features_object(
        client: Any, config: StreamConfig, model: LoadedModel) -> None:
    flat = {k: str(v) for k, v in model.signature.example_record().items()}
    entry = client.xadd(config.in_stream, flat)
    stats = consume(model, config, idle_exit_s=0.3)
    assert stats.predicted == 1
    assert _output_ids(client, config) == Counter([entry])  # no id field: the entry id


def test_bad_requests_go_to_the_rejects_stream_with_the_reason_and_are_acked(
        client: Any, config: StreamConfig, model: LoadedModel) -> None:
    unseen = {**model.signature.example_record(), "thal": "purple"}
    client.xadd(config.in_stream, {"id": "bad-json", "features": "{not json"})
    client.xadd(config.in_stream, {"id": "bad-thal", "features": json.dumps(unseen)})
    _send(client, config, model, 3)
    stats = consume(model, config, idle_exit_s=0.3)
    rejects = {f["id"]: f["reason"] for _, f in client.xrange(config.rejects_stream)}
    assert (stats.predicted, stats.rejected) == (3, 2)
    assert "not valid JSON" in rejects["bad-json"]
    assert rejects["bad-thal"].startswith("field 'thal': unseen category 'purple'")
    assert client.xpending(config.in_stream, config.group)["pending"] == 0


def test_redelivered_requests_get_no_second_output(
        client: Any, config: StreamConfig, model: LoadedModel) -> None:
    ids = _send(client, config, model, 20)
    consume(model, config, idle_exit_s=0.3)
    client.xgroup_setid(config.in_stream, config.group, "0")  # deliver everything again
    again = consume(model, config, idle_exit_s=0.3)
    assert (again.read, again.predicted, again.duplicates) == (20, 0, 20)
    assert _output_ids(client, config) == Counter(ids)


def test_answered_ids_are_remembered_for_done_ttl_s_and_no_longer(
        client: Any, config: StreamConfig, model: LoadedModel) -> None:
    from dataclasses import replace

    ids = _send(client, config, model, 3)
    consume(model, replace(config, done_ttl_s=60), idle_exit_s=0.3)
    ttls = [client.ttl(config.done_key(i)) for i in ids]
    assert all(0 < t <= 60 for t in ttls), ttls  # each mark expires: Redis does not grow
    client.delete(*(config.done_key(i) for i in ids))  # as if the week had passed
    client.xgroup_setid(config.in_stream, config.group, "0")
    again = consume(model, replace(config, done_ttl_s=0), idle_exit_s=0.3)
    assert (again.predicted, again.duplicates) == (3, 0)  # forgotten: predicted again
    assert [client.ttl(config.done_key(i)) for i in ids] == [-1, -1, -1]  # 0: kept for ever


def test_a_negative_done_ttl_is_refused(config: StreamConfig, model: LoadedModel) -> None:
    from dataclasses import replace

    from modelport.errors import ConfigError

    with pytest.raises(ConfigError, match="done-ttl-s"):
        consume(model, replace(config, done_ttl_s=-1), idle_exit_s=0.1)


def test_pending_requests_of_a_dead_consumer_are_claimed_after_the_idle_time(
        client: Any, config: StreamConfig, model: LoadedModel) -> None:
    ids = _send(client, config, model, 10)
    client.xgroup_create(config.in_stream, config.group, id="0")
    client.xreadgroup(config.group, "ghost", {config.in_stream: ">"}, count=4)  # never acked
    time.sleep(0.25)
    rescuer = StreamConfig(config.redis_url, config.in_stream, config.out_stream,
                           config.group, "rescuer", 16, claim_idle_ms=200, block_ms=100)
    stats = consume(model, rescuer, idle_exit_s=0.3)
    assert (stats.claimed, stats.predicted) == (4, 10)
    assert _output_ids(client, config) == Counter(ids)
    assert client.xpending(config.in_stream, config.group)["pending"] == 0


@pytest.mark.slow
def test_a_consumer_killed_mid_stream_loses_nothing_and_duplicates_nothing(
        client: Any, config: StreamConfig, model: LoadedModel, heart_package: Path) -> None:
    ids = _send(client, config, model, 3000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelport", "stream", str(heart_package), "--redis",
         config.redis_url, "--in", config.in_stream, "--out", config.out_stream,
         "--consumer", "doomed", "--batch", "16"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while client.xlen(config.out_stream) < 300 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    written = client.xlen(config.out_stream)
    pending = client.xpending(config.in_stream, config.group)["pending"]
    time.sleep(0.3)
    rescuer = StreamConfig(config.redis_url, config.in_stream, config.out_stream,
                           config.group, "rescuer", 64, claim_idle_ms=200, block_ms=100)
    stats = consume(model, rescuer, idle_exit_s=0.5)
    print(f"killed after {written} outputs with {pending} pending; rescuer: {stats}")
    assert 300 <= written < 3000
    assert stats.claimed == pending
    assert _output_ids(client, config) == Counter(ids)  # every input, exactly once
    assert client.xpending(config.in_stream, config.group)["pending"] == 0
