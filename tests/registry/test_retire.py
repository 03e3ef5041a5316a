"""Retiring an old version never fails a request that picked it before the switch."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelport.config import Settings
from modelport.package import LoadedModel, load_model
from modelport.registry import Registry
from modelport.server.models import ModelRepository
from modelport.server.rollout import AliasFollower, load_ref, retire
from modelport.signature import Signature
from modelport.types import Columns, Outputs


@dataclass
class SlowRuntime:
    """The example model behind a sleep: long enough to retire it mid-call."""

    inner: Any
    delay: float
    flavor: str = "sklearn"

    @property
    def signature(self) -> Signature:
        return self.inner.signature  # type: ignore[no-any-return]

    def predict(self, batch: Columns) -> Outputs:
        time.sleep(self.delay)
        return self.inner.predict(batch)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def heart(heart_package: Path) -> LoadedModel:
    return load_model(heart_package)


def _batch(model: LoadedModel, records: list[dict[str, Any]]) -> Columns:
    return model.signature.from_records(records)


async def test_a_request_holding_a_retired_version_is_answered_by_it(
        heart: LoadedModel, records: list[dict[str, Any]]) -> None:
    repo = ModelRepository(Settings())
    served = repo.serve(heart)
    repo.unload("heart", "1.0.0")
    await retire(served)
    outputs = await repo.predict(served, _batch(heart, records))
    assert outputs.predictions.tolist() == heart.runtime.predict(
        _batch(heart, records)).predictions.tolist()


async def test_retiring_lets_the_batch_being_computed_finish(
        heart: LoadedModel, records: list[dict[str, Any]]) -> None:
    """Without waiting, closing the batcher cancels the call and its request times out."""
    slow = LoadedModel("heart", "1.0.0", SlowRuntime(heart.runtime, 0.3))
    repo = ModelRepository(Settings(request_timeout_s=3))
    served = repo.serve(slow)
    request = asyncio.create_task(repo.predict(served, _batch(heart, records)))
    await asyncio.sleep(0.05)  # the batch is in the model now
    repo.unload("heart", "1.0.0")
    await retire(served)
    assert len((await request).predictions) == len(records)


async def test_the_follower_retires_the_old_version_without_failing_its_requests(
        sqlite_url: str, tmp_path: Path, heart_package: Path,
        records: list[dict[str, Any]]) -> None:
    with Registry.open(sqlite_url, tmp_path / "store") as reg:
        reg.push(heart_package, "heart", "1.0.0")
        reg.push(heart_package, "heart", "1.1.0")
        reg.set_alias("heart", "production", "1.0.0")
        repo = ModelRepository(Settings())
        repo.serve(load_ref(reg, "heart@production"))
        follower = AliasFollower(reg, repo, "heart", "production", grace_s=0)
        picked = repo.get("heart")  # a request resolved the old version just before the move
        reg.set_alias("heart", "production", "1.1.0")
        await follower.check()
        while len(repo.versions("heart")) > 1:
            await asyncio.sleep(0.01)
        outputs = await repo.predict(picked, _batch(picked.loaded, records))
        assert (picked.version, len(outputs.predictions)) == ("1.0.0", len(records))
        await follower.aclose()
        await repo.aclose()
