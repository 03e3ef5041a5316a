"""Several processes pushing and moving one alias at once: nothing lost, nothing doubled."""

from __future__ import annotations

import itertools
import multiprocessing
from pathlib import Path

import pytest

from modelport.registry import Registry
from tests.registry.regworkers import push_and_move

WORKERS = 4
ROUNDS = 3


def _run_workers(db_url: str, store: Path) -> list[str]:
    Registry.open(db_url, store).close()  # migrate once up front; workers re-check it
    context = multiprocessing.get_context("spawn")
    with context.Pool(WORKERS) as pool:
        results = pool.starmap_async(
            push_and_move, [(db_url, str(store), w, ROUNDS) for w in range(WORKERS)])
        per_worker = results.get(timeout=90)
    return [v for got in per_worker for v in got]


@pytest.mark.slow
def test_parallel_pushes_and_moves_stay_consistent(db_url: str, tmp_path: Path) -> None:
    """Every push gets its own next-patch version, and the alias history is one unbroken
    chain: each move starts where the one before it ended."""
    pushed = _run_workers(db_url, tmp_path / "store")
    with Registry.open(db_url, tmp_path / "store") as reg:
        versions = [v.version for v in reg.versions("shared")]
        moves = reg.history("shared", "production")
        target = reg.alias_target("shared", "production")
    expected = [f"1.0.{i}" for i in range(WORKERS * ROUNDS)]
    assert sorted(pushed, key=lambda v: int(v.split(".")[2])) == expected
    assert versions == expected
    assert len(moves) == WORKERS * ROUNDS
    assert all(m.from_version == p.to_version for p, m in itertools.pairwise(moves))
    assert target == moves[-1].to_version
