"""The explanation routes on a real server (uvicorn on 127.0.0.1 in this process): the bodies
of predict, the same 4xx for a bad body, the rate limit, shap missing, and predictions that
keep answering while explanations are busy."""

from __future__ import annotations

import concurrent.futures as cf
import json
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from modelport.config import Settings
from modelport.package import load_model
from modelport.server.app import create_app
from tests.registry.live import serving
from tests.server.conftest import v2_columns

FEATURES = ["x1", "x2", "x3", "colour"]


def records(data: pd.DataFrame, n: int) -> list[dict[str, Any]]:
    return json.loads(data[FEATURES].head(n).to_json(orient="records"))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def server(packages: dict[str, Path]) -> Iterator[str]:
    models = [load_model(packages[n]) for n in ("gb", "rf", "logreg")]
    app = create_app(models, Settings(explain_rate=0, explain_samples=64))
    with serving(app) as url:
        yield url


def test_native_explain_is_additive(server: str, packages: dict[str, Path],
                                    data: pd.DataFrame) -> None:
    rows = records(data, 5)
    r = httpx.post(f"{server}/models/gb/explain", json={"instances": rows}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["method"], body["output"]) == ("gb", "tree", "margin")
    assert body["features"] == FEATURES and r.headers["x-model-name"] == "gb"
    contributions = np.asarray(body["contributions"])
    assert contributions.shape == (5, 1, 4)
    margin = np.asarray(body["base_values"])[None, :] + contributions.sum(axis=2)
    model = load_model(packages["gb"]).runtime.model  # type: ignore[attr-defined]
    expected = model.decision_function(data[FEATURES].head(5))
    np.testing.assert_allclose(margin[:, 0], expected, atol=1e-6)
    np.testing.assert_allclose(np.asarray(body["values"])[:, 0], expected, atol=1e-6)
    one = httpx.post(f"{server}/models/rf/versions/1.0.0/explain",
                     json={"features": rows[0]}, timeout=30).json()
    assert one["output"] == "probability" and np.asarray(one["contributions"]).shape == (1, 2, 4)


def test_v2_explain_takes_infer_bodies(server: str, packages: dict[str, Path],
                                       data: pd.DataFrame) -> None:
    rows = records(data, 3)
    r = httpx.post(f"{server}/v2/models/logreg/explain", json=v2_columns(rows), timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == "logreg" and body["parameters"]["method"] == "kernel"
    out = {o["name"]: o for o in body["outputs"]}
    assert out["contributions"]["shape"] == [3, 2, 4]
    contributions = np.asarray(out["contributions"]["data"]).reshape(3, 2, 4)
    proba = np.asarray(out["base_values"]["data"])[None, :] + contributions.sum(axis=2)
    model = load_model(packages["logreg"]).runtime.model  # type: ignore[attr-defined]
    np.testing.assert_allclose(proba, model.predict_proba(data[FEATURES].head(3)), atol=1e-6)


def test_an_unknown_requested_output_is_refused_as_infer_refuses_it(
        server: str, data: pd.DataFrame) -> None:
    body = {**v2_columns(records(data, 1)), "outputs": [{"name": "AAA"}]}
    want = httpx.post(f"{server}/v2/models/gb/infer", json=body, timeout=10)
    got = httpx.post(f"{server}/v2/models/gb/explain", json=body, timeout=60)
    assert want.status_code == got.status_code == 400, got.text
    assert got.json() == want.json()
    assert "unknown output 'AAA'" in got.json()["error"]


@pytest.mark.parametrize(("predict", "explain", "body"), [
    ("/models/gb/predict", "/models/gb/explain", {"instances": [{"x1": 1.0}]}),
    ("/models/gb/predict", "/models/gb/explain", {"features": {"x1": "a", "x2": 1, "x3": 1,
                                                               "colour": "red"}}),
    ("/models/gb/predict", "/models/gb/explain", {"rows": []}),
    ("/v2/models/gb/infer", "/v2/models/gb/explain", {"inputs": [{"name": "x1"}]}),
    ("/v2/models/gb/infer", "/v2/models/gb/explain", {"inputs": "nope"}),
    ("/models/nope/predict", "/models/nope/explain", {"instances": []}),
])
def test_bad_bodies_get_the_same_answer_as_predict(server: str, predict: str, explain: str,
                                                   body: dict[str, Any]) -> None:
    want = httpx.post(f"{server}{predict}", json=body, timeout=10)
    got = httpx.post(f"{server}{explain}", json=body, timeout=10)
    assert 400 <= want.status_code < 500
    assert got.status_code == want.status_code
    strip = ("request_id",)
    assert ({k: v for k, v in got.json().items() if k not in strip}
            == {k: v for k, v in want.json().items() if k not in strip})


def test_rate_limit_answers_429_with_retry_after(packages: dict[str, Path],
                                                 data: pd.DataFrame) -> None:
    app = create_app([load_model(packages["gb"])], Settings(explain_rate=0.01, explain_burst=2))
    body = {"instances": records(data, 1)}
    with serving(app) as url:
        answers = [httpx.post(f"{url}/models/gb/explain", json=body, timeout=30)
                   for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert int(answers[2].headers["retry-after"]) >= 50  # 1 token per 100 s
        assert "explanation requests" in answers[2].json()["error"]
        assert httpx.post(f"{url}/models/gb/predict", json=body).status_code == 200


def test_without_shap_the_route_says_what_to_install(packages: dict[str, Path],
                                                     data: pd.DataFrame,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "shap", None)  # `import shap` fails: not installed
    app = create_app([load_model(packages["gb"])], Settings())
    with serving(app) as url:
        r = httpx.post(f"{url}/models/gb/explain", json={"instances": records(data, 1)})
        v2 = httpx.post(f"{url}/v2/models/gb/explain", json=v2_columns(records(data, 1)))
        assert httpx.post(f"{url}/models/gb/predict",
                          json={"instances": records(data, 1)}).status_code == 200
    assert r.status_code == 501 and v2.status_code == 501
    assert "'shap'" in r.json()["error"] and "modelport[explain]" in r.json()["error"]


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """A 16-feature MLP (not a tree: kernel explanations), packed with reference data."""
    import joblib
    from sklearn.neural_network import MLPClassifier

    from modelport.package import pack

    rng = np.random.default_rng(5)
    frame = pd.DataFrame(rng.normal(size=(300, 16)), columns=[f"f{i}" for i in range(16)])
    target = (frame.f0 + frame.f1 - frame.f2 > 0).astype(int)
    out = tmp_path_factory.mktemp("wide")
    model = MLPClassifier(hidden_layer_sizes=(64, 64), max_iter=300, random_state=0)
    joblib.dump(model.fit(frame, target), out / "wide.joblib")
    frame.to_csv(out / "ref.csv", index=False)
    return pack(out / "wide.joblib", out / "wide", name="wide", reference=out / "ref.csv").root, \
        frame


def test_predictions_keep_answering_while_explanations_are_busy(
        wide: tuple[Path, pd.DataFrame]) -> None:
    """Kernel explanations with a large budget keep the explain thread busy for seconds;
    predictions of the same model meanwhile answer about as fast as on an idle server
    (bounded generously: starved, they would wait for the explanations, seconds)."""
    path, frame = wide
    settings = Settings(explain_rate=0, explain_samples=1024, explain_background_rows=50)
    app = create_app([load_model(path)], settings)
    rows = json.loads(frame.head(3).to_json(orient="records"))
    body, slow = {"instances": rows[:1]}, {"instances": rows}
    with serving(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        idle = []
        for _ in range(20):
            t = time.perf_counter()
            assert client.post("/models/wide/predict", json=body).status_code == 200
            idle.append(time.perf_counter() - t)
        with cf.ThreadPoolExecutor(2) as pool:
            started = time.perf_counter()
            explaining = [pool.submit(httpx.post, f"{url}/models/wide/explain", json=slow,
                                      timeout=120) for _ in range(2)]
            time.sleep(0.2)  # the explain thread is at work
            busy = []
            while not all(f.done() for f in explaining) and len(busy) < 2000:
                t = time.perf_counter()
                assert client.post("/models/wide/predict", json=body).status_code == 200
                busy.append(time.perf_counter() - t)
            answers = [f.result() for f in explaining]
            explain_done = time.perf_counter() - started
    assert all(a.status_code == 200 for a in answers)
    assert len(busy) >= 20, busy  # predictions answered all along the explanations
    print(f"idle median {statistics.median(idle) * 1e3:.1f} ms, busy median "
          f"{statistics.median(busy) * 1e3:.1f} ms, max {max(busy) * 1e3:.1f} ms; explanations "
          f"took {explain_done:.1f} s")
    assert statistics.median(busy) < max(0.05, 5 * statistics.median(idle)), (idle, busy)
    assert max(busy) < 0.5, busy
