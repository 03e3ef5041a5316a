"""The Redis prediction cache fails: every prediction is still answered (uncached), the rows
that fell back are counted in ``modelport_cache_fallbacks_total``, and the cache is used
again once Redis is back. Redis is the real one, reached through a proxy the test cuts."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from modelport.config import Settings
from modelport.server.factory import build_app
from tests.faultproxy import FaultProxy
from tests.registry.live import free_port, serving


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    """Redis at 127.0.0.1:6379 through a proxy the test can cut."""
    with FaultProxy(6379) as p:
        yield p


@pytest.fixture
def config(tmp_path: Path, heart_package: Path) -> tuple[Path, str]:
    """The example model under a name of its own, so no other run's cache entries match."""
    name = f"heart-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": [{"name": name, "path": str(heart_package)}]}))
    return path, name


@pytest.fixture(scope="module")
def body(heart_features: Any) -> dict[str, Any]:
    return {"instances": heart_features.head(3).to_dict("records")}


def _settings(config: Path, redis_port: int) -> Settings:
    return Settings(model=[str(config)], prediction_cache="redis", cache_ttl_s=60,
                    cache_redis_url=f"redis://127.0.0.1:{redis_port}/0")


def _counts(client: httpx.Client, metric: str, label: str) -> dict[str, float]:
    """``metric``'s samples by the value of ``label``."""
    families = text_string_to_metric_families(client.get("/metrics").text)
    return {s.labels[label]: s.value for f in families if f.name == metric
            for s in f.samples if s.name == f"{metric}_total"}


def _predict(client: httpx.Client, name: str, body: dict[str, Any], n: int) -> list[Any]:
    answers = [client.post(f"/models/{name}/predict", json=body) for _ in range(n)]
    assert [a.status_code for a in answers] == [200] * n
    return [a.json()["probabilities"] for a in answers]


def test_predictions_continue_uncached_while_redis_is_cut_and_use_it_again_once_back(
        proxy: FaultProxy, config: tuple[Path, str], body: dict[str, Any]) -> None:
    path, name = config
    with serving(build_app(_settings(path, proxy.port))) as url, \
            httpx.Client(base_url=url, timeout=10) as client:
        expected = _predict(client, name, body, 2)[0]  # stored, then answered from Redis
        assert _counts(client, "modelport_cache_lookups", "result") == {"miss": 3, "hit": 3}
        proxy.cut()
        assert _predict(client, name, body, 20) == [expected] * 20
        fallbacks = _counts(client, "modelport_cache_fallbacks", "reason")
        assert fallbacks["error"] >= 3 and fallbacks["unavailable"] >= 3
        assert fallbacks["error"] + fallbacks["unavailable"] == 20 * 3
        proxy.restore()
        restored = time.monotonic()
        while _counts(client, "modelport_cache_lookups", "result")["hit"] == 3:
            assert time.monotonic() < restored + 10, "the cache was not used again"
            assert _predict(client, name, body, 1) == [expected]
            time.sleep(0.1)
        after = _counts(client, "modelport_cache_fallbacks", "reason")
        print(f"\nredis outage: 20 requests (60 rows) all 200, fallbacks {fallbacks}; cache "
              f"hit again {time.monotonic() - restored:.2f} s after Redis was back")
        assert _predict(client, name, body, 5) == [expected] * 5
        assert _counts(client, "modelport_cache_fallbacks", "reason") == after


def test_a_redis_that_never_answered_costs_nothing_but_the_cache(
        config: tuple[Path, str], body: dict[str, Any]) -> None:
    """Nobody listens on the port: every request is answered, every row counted as a
    fallback, no lookup counted."""
    path, name = config
    with serving(build_app(_settings(path, free_port()))) as url, \
            httpx.Client(base_url=url, timeout=10) as client:
        _predict(client, name, body, 10)
        fallbacks = _counts(client, "modelport_cache_fallbacks", "reason")
        assert sum(fallbacks.values()) == 10 * 3
        assert _counts(client, "modelport_cache_lookups", "result") == {}


def test_a_redis_that_accepts_but_never_answers_does_not_hold_requests(
        config: tuple[Path, str], body: dict[str, Any]) -> None:
    """A black hole (the port accepts connections, nothing ever answers): lookups time out,
    and the cache is then left alone for a while instead of being waited on per request."""
    path, name = config
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(64)
        with serving(build_app(_settings(path, hole.getsockname()[1]))) as url, \
                httpx.Client(base_url=url, timeout=10) as client:
            _predict(client, name, body, 10)
            fallbacks = _counts(client, "modelport_cache_fallbacks", "reason")
    assert fallbacks["error"] >= 3 and fallbacks["unavailable"] >= 3
    assert fallbacks["error"] + fallbacks["unavailable"] == 10 * 3
