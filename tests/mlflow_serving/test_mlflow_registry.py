"""``models:/`` URIs against a real MLflow tracking server (SQLite backend store, local
artifact root), its models registered and aliased with the mlflow client.

``serve models:/clf@champion`` follows the alias as ``heart@production`` follows modelport's
own: a version that fails the golden check (it raises on the serving version's golden rows)
is refused and the old one keeps answering; the next good one is switched to.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from modelport.config import Settings
from modelport.errors import ConfigError, ModelNotFound
from modelport.registry.mlflow_source import MlflowRegistry
from tests.mlflow_serving.conftest import python, records
from tests.server.test_e2e import free_port, stop

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ADMIN = "mlflow-test-admin"


def _until(check: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            found = check()
            if found:
                return found
        time.sleep(0.2)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow server`` on a free port of 127.0.0.1 (its own process group, stopped by its
    PID at the end); the global tracking URI of this process points at it meanwhile."""
    import mlflow

    root = tmp_path_factory.mktemp("mlflow-server")
    url = f"http://127.0.0.1:{free_port()}"
    with (root / "server.log").open("wb") as log:
        proc = subprocess.Popen(
            [python(), "-m", "mlflow", "server", "--backend-store-uri",
             f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination",
             str(root / "artifacts"), "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1],
             "--workers", "1"],
            stdout=log, stderr=log, start_new_session=True,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    previous = mlflow.get_tracking_uri()
    try:
        _until(lambda: proc.poll() is None and httpx.get(f"{url}/health", timeout=2)
               .status_code == 200, 120, f"mlflow server ({root / 'server.log'})")
        mlflow.set_tracking_uri(url)
        yield url
    finally:
        mlflow.set_tracking_uri(previous)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the group this PID leads: its workers too
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _register(model: Any, example: pd.DataFrame) -> str:
    """Log ``model`` in a run and register it as a new version of ``clf``."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name="clf",
            serialization_format="cloudpickle", input_example=example,
            signature=infer_signature(example, model.predict(example)),
            pip_requirements=[f"scikit-learn=={version('scikit-learn')}"])
    return str(info.registered_model_version)


@pytest.fixture(scope="module")
def registered(tracking: str) -> dict[str, Any]:
    """Three versions of ``clf``: 1 and 3 good; 2 takes the log of its inputs, so it fails on
    the negative values of version 1's golden rows (its input example)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"a": rng.normal(3, 2, 200), "b": rng.normal(4, 2, 200)})
    labels = (frame["a"] > frame["b"]).astype(int)
    golden = pd.DataFrame({"a": [-1.5, 2.0, 4.0], "b": [3.0, -0.5, 5.0]})
    positive = frame.abs() + 0.1
    versions = [
        _register(LogisticRegression().fit(frame, labels), golden),
        _register(make_pipeline(FunctionTransformer(np.log), LogisticRegression())
                  .fit(positive, labels), positive.head(3)),
        _register(LogisticRegression(C=0.05).fit(frame, labels), frame.head(3)),
    ]
    assert versions == ["1", "2", "3"]
    return {"url": tracking, "frame": frame}


def _pyfunc(uri: str, frame: pd.DataFrame) -> list[Any]:
    import mlflow.pyfunc

    return np.asarray(mlflow.pyfunc.load_model(uri).predict(frame)).tolist()


def test_models_uris_resolve_versions_and_aliases(registered: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    url = registered["url"]
    MlflowClient(url).set_registered_model_alias("clf", "staging", "3")
    source = MlflowRegistry(url)
    try:
        pinned, alias = source.load("models:/clf/1")
        assert (pinned.name, pinned.version, alias) == ("clf", "1", None)
        followed, alias = source.load("models:/clf@staging")
        assert (followed.version, alias) == ("3", "staging")
        rows = registered["frame"].head(40)
        batch = followed.signature.from_records(records(rows))
        assert followed.runtime.predict(batch).predictions.tolist() == _pyfunc(
            "models:/clf/3", rows)
        assert source.alias_target("clf", "nope") is None
        with pytest.raises(ModelNotFound, match="has no alias 'nope'"):
            source.load("models:/clf@nope")
        with pytest.raises(ConfigError, match="models:/NAME/VERSION"):
            source.load("models:/clf/latest")
    finally:
        source.close()


def test_the_tracking_uri_is_a_flag_or_mlflows_own_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert Settings().mlflow_tracking_uri == "http://127.0.0.1:1"
    assert Settings(mlflow_tracking_uri="http://127.0.0.1:2").mlflow_tracking_uri == (
        "http://127.0.0.1:2")


def test_serve_follows_the_alias_through_the_golden_gate(registered: dict[str, Any],
                                                        tmp_path: Path) -> None:
    from mlflow import MlflowClient

    url = registered["url"]
    client = MlflowClient(url)
    client.set_registered_model_alias("clf", "champion", "1")
    port = free_port()
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root, "MODELPORT_REGISTRY_POLL_S": "0.3",
           "MODELPORT_SWAP_GRACE_S": "0.2", "MODELPORT_ADMIN_KEYS": ADMIN}
    with (tmp_path / "serve.log").open("wb") as log:
        proc = subprocess.Popen(
            [python(), "-m", "modelport", "serve", "models:/clf@champion",
             "--mlflow-tracking-uri", url, "--port", str(port), "--grpc-port", "0"],
            stdout=subprocess.DEVNULL, stderr=log, env=env)
    base = f"http://127.0.0.1:{port}"
    rows = registered["frame"].head(25)
    body = {"dataframe_records": records(rows)}

    def answer() -> httpx.Response:
        return httpx.post(f"{base}/invocations", json=body, timeout=30)

    try:
        _until(lambda: httpx.get(f"{base}/ready", timeout=2).status_code == 200, 120,
               f"modelport serve ({tmp_path / 'serve.log'})")
        first = answer()
        assert first.headers["x-model-version"] == "1"
        assert first.json() == {"predictions": _pyfunc("models:/clf/1", rows)}

        client.set_registered_model_alias("clf", "champion", "2")
        admin = {"Authorization": f"Bearer {ADMIN}"}
        refused = _until(lambda: httpx.get(f"{base}/admin/models", headers=admin, timeout=5)
                         .json()["clf"]["refused"], 60, "the refusal of version 2")
        assert refused["version"] == "2" and refused["action"] == "follow"
        assert "golden row" in refused["reason"], refused
        assert answer().headers["x-model-version"] == "1"  # the old version keeps serving

        client.set_registered_model_alias("clf", "champion", "3")
        _until(lambda: answer().headers["x-model-version"] == "3", 60, "the switch to 3")
        assert answer().json() == {"predictions": _pyfunc("models:/clf/3", rows)}
    finally:
        assert stop(proc) == 0
