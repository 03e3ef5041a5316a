"""State the replicas share: one prediction log in PostgreSQL holding exactly the requests
the fleet answered, and one Redis cache whose entries any replica hits."""

from __future__ import annotations

import random
import time
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from tests.fleet.load import send_exactly
from tests.fleet.topology import Fleet

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _logged(fleet: Fleet) -> list[tuple[str, int]]:
    """(request id, row index) of every prediction-log record of the fleet's model."""
    engine = sa.create_engine(fleet.log_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT request_id, row_index FROM modelport_predictions WHERE model = :m"),
                {"m": fleet.spec.model})
            return [(str(r[0]), int(r[1])) for r in rows]
    except sa.exc.ProgrammingError:  # the table does not exist before the first write
        return []
    finally:
        engine.dispose()


def _cache_lookups(fleet: Fleet, i: int) -> dict[str, float]:
    """Replica ``i``'s cache lookups of the model so far: {"hit": n, "miss": n}."""
    text = httpx.get(f"{fleet.replica_url(i)}/metrics", timeout=5).text
    out = {"hit": 0.0, "miss": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "modelport_cache_lookups_total" and \
                    sample.labels.get("model") == fleet.spec.model:
                out[sample.labels["result"]] += sample.value
    return out


def test_prediction_log_rows_equal_the_requests_answered(
        fleet: Fleet, records: list[dict[str, Any]]) -> None:
    rng = random.Random(7)
    bodies, start = [], 0
    for _ in range(150):
        n = rng.randint(1, 3)
        bodies.append({"instances": records[start:start + n]})
        start += n
    before = set(_logged(fleet))
    answers = send_exactly(f"{fleet.lb_url}/predict", bodies, concurrency=16)
    assert [a.status_code for a in answers] == [200] * len(bodies)
    expected = {(a.json()["request_id"], k) for a, b in zip(answers, bodies, strict=True)
                for k in range(len(b["instances"]))}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # written off the hot path, in batches
        logged = _logged(fleet)
        if len(logged) - len(before) >= len(expected):
            break
        time.sleep(0.3)
    new = [r for r in logged if r not in before]
    assert len(new) == len(set(new)) == start  # no record twice, none lost
    assert set(new) == expected
    upstreams = {a.headers["X-Upstream"] for a in answers}
    assert len(upstreams) == 3  # every replica wrote its share


def test_a_row_cached_by_one_replica_is_a_hit_on_the_others(
        fleet: Fleet, records: list[dict[str, Any]]) -> None:
    row = dict(records[3], chol=random.randint(10**6, 10**9))  # a row nobody sent before
    before = [_cache_lookups(fleet, i) for i in range(3)]
    answers = [httpx.post(f"{fleet.replica_url(i)}/predict", json={"features": row}, timeout=10)
               for i in range(3)]
    after = [_cache_lookups(fleet, i) for i in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    first = answers[0].json()
    for other in answers[1:]:
        assert other.json()["probabilities"] == first["probabilities"]
    delta = [{k: a[k] - b[k] for k in a} for a, b in zip(after, before, strict=True)]
    assert delta == [{"hit": 0, "miss": 1}, {"hit": 1, "miss": 0}, {"hit": 1, "miss": 0}]
