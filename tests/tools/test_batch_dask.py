"""Batch scoring as a Dask job: same output as one process, the model loaded once per worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from modelport.tools import batch

pytestmark = pytest.mark.slow


@pytest.fixture
def source(heart_features: pd.DataFrame, tmp_path: Path) -> Path:
    """600 rows with an id and two bad rows, as CSV."""
    df = pd.concat([heart_features.head(300)] * 2, ignore_index=True).astype({"thal": object})
    df.insert(0, "pid", np.arange(len(df)))
    df.loc[[10, 450], "thal"] = "unknown"
    path = tmp_path / "in.csv"
    df.to_csv(path, index=False)
    return path


@pytest.fixture
def cluster() -> Iterator[str]:
    """A LocalCluster of 2 worker processes, stopped after the test; yields its address."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as local:
        yield local.scheduler_address


def test_dask_local_output_is_identical_to_single_process(
        heart_package: Path, source: Path, tmp_path: Path) -> None:
    one = batch.score(heart_package, str(source), tmp_path / "one.parquet", id_cols=["pid"],
                      chunk_rows=100)
    many = batch.score(heart_package, str(source), tmp_path / "many.parquet", id_cols=["pid"],
                       chunk_rows=100, dask="local", dask_workers=2)
    assert (many.rows_in, many.scored, many.rejected) == (600, 598, 2)
    assert pq.read_table(one.output).equals(pq.read_table(many.output))
    assert pq.read_table(one.rejects).equals(pq.read_table(many.rejects))


def test_a_scheduler_address_runs_one_task_per_chunk_loading_the_model_once_per_worker(
        heart_package: Path, source: Path, tmp_path: Path, cluster: str) -> None:
    from distributed import Client

    result = batch.score(heart_package, str(source), tmp_path / "out.parquet",
                         chunk_rows=50, dask=cluster)
    with Client(cluster) as client:
        loads = client.run(batch.worker_loads)
    assert result.scored == 598
    assert set(loads.values()) <= {0, 1} and sum(loads.values()) >= 1  # 12 chunks, <= 2 loads
