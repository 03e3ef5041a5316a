"""Schemathesis against a real server: the OpenAPI document is exact.

Every phase (examples, coverage, fuzzing, stateful) and every check, against ``modelport
serve`` on 127.0.0.1 following a registry alias with an admin key, so the admin API and the V2
repository routes are reachable too — the run may unload the model, move aliases and set
traffic, and the document describes what follows. Bounded here (fixed seed, a few examples per
operation, a small mixed-type model); the unbounded run of the example model is::

    MODELPORT_ADMIN_KEYS=adm modelport serve heart@production --db sqlite:///r.db --store s/
    schemathesis --config-file tests/server/schemathesis.toml run \\
        http://127.0.0.1:8000/openapi.json -H 'Authorization: Bearer adm' \\
        --checks all --max-examples 200 --seed 1 -w 1 --generation-database none
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.server.test_e2e import free_port, stop

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CONFIG = Path(__file__).with_name("schemathesis.toml")
ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = "schemathesis-admin"


def _train(out: Path) -> Path:
    """A logistic regression on every kind of feature: an integer, a float, an integer code
    and a string category (its V2 schema stays small enough for a quick run)."""
    import joblib
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"age": rng.integers(20, 80, 200), "dose": rng.normal(1, 0.5, 200),
                          "group": rng.integers(0, 3, 200),
                          "kind": rng.choice(["a", "b"], 200)})
    frame["label"] = ((frame["age"] > 50) ^ (frame["kind"] == "a")).astype(int)
    pre = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), ["group", "kind"])],
                            remainder="passthrough")
    model = Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=500))])
    model.fit(frame[["age", "dose", "group", "kind"]], frame["label"])
    frame.to_csv(out / "data.csv", index=False)
    joblib.dump(model, out / "model.joblib")
    return out / "model.joblib"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small model, packed, and pushed as 1.0.0 and 1.1.0 with production at 1.0.0."""
    from modelport.package import pack
    from modelport.registry import Registry

    root = tmp_path_factory.mktemp("schemathesis")
    pack(_train(root), root / "tiny", name="tiny", version="1.0.0",
         reference=root / "data.csv", target="label")
    registry = Registry.open(f"sqlite:///{root / 'registry.db'}", root / "store")
    for version in ("1.0.0", "1.1.0"):
        registry.push(root / "tiny", name="tiny", version=version)
    registry.set_alias("tiny", "production", "1.0.0", actor="test")
    return root


@pytest.fixture(params=["registry", "package"])
def served(request: pytest.FixtureRequest, tiny: Path, tmp_path: Path) -> Iterator[str]:
    """``serve tiny@production`` from the registry (alias routes live), or the package
    directory (alias routes answer 409), with an admin key."""
    args = (["tiny@production", "--db", f"sqlite:///{tiny / 'registry.db'}", "--store",
             str(tiny / "store")] if request.param == "registry" else [str(tiny / "tiny")])
    # the access log goes to a file: a pipe nobody reads would fill up and stall the server
    with (tmp_path / "server.log").open("wb") as log:
        proc, url = _start(args, log)
        yield url
        stop(proc)


def _start(args: list[str], log: IO[bytes]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelport", "serve", *args, "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=log,
        env={**os.environ, "PYTHONPATH": str(ROOT), "MODELPORT_ADMIN_KEYS": ADMIN_KEY})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return proc, url
        time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"the server did not become ready; see {log.name}")


def test_schemathesis_finds_no_failure_and_no_server_error(served: str,
                                                           tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run",
         f"{served}/openapi.json", "-H", f"Authorization: Bearer {ADMIN_KEY}",
         "--checks", "all", "--phases", "examples,coverage,fuzzing,stateful",
         # one worker: with several, Hypothesis's source inspection can trip over itself
         "--seed", "20261202", "--max-examples", "5", "--workers", "1",
         "--generation-database", "none", "--no-color"],
        cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "passed" in run.stdout and "failure" not in run.stdout.split("SUMMARY")[-1]
    predictions = _prediction_statuses(tmp_path / "server.log")
    # not a vacuous pass: the model answered, and refused bad input, many times over
    assert sum(n for status, n in predictions.items() if status == 200) > 100, predictions
    assert sum(n for status, n in predictions.items() if status in (400, 422)) > 100


def _prediction_statuses(log: Path) -> Counter[int]:
    """How often each status answered a prediction request, from the server's access log."""
    counts: Counter[int] = Counter()
    for line in log.read_text(encoding="utf-8").split("\n"):  # not splitlines(): paths
        # the tester made up may hold U+2028 and the like, which JSON leaves unescaped
        entry = json.loads(line) if line.startswith("{") else {}
        path = str(entry.get("path", ""))
        if entry.get("msg") == "request" and path.endswith(("predict", "/infer", "/batch")):
            counts[int(entry["status"])] += 1
    return counts
