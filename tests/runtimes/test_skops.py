"""skops: ``.skops`` files load only with trusted types; ``pack --format skops`` converts a
joblib scikit-learn model with proof of equal answers; a real server serves the result."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import Result
from typer.testing import CliRunner

pytest.importorskip("skops")

from modelport.cli import app
from modelport.config import Settings
from modelport.errors import ConfigError, GoldenCheckFailed
from modelport.package import load_model
from modelport.runtimes import load_runtime
from modelport.runtimes.skops import UntrustedTypes
from modelport.server.factory import build_app
from modelport.tools.convert import _compare
from tests.server.test_e2e import start_server, stop

TREE = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"


class Tweaked:
    """A class skops does not know: a file holding one is refused by name."""

    def __init__(self) -> None:
        self.coef = np.array([1.0, 2.0])


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A DataFrame pipeline (one-hot + scaler + logistic regression) as joblib with its
    reference CSV; a HistGradientBoosting classifier as joblib and as skops."""
    import joblib
    import skops.io as sio
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    root = tmp_path_factory.mktemp("skops")
    rng = np.random.default_rng(3)
    x = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300),
                      "colour": rng.choice(["red", "green", "blue"], 300)})
    y = ((x.a + (x.colour == "red") * 1.5 + rng.normal(scale=0.3, size=300)) > 0.5).astype(int)
    pipe = make_pipeline(make_column_transformer(
        (OneHotEncoder(), ["colour"]), (StandardScaler(), ["a", "b"])), LogisticRegression())
    joblib.dump(pipe.fit(x, y), root / "pipe.joblib")
    x.assign(label=y).to_csv(root / "ref.csv", index=False)
    hgb = HistGradientBoostingClassifier(max_iter=10).fit(x[["a", "b"]], y)
    joblib.dump(hgb, root / "hgb.joblib")
    sio.dump(hgb, root / "hgb.skops")
    sio.dump(Tweaked(), root / "tweaked.skops")
    return {"pipe": root / "pipe.joblib", "ref": root / "ref.csv",
            "hgb": root / "hgb.joblib", "hgb_skops": root / "hgb.skops",
            "tweaked": root / "tweaked.skops", "root": root}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command in its own process (what a user sees: message, exit code)."""
    return subprocess.run([sys.executable, "-m", "modelport", *args], capture_output=True,
                          text=True, timeout=120, check=False)


def _pack(*args: str) -> Result:
    """``modelport pack ARGS`` in this process (the same command, without a new Python)."""
    return CliRunner().invoke(app, ["pack", *args])


def test_untrusted_types_are_refused_by_name_and_trusted_on_request(files: dict[str, Path]
                                                                    ) -> None:
    with pytest.raises(UntrustedTypes) as refused:
        load_runtime(files["hgb_skops"], "skops")
    assert refused.value.types == (TREE,)
    assert f"--trust-type {TREE}" in refused.value.message
    with pytest.raises(UntrustedTypes, match=r"tests\.runtimes\.test_skops\.Tweaked"):
        load_runtime(files["tweaked"], "skops", trusted=[TREE])  # trusting one is not all
    runtime = load_runtime(files["hgb_skops"], "skops", trusted=[TREE])
    native = load_runtime(files["hgb"], "sklearn")
    batch = native.signature.from_records([{"a": 0.3, "b": -1.0}, {"a": -2.0, "b": 0.5}])
    assert runtime.flavor == "skops"
    assert np.array_equal(runtime.predict(batch).probabilities,
                          native.predict(batch).probabilities)


def test_serve_refuses_an_untrusted_file_at_start_not_as_a_500(files: dict[str, Path]) -> None:
    done = _cli("serve", str(files["hgb_skops"]), "--port", "0", "--grpc-port", "0")
    assert done.returncode != 0
    assert TREE in done.stderr and "--trust-type" in done.stderr
    assert "Traceback" not in done.stderr


def test_pack_format_skops_proves_equal_answers_and_serves(files: dict[str, Path],
                                                           tmp_path: Path) -> None:
    out = tmp_path / "pipe"
    done = _pack(str(files["pipe"]), "--name", "pipe", "--format", "skops",
                 "--reference", str(files["ref"]), "--target", "label", "--out", str(out))
    assert done.exit_code == 0, done.output
    assert "rows answered identically" in done.output
    manifest = yaml.safe_load((out / "modelport.yaml").read_text())
    assert manifest["flavor"] == "skops" and manifest["artifact"] == "model.skops"
    assert manifest["skops"]["equal"] is True and manifest["skops"]["rows_compared"] >= 300
    assert not list(out.glob("*.joblib"))  # nothing pickled in the package

    frame = pd.read_csv(files["ref"]).drop(columns="label").head(25)
    records: list[dict[str, Any]] = frame.to_dict(orient="records")
    native = load_model(files["pipe"]).runtime
    expected = native.predict(native.signature.from_records(records))
    proc, url = start_server(str(out), "--grpc-port", "0")
    try:
        answer = httpx.post(f"{url}/models/pipe/predict", json={"instances": records})
    finally:
        assert stop(proc) == 0
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == expected.predictions.tolist()
    assert np.array_equal(np.asarray(answer.json()["probabilities"]), expected.probabilities)


def test_a_converted_model_with_untrusted_types_needs_the_operators_word(
        files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "hgb"
    done = _pack(str(files["hgb"]), "--name", "hgb", "--format", "skops", "--out", str(out))
    assert done.exit_code == 0, done.output
    assert f"--trust-type {TREE}" in done.output  # the line to serve it with
    with pytest.raises(UntrustedTypes):
        load_model(out)
    assert load_model(out, trusted=[TREE]).runtime.flavor == "skops"
    # loaded on demand (a budget): still refused at start, from the file's types alone
    with pytest.raises(UntrustedTypes, match="TreePredictor"):
        build_app(Settings(model=[str(out)], max_models=2, grpc_port=0))
    assert build_app(Settings(model=[str(out)], max_models=2, grpc_port=0,
                              trust_types=[TREE])) is not None


def test_the_proof_fails_when_answers_differ(files: dict[str, Path]) -> None:
    """The comparison pack --format skops relies on names the first differing row."""
    import joblib
    from sklearn.ensemble import HistGradientBoostingClassifier

    other = files["root"] / "other.joblib"
    frame = pd.read_csv(files["ref"])
    joblib.dump(HistGradientBoostingClassifier(max_iter=3).fit(
        frame[["a", "b"]], 1 - frame["label"]), other)
    with pytest.raises(GoldenCheckFailed, match="answers differently"):
        _compare(load_runtime(files["hgb"], "sklearn"), load_runtime(other, "sklearn"),
                 frame[["a", "b"]], what="hgb.joblib")
    assert _compare(load_runtime(files["hgb"], "sklearn"),
                    load_runtime(files["hgb_skops"], "skops", trusted=[TREE]),
                    frame[["a", "b"]], what="hgb.joblib") == 300 + 5


def test_pack_refuses_other_formats_and_flavors(files: dict[str, Path], tmp_path: Path) -> None:
    done = _pack(str(files["pipe"]), "--name", "x", "--format", "pickle5",
                 "--out", str(tmp_path / "x"))
    assert isinstance(done.exception, ConfigError) and "--format" in done.exception.message
    done = _pack(str(files["hgb_skops"]), "--name", "x", "--format", "skops",
                 "--out", str(tmp_path / "y"))
    assert isinstance(done.exception, ConfigError)
    assert "joblib/pickle" in done.exception.message
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
