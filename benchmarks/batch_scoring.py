"""Batch scoring: rows/s single-process vs a Dask local cluster, and peak memory vs input size.

    python benchmarks/batch_scoring.py [--rows 1000000] [--workers 2]

Scores the example heart model over Parquet files of N and 4N rows (the example data tiled,
with an id column). Each run is a fresh subprocess, so its peak RSS is its own. Prints one
table with ratios against the single-process run of N rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]


def make_input(features: pd.DataFrame, rows: int, path: Path) -> Path:
    """``rows`` rows in 100k-row row groups, written incrementally (the writer's memory stays
    small too)."""
    block = pd.concat([features] * (100_000 // len(features) + 1), ignore_index=True)
    with pq.ParquetWriter(path, pa.Table.from_pandas(block.head(1), preserve_index=False)
                          .schema.append(pa.field("pid", pa.int64()))) as writer:
        for start in range(0, rows, 100_000):
            part = block.head(min(100_000, rows - start)).copy()
            part["pid"] = np.arange(start, start + len(part))
            writer.write_table(pa.Table.from_pandas(part, preserve_index=False))
    return path


def run_one(package: Path, source: Path, out: Path, dask: str | None, workers: int) -> dict:
    """Score in a child process; its wall time, counts and peak RSS."""
    code = ("import json, sys; from pathlib import Path; from modelport.tools import batch\n"
            "if __name__ == '__main__':\n"
            f"    r = batch.score(Path({str(package)!r}), {str(source)!r}, Path({str(out)!r}),"
            f" id_cols=['pid'], dask={dask!r}, dask_workers={workers})\n"
            "    print(json.dumps({'rows': r.rows_in, 'scored': r.scored, 's': r.seconds}))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    result = json.loads(proc.stdout.read().strip().splitlines()[-1])
    _, status, usage = os.wait4(proc.pid, 0)
    assert status == 0
    result["rss_mb"] = usage.ru_maxrss / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "examples" / "heart"))
    import train  # the bundled example

    from modelport.package import pack

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        train.train(d)
        frame = pd.read_csv(d / "heart.csv")
        pkg = pack(d / "model.joblib", d / "heart", name="heart", reference=d / "heart.csv",
                   target="condition").root
        features = frame.drop(columns="condition")
        small = make_input(features, args.rows, d / "small.parquet")
        large = make_input(features, 4 * args.rows, d / "large.parquet")
        runs = [("single process", small, None), (f"dask local x{args.workers}", small,
                                                   "local"), ("single process", large, None)]
        rows = []
        for name, src, dask in runs:
            res = run_one(pkg, src, d / "out.parquet", dask, args.workers)
            rows.append((name, res))
            print(f"  {name}: {res['rows']:,} rows in {res['s']:.1f} s", file=sys.stderr)
    base = rows[0][1]
    print(f"\n{'run':<22}{'rows':>12}{'seconds':>10}{'rows/s':>12}{'x speed':>9}"
          f"{'peak RSS MB':>13}{'x RSS':>8}")
    for name, res in rows:
        rate = res["rows"] / res["s"]
        print(f"{name:<22}{res['rows']:>12,}{res['s']:>10.1f}{rate:>12,.0f}"
              f"{rate / (base['rows'] / base['s']):>9.2f}{res['rss_mb']:>13,.0f}"
              f"{res['rss_mb'] / base['rss_mb']:>8.2f}")
    print("(peak RSS is the scoring process's; Dask workers' memory is not in it)")


if __name__ == "__main__":
    main()
