"""In-process latency of one model call: scikit-learn itself vs modelport's runtimes.

    python benchmarks/runtime_speed.py [--calls 400]

Trains the bundled heart example into a temporary folder, packs it, converts it to ONNX with
``modelport optimize``, then times single calls (median and 90th percentile over ``--calls``
calls, after a warm-up) for a batch of 1 row and of 64 rows:

- baseline: the fitted Pipeline's ``predict`` + ``predict_proba`` on a prepared DataFrame (what
  a hand-written server calls);
- modelport sklearn runtime: ``runtime.predict(columns)`` (one ``predict_proba``, labels from its
  argmax, with every check scikit-learn makes in process);
- modelport ONNX runtime: ``runtime.predict(columns)`` (one ``session.run``);
- each runtime again with request validation included (``signature.from_records`` + predict).

Ratios are against the baseline measured in the same run (lower is faster).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _example() -> Any:
    spec = importlib.util.spec_from_file_location("heart_train", ROOT / "examples/heart/train.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _time(cases: dict[str, Callable[[], Any]], calls: int) -> dict[str, tuple[float, float]]:
    """Median and p90 microseconds per case; cases take turns call by call, so load from other
    processes on the machine falls on all of them alike."""
    for fn in cases.values():
        for _ in range(max(20, calls // 10)):
            fn()
    samples: dict[str, list[float]] = {label: [] for label in cases}
    for _ in range(calls):
        for label, fn in cases.items():
            start = time.perf_counter_ns()
            fn()
            samples[label].append((time.perf_counter_ns() - start) / 1000)
    return {label: (statistics.median(s), sorted(s)[int(0.9 * (len(s) - 1))])
            for label, s in samples.items()}


def _cases(tmp: Path, rows: int) -> dict[str, Callable[[], Any]]:
    import joblib
    import pandas as pd

    from modelport.package import load_model

    heart = _example()
    frame = pd.read_csv(tmp / "heart" / "heart.csv")[heart.FEATURES].head(rows)
    records = frame.to_dict("records")
    model = joblib.load(tmp / "heart" / "model.joblib")
    native = load_model(tmp / "pkg", runtime="native").runtime
    onnx = load_model(tmp / "pkg", runtime="onnx").runtime
    batch = native.signature.from_records(records)
    sig = native.signature
    return {
        "sklearn predict + predict_proba (baseline)":
            lambda: (model.predict(frame), model.predict_proba(frame)),
        "modelport sklearn runtime": lambda: native.predict(batch),
        "modelport ONNX runtime": lambda: onnx.predict(batch),
        "sklearn runtime + validation": lambda: native.predict(sig.from_records(records)),
        "ONNX runtime + validation": lambda: onnx.predict(sig.from_records(records)),
    }


def _prepare(tmp: Path) -> None:
    from modelport.package import pack
    from modelport.tools.optimize import optimize

    _example().train(tmp / "heart")
    pack(tmp / "heart" / "model.joblib", tmp / "pkg", name="heart",
         reference=tmp / "heart" / "heart.csv", target="condition")
    report = optimize(tmp / "pkg", data=tmp / "heart" / "heart.csv")
    print(f"ONNX parity on {report.parity.rows} rows: max |Δp| "
          f"{report.parity.max_abs_diff:.2g}, labels differing {report.parity.label_mismatches}")


def main() -> None:
    """Print one table per batch size: median and p90 microseconds, ratio to the baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        _prepare(tmp)
        for rows in (1, 64):
            print(f"\n{rows} row(s) per call, {args.calls} calls")
            print(f"{'case':44} {'median µs':>10} {'p90 µs':>10} {'ratio':>7} {'speedup':>8}")
            results = _time(_cases(tmp, rows), args.calls)
            base = next(iter(results.values()))[0]
            for label, (median, p90) in results.items():
                print(f"{label:44} {median:10.1f} {p90:10.1f} {median / base:7.3f} "
                      f"{base / median:7.1f}x")


if __name__ == "__main__":
    main()
