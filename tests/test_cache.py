"""The prediction cache: rows seen before skip the model; versions never share answers."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis

from modelport.cache import LRUCache, RedisCache, cached_predict, row_keys
from modelport.errors import ConfigError
from modelport.package import load_model
from modelport.runtimes import Runtime
from modelport.types import Columns, Outputs

REDIS_URL = "redis://127.0.0.1:6379/0"


class CountingModel:
    """The example model behind an async predict that records every batch size it gets."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.calls: list[int] = []

    async def __call__(self, batch: Columns) -> Outputs:
        self.calls.append(batch.n_rows)
        return self.runtime.predict(batch)


@pytest.fixture(scope="module")
def runtime(heart_package: Path) -> Runtime:
    return load_model(heart_package).runtime


@pytest.fixture(scope="module")
def rows(heart_features: pd.DataFrame, runtime: Runtime) -> Columns:
    """Ten validated rows of the example data."""
    records = heart_features.head(10).to_dict("records")
    return runtime.signature.from_records(records)


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix no other test run uses; its keys are deleted afterwards."""
    prefix = f"modelport-test:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def _same(a: Outputs, b: Outputs) -> None:
    assert a.predictions.dtype == b.predictions.dtype
    assert a.predictions.tolist() == b.predictions.tolist()
    assert a.probabilities is not None and b.probabilities is not None
    assert a.probabilities.dtype == b.probabilities.dtype
    assert np.array_equal(a.probabilities, b.probabilities)
    assert a.classes == b.classes


async def test_a_repeated_batch_is_answered_from_the_cache_identically(
        runtime: Runtime, rows: Columns) -> None:
    model = CountingModel(runtime)
    cache = LRUCache(100)
    first = await cached_predict(cache, "heart", "1.0.0", rows, model)
    again = await cached_predict(cache, "heart", "1.0.0", rows, model)
    assert model.calls == [10]
    _same(again, first)
    _same(again, runtime.predict(rows))


async def test_only_new_rows_reach_the_model_in_one_call_and_keep_their_order(
        runtime: Runtime, rows: Columns) -> None:
    model = CountingModel(runtime)
    cache = LRUCache(100)
    await cached_predict(cache, "heart", "1.0.0", rows.take(0, 4), model)
    mixed = await cached_predict(cache, "heart", "1.0.0", rows, model)
    assert model.calls == [4, 6]
    _same(mixed, runtime.predict(rows))


async def test_another_version_never_gets_a_cached_answer(runtime: Runtime,
                                                          rows: Columns) -> None:
    model = CountingModel(runtime)
    cache = LRUCache(100)
    await cached_predict(cache, "heart", "1.0.0", rows, model)
    await cached_predict(cache, "heart", "1.1.0", rows, model)
    await cached_predict(cache, "other", "1.0.0", rows, model)
    assert model.calls == [10, 10, 10]


async def test_hits_and_misses_are_counted_per_model_version(runtime: Runtime,
                                                             rows: Columns) -> None:
    seen: list[tuple[str, str, int, int]] = []
    cache = LRUCache(100)
    model = CountingModel(runtime)
    await cached_predict(cache, "heart", "1.0.0", rows.take(0, 3), model,
                         on_lookup=lambda *a: seen.append(a))
    await cached_predict(cache, "heart", "1.0.0", rows, model,
                         on_lookup=lambda *a: seen.append(a))
    assert seen == [("heart", "1.0.0", 0, 3), ("heart", "1.0.0", 3, 7)]


async def test_the_least_recently_used_row_is_evicted_first(runtime: Runtime,
                                                            rows: Columns) -> None:
    cache = LRUCache(2)
    model = CountingModel(runtime)
    for i in (0, 1, 0, 2):  # row 0 is used again before row 2 arrives: row 1 goes
        await cached_predict(cache, "heart", "1", rows.take(i, i + 1), model)
    assert len(cache) == 2
    model.calls.clear()
    await cached_predict(cache, "heart", "1", rows.take(0, 1), model)
    await cached_predict(cache, "heart", "1", rows.take(1, 2), model)
    assert model.calls == [1]


def test_a_cache_without_room_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="at least one entry"):
        LRUCache(0)


async def test_two_replicas_share_answers_through_redis(runtime: Runtime, rows: Columns,
                                                        redis_prefix: str) -> None:
    one = RedisCache(REDIS_URL, ttl_s=60, prefix=redis_prefix)
    two = RedisCache(REDIS_URL, ttl_s=60, prefix=redis_prefix)
    model = CountingModel(runtime)
    try:
        first = await cached_predict(one, "heart", "1.0.0", rows, model)
        shared = await cached_predict(two, "heart", "1.0.0", rows, model)
    finally:
        await one.aclose()
        await two.aclose()
    assert model.calls == [10]
    _same(shared, first)


async def test_redis_entries_expire_after_their_ttl(runtime: Runtime, rows: Columns,
                                                    redis_prefix: str) -> None:
    cache = RedisCache(REDIS_URL, ttl_s=30, prefix=redis_prefix)
    try:
        await cached_predict(cache, "heart", "1", rows.take(0, 1), CountingModel(runtime))
    finally:
        await cache.aclose()
    client = redis.Redis.from_url(REDIS_URL)
    (key,) = client.keys(f"{redis_prefix}*")
    assert 0 < client.pttl(key) <= 30_000
    client.close()


async def test_an_unreachable_cache_still_answers_every_row(runtime: Runtime,
                                                            rows: Columns) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cache = RedisCache(f"redis://127.0.0.1:{port}/0", prefix="unused:")
    model = CountingModel(runtime)
    try:
        out = await cached_predict(cache, "heart", "1", rows, model)
    finally:
        await cache.aclose()
    assert model.calls == [10]
    _same(out, runtime.predict(rows))


def test_rows_differing_across_adjacent_text_columns_get_different_keys() -> None:
    def batch(a: str, b: str) -> Columns:
        return Columns({"a": np.asarray([a], dtype=object), "b": np.asarray([b], dtype=object)},
                       1)

    assert row_keys("m", "1", batch("ab", "c")) != row_keys("m", "1", batch("a", "bc"))


def test_the_same_values_with_another_type_get_another_key() -> None:
    ints = Columns({"x": np.asarray([1], dtype=np.int64)}, 1)
    floats = Columns({"x": np.asarray([1.0])}, 1)
    assert row_keys("m", "1", ints) != row_keys("m", "1", floats)
