"""Differential property test: a real server answers exactly what the model answers in process.

For every flavor (a scikit-learn DataFrame pipeline with categorical and numeric columns, array
models, a DataFrame model given a matrix, ONNX, XGBoost, LightGBM, a pipeline that fails on
some rows) and every protocol (native, V2 JSON, V2 binary tensors, V1), Hypothesis draws valid
rows — values inside the reference range, its bounds, and extremes (the largest magnitude the
signature takes, ``5e-324``, ``-0.0``, the int64 limits, unseen categories: the server runs
with ``--unseen pass``) — and ``modelport serve`` on 127.0.0.1 must answer them as the model
itself does in process, to the last bit after the JSON round trip. Where the model raises in
process, or answers NaN or infinity, the server must answer 500 with the request id (and echo
``X-Request-ID``), never a made-up 200.

One server serves every model (started once per module, reused by every protocol); examples are
derandomized and not shrunk, so the run is the same every time and bounded.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from modelport.config import Settings
from modelport.errors import InvalidInput, ModelLoadError
from modelport.package import load_model
from modelport.server.app import create_app
from modelport.signature import FLOAT_LIMIT, Feature, Signature
from tests.runtimes.conftest import (  # noqa: F401  (fixtures shared with the runtime tests)
    FEATURES,
    lgb_binary,
    models_dir,
    onnx_columns,
    onnx_numeric,
    onnx_regressor,
    tabular,
    xgb_binary,
)
from tests.server.test_e2e import free_port, stop

pytestmark = pytest.mark.e2e

Rows = list[dict[str, Any]]
Answer = tuple[np.ndarray, np.ndarray | None]
PROTOCOLS = ["native", "v2_json", "v2_binary", "v1"]
FLAVORS = ["heart", "sk_array", "sk_frame_numeric", "sk_ridge", "columns", "xgb_binary",
           "lgb_binary", "broken_log1p"]
EXTREME_FLOATS = [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1e-300, FLOAT_LIMIT,
                  -FLOAT_LIMIT, FLOAT_LIMIT / 3, -FLOAT_LIMIT / 3]
"""Beyond ``FLOAT_LIMIT`` a number is bad input (4xx), not a row to score."""
EXTREME_INTS = [0, -1, 1, 2**53, -(2**53), 2**53 + 1, 2**63 - 1, -(2**63)]
_V2_TYPES = {"float": "FP64", "int": "INT64", "string": "BYTES", "bool": "BOOL"}
_NUMPY = {"FP64": "<f8", "FP32": "<f4", "INT64": "<i8", "INT32": "<i4", "BOOL": "?"}


@dataclass(frozen=True)
class Cell:
    """One served model: its name on the server, its signature, the model's own answer for
    rows (labels, probabilities; may raise), and the reference range of its numeric features."""

    name: str
    signature: Signature
    answer: Callable[[Rows], Answer]
    bounds: dict[str, tuple[float, float]]


@dataclass(frozen=True)
class Served:
    """A client of the server (its base URL set) and the models it serves."""

    client: httpx.Client
    cells: dict[str, Cell]


# -- the models, and how each answers in process ----------------------------------------------


def _matrix(sig: Signature, rows: Rows) -> np.ndarray:
    return np.array([[np.nan if r[n] is None else r[n] for n in sig.names] for r in rows],
                    dtype=np.float64)


def _frame(sig: Signature, rows: Rows) -> pd.DataFrame:
    """The rows as a DataFrame typed as the signature says (what a user hands the model)."""
    dtypes = {"float": np.float64, "int": np.int64, "string": object, "bool": np.bool_}
    return pd.DataFrame({f.name: np.array([r[f.name] for r in rows], dtype=dtypes[f.dtype])
                         for f in sig.features})


def _sklearn(model: Any, as_frame: bool) -> Callable[[Signature, Rows], Answer]:
    def answer(sig: Signature, rows: Rows) -> Answer:
        x = _frame(sig, rows) if as_frame else _matrix(sig, rows)
        if not hasattr(model, "predict_proba"):
            return np.asarray(model.predict(x)), None
        return np.asarray(model.predict(x)), np.asarray(model.predict_proba(x))
    return answer


def _onnx(path: Path) -> Callable[[Signature, Rows], Answer]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    kinds = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(string)": object}

    def answer(sig: Signature, rows: Rows) -> Answer:
        feeds = {}
        for i in session.get_inputs():
            values = np.array([r[i.name] for r in rows],
                              dtype=object if kinds[i.type] is object else None)
            feeds[i.name] = values.astype(kinds[i.type]).reshape(-1, 1)
        labels, zipmap = session.run(None, feeds)
        keys = sig.classes or ()
        return np.asarray(labels), np.array([[p[k] for k in keys] for p in zipmap],
                                            dtype=np.float32)
    return answer


def _numeric_frame_model(data: pd.DataFrame, out: Path) -> Any:
    """A scaler and boosted trees fitted on a DataFrame of plain numbers: served as a matrix."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), GradientBoostingClassifier(
        n_estimators=10, max_depth=2, random_state=0)).fit(data[FEATURES], data["multi"])
    joblib.dump(model, out)
    return model


def _overflowing(ridge: Any) -> Any:
    """A copy of a Ridge with its coefficients scaled by 1e300: rows of ordinary numbers get
    finite answers, rows of large ones overflow to inf (or NaN) without any error."""
    import copy

    model = copy.deepcopy(ridge)
    model.coef_ = model.coef_ * 1e300
    return model


def _bounds(frame: pd.DataFrame, names: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    return {n: (float(frame[c].min()), float(frame[c].max()))
            for n, c in zip(names, frame.columns, strict=True)
            if pd.api.types.is_numeric_dtype(frame[c])}


@pytest.fixture(scope="module")
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           heart_package: Path, broken_pipelines: dict[str, Path]) -> Iterator[Served]:
    """One ``modelport serve --unseen pass`` of every flavor (the broken pipeline first: it is
    what ``POST /predict`` answers), and each model's own answer in process."""
    saved = {n: request.getfixturevalue(n) for n in (
        "onnx_numeric", "onnx_regressor", "onnx_columns", "xgb_binary", "lgb_binary")}
    numbers: pd.DataFrame = request.getfixturevalue("tabular")
    out = tmp_path_factory.mktemp("differential")
    joblib.dump(saved["onnx_numeric"].model, out / "sk_array.joblib")
    joblib.dump(_overflowing(saved["onnx_regressor"].model), out / "sk_ridge.joblib")
    numeric = _numeric_frame_model(numbers, out / "sk_frame_numeric.joblib")
    paths = {"broken_log1p": broken_pipelines["log1p"], "heart": heart_package,
             "sk_array": out / "sk_array.joblib", "sk_ridge": out / "sk_ridge.joblib",
             "sk_frame_numeric": out / "sk_frame_numeric.joblib",
             "columns": saved["onnx_columns"].path, "xgb_binary": saved["xgb_binary"].path,
             "lgb_binary": saved["lgb_binary"].path}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # loading a bare pickle warns that pickles run code
        loaded = {name: load_model(path, name=name) for name, path in paths.items()}
    assert loaded["sk_frame_numeric"].runtime.takes_array  # type: ignore[attr-defined]
    answers: dict[str, Callable[[Signature, Rows], Answer]] = {
        "broken_log1p": _sklearn(joblib.load(broken_pipelines["log1p"]), as_frame=False),
        "heart": _sklearn(joblib.load(request.getfixturevalue("heart_model_path")),
                          as_frame=True),
        "sk_array": _sklearn(saved["onnx_numeric"].model, as_frame=False),
        "sk_ridge": _sklearn(joblib.load(out / "sk_ridge.joblib"), as_frame=False),
        "sk_frame_numeric": _sklearn(numeric, as_frame=True),
        "columns": _onnx(saved["onnx_columns"].path),
        "xgb_binary": _sklearn(saved["xgb_binary"].model, as_frame=False),
        "lgb_binary": _sklearn(saved["lgb_binary"].model, as_frame=True),
    }
    numbers = numbers[FEATURES]
    frames = {"heart": request.getfixturevalue("heart_features"),
              "columns": saved["onnx_columns"].frame, "sk_array": numbers, "sk_ridge": numbers,
              "sk_frame_numeric": numbers, "xgb_binary": saved["xgb_binary"].frame,
              "lgb_binary": saved["lgb_binary"].frame}
    cells = {}
    for name, model in loaded.items():
        sig = model.signature
        bounds = _bounds(frames[name], sig.names) if name in frames else {}
        cells[name] = Cell(name, sig, lambda rows, a=answers[name], s=sig: a(s, rows), bounds)
    proc, url = start_server([*(str(p) for p in paths.values()), "--unseen", "pass"],
                             out / "server.log")
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            yield Served(client, cells)
    finally:
        stop(proc)


def start_server(args: list[str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``modelport serve ARGS`` on a free port, its log in the file ``log`` (a pipe nobody
    reads would fill up with the tracebacks of the failures asked for here, and block it);
    returns once ``/ready`` answers 200."""
    port = free_port()
    root = str(Path(__file__).resolve().parents[2])
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "modelport", "serve", *args, "--port",
                                 str(port)], stdout=subprocess.DEVNULL, stderr=sink,
                                env={**os.environ, "PYTHONPATH": root})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"the server did not become ready:\n{log.read_text()[-4000:]}")


# -- valid rows ---------------------------------------------------------------------------------


def _value(feat: Feature, bounds: tuple[float, float] | None, *, nulls: bool) -> Any:
    """Values of one feature: known categories and unseen ones, the reference range and its
    bounds, and the extremes the signature accepts."""
    lo, hi = bounds or (-1e3, 1e3)
    if feat.dtype == "string":
        values: Any = st.text(max_size=12)
    elif feat.dtype == "int":
        values = (st.sampled_from([*EXTREME_INTS, int(lo), int(hi)])
                  | st.integers(int(lo), int(hi)) | st.integers(-(2**63), 2**63 - 1))
    else:
        values = (st.sampled_from([*EXTREME_FLOATS, lo, hi]) | st.floats(lo, hi)
                  | st.floats(-FLOAT_LIMIT, FLOAT_LIMIT))
    if feat.categories:
        values = st.sampled_from(feat.categories) | values
    if feat.nullable and nulls:
        values = values | st.none()
    return values


def rows_of(cell: Cell, *, nulls: bool) -> st.SearchStrategy[Rows]:
    """One to four rows the signature accepts (with ``--unseen pass``)."""
    row = st.fixed_dictionaries({f.name: _value(f, cell.bounds.get(f.name), nulls=nulls)
                                 for f in cell.signature.features})
    return st.lists(row, min_size=1, max_size=4)


# -- the protocols ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What the server answered: status, labels and probabilities (when 200), the error text
    and the request id it named."""

    status: int
    labels: list[Any] | None
    proba: np.ndarray | list[Any] | None
    error: str
    request_id: str | None


def ask(client: httpx.Client, cell: Cell, protocol: str, rows: Rows, *, rid: str,
        path: str | None = None) -> Reply:
    """Send ``rows`` to ``cell``'s model over ``protocol`` (``path`` overrides the route)."""
    headers = {"X-Request-ID": rid}
    if protocol in ("native", "v1"):
        default = (f"/models/{cell.name}/predict" if protocol == "native"
                   else f"/v1/models/{cell.name}:predict")
        resp = client.post(path or default, json={"instances": rows}, headers=headers)
        return _plain_reply(resp, rid)
    content, head = (_v2_binary(cell.signature, rows) if protocol == "v2_binary"
                     else (json.dumps(_v2_json(cell.signature, rows)).encode(), None))
    if head is not None:
        headers["Inference-Header-Content-Length"] = str(head)
    resp = client.post(f"/v2/models/{cell.name}/infer", content=content,
                       headers={**headers, "Content-Type": "application/json"})
    return _v2_reply(resp, rid)


def _plain_reply(resp: httpx.Response, rid: str) -> Reply:
    assert resp.headers.get("x-request-id") == rid
    body = resp.json()
    if resp.status_code != 200:
        return Reply(resp.status_code, None, None, body.get("error", ""), body.get("request_id"))
    return Reply(200, body["predictions"], body.get("probabilities"), "", body.get("request_id"))


def _v2_json(sig: Signature, rows: Rows) -> dict[str, Any]:
    return {"inputs": [{"name": f.name, "shape": [len(rows)], "datatype": _V2_TYPES[f.dtype],
                        "data": [r[f.name] for r in rows]} for f in sig.features]}


def _v2_binary(sig: Signature, rows: Rows) -> tuple[bytes, int]:
    """Every input as binary tensor data (null as NaN), outputs asked as binary too."""
    specs, blobs = [], []
    for f in sig.features:
        values = [r[f.name] for r in rows]
        if f.dtype == "string":
            raw = b"".join(struct.pack("<I", len(b)) + b for b in (v.encode() for v in values))
        else:
            values = [np.nan if v is None else v for v in values]
            raw = np.asarray(values, dtype=_NUMPY[_V2_TYPES[f.dtype]]).tobytes()
        specs.append({"name": f.name, "shape": [len(rows)], "datatype": _V2_TYPES[f.dtype],
                      "parameters": {"binary_data_size": len(raw)}})
        blobs.append(raw)
    head = json.dumps({"inputs": specs, "parameters": {"binary_data_output": True}}).encode()
    return head + b"".join(blobs), len(head)


def _v2_reply(resp: httpx.Response, rid: str) -> Reply:
    assert resp.headers.get("x-request-id") == rid
    head_len = resp.headers.get("inference-header-content-length")
    raw = resp.content
    head = json.loads(raw[:int(head_len)] if head_len else raw)
    if resp.status_code != 200:
        error = head.get("error", "")
        return Reply(resp.status_code, None, None, error, rid if rid in error else None)
    outputs, offset = {}, int(head_len or 0)
    for out in head["outputs"]:
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is None:
            data = np.asarray(out["data"])
        else:
            data = _from_bytes(raw[offset:offset + size], out["datatype"])
            offset += size
        outputs[out["name"]] = data.reshape(out["shape"])
    proba = outputs.get("predict_proba")
    return Reply(200, outputs["predict"].tolist(), proba, "", head.get("id"))


def _from_bytes(raw: bytes, datatype: str) -> np.ndarray:
    if datatype != "BYTES":
        return np.frombuffer(raw, dtype=_NUMPY[datatype])
    out, pos = [], 0
    while pos < len(raw):
        (n,) = struct.unpack_from("<I", raw, pos)
        out.append(raw[pos + 4:pos + 4 + n].decode())
        pos += 4 + n
    return np.asarray(out, dtype=object)


# -- the comparison -----------------------------------------------------------------------------


def in_process(cell: Cell, rows: Rows) -> Answer | Exception:
    """The model's own answer, or what it raised; :class:`InvalidInput` when the signature
    refuses the rows (a value a later rule of it rules out). The server runs with Python's
    default warning filters (a model's RuntimeWarning is printed, not raised), so warnings are
    let pass here too instead of failing the model under pytest's ``error`` filter."""
    try:
        cell.signature.from_records(rows, unseen="pass")
    except InvalidInput as exc:
        return exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return cell.answer(rows)
        except Exception as exc:  # whatever the model raises is what the server must refuse
            return exc


def _finite(answer: Answer) -> bool:
    return all(a is None or a.dtype.kind not in "fc" or bool(np.isfinite(a).all())
               for a in answer)


def _equal(got: Any, want: np.ndarray) -> bool:
    """Exactly equal once the server's numbers are read back as the model's dtype."""
    if want.dtype.kind in "OUS":
        return [str(v) for v in np.asarray(got, dtype=object).ravel()] == [
            str(v) for v in want.ravel()]
    got = np.asarray(got, dtype=want.dtype).reshape(want.shape)
    return bool(np.array_equal(got, want))


def check(reply: Reply, expected: Answer | Exception, rid: str, protocol: str) -> None:
    """The server said what the model says: the same numbers, or a 500 naming the request
    (a 4xx for rows the signature refuses, the model never asked)."""
    if isinstance(expected, InvalidInput):
        assert reply.status in (400, 422), f"{reply}, but the signature says: {expected}"
        return
    if isinstance(expected, Exception) or not _finite(expected):
        why = "raises" if isinstance(expected, Exception) else "answers NaN/inf"
        assert reply.status == 500, f"the model {why} in process; the server said {reply}"
        assert reply.request_id == rid, reply
        if not isinstance(expected, Exception):
            assert "model returned non-finite output" in reply.error, reply
        return
    assert reply.status == 200, f"{reply} but the model answers {expected}"
    labels, proba = expected
    assert _equal(reply.labels, labels), (reply.labels, labels)
    if protocol != "v1" and proba is not None:
        assert reply.proba is not None and _equal(reply.proba, proba), (reply.proba, proba)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("flavor", FLAVORS)
@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate],  # no shrinking: rows are few already, and
          # each step of it is a round trip (minutes when a case fails)
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_server_answers_what_the_model_answers(served: Served, flavor: str, protocol: str,
                                               data: st.DataObject) -> None:
    cell = served.cells[flavor]
    rows = data.draw(rows_of(cell, nulls=protocol != "v2_json"), label="rows")
    rid = uuid.uuid4().hex
    check(ask(served.client, cell, protocol, rows, rid=rid), in_process(cell, rows), rid, protocol)


# -- a model that raises, or answers NaN/inf: 500 on every route, never 200 ----------------------

ROUTES = [("native", "/predict"), ("native", "/models/{m}/predict"),
          ("native", "/models/{m}/predict/batch"), ("v2_json", None), ("v2_binary", None),
          ("v1", None)]


def _failing_rows(cell: Cell, candidates: list[Rows], *, raises: bool) -> Rows:
    """The first candidate the model raises on (``raises``) or answers NaN/inf for."""
    for rows in candidates:
        got = in_process(cell, rows)
        if isinstance(got, Exception) if raises else (
                not isinstance(got, Exception) and not _finite(got)):
            return rows
    raise AssertionError(f"no candidate makes {cell.name} fail")


@pytest.mark.parametrize(("protocol", "path"), ROUTES, ids=[p or r for r, p in ROUTES])
def test_a_model_that_raises_answers_500_with_the_request_id(served: Served, protocol: str,
                                                             path: str | None) -> None:
    """The log pipeline raises ``Input X contains NaN`` in process on a negative value."""
    cell = served.cells["broken_log1p"]
    rows = _failing_rows(cell, [[{"f0": -2.0, "f1": 1.0, "f2": 1.0}]], raises=True)
    rid = uuid.uuid4().hex
    reply = ask(served.client, cell, protocol, rows, rid=rid,
                path=None if path is None else path.format(m=cell.name))
    assert (reply.status, reply.request_id) == (500, rid), reply
    assert "Input X" not in reply.error  # the traceback goes to the log, not the client


@pytest.mark.parametrize(("protocol", "path"), ROUTES[1:], ids=[p or r for r, p in ROUTES[1:]])
def test_non_finite_output_answers_500(served: Served, protocol: str, path: str | None) -> None:
    """A Ridge whose terms overflow answers inf (or NaN) in process without raising."""
    cell = served.cells["sk_ridge"]
    big = FLOAT_LIMIT
    extremes = [[dict.fromkeys(cell.signature.names, v)] for v in (big, -big)]
    extremes += [[{n: (big if i % 2 else -big) for i, n in enumerate(cell.signature.names)}]]
    rows = _failing_rows(cell, extremes, raises=False)
    rid = uuid.uuid4().hex
    reply = ask(served.client, cell, protocol, rows, rid=rid,
                path=None if path is None else path.format(m=cell.name))
    assert (reply.status, reply.request_id) == (500, rid), reply
    assert "model returned non-finite output" in reply.error


def test_a_model_that_fails_its_example_row_is_not_served(broken_pipelines: dict[str, Path]
                                                          ) -> None:
    """``log`` turns the all-zero example row into -inf: the warm-up refuses it, naming why."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # loading a bare pickle warns that pickles run code
        loaded = load_model(broken_pipelines["log"])
    with pytest.raises(ModelLoadError, match=r"example row .*Input X contains infinity"):
        create_app([loaded], Settings())


def test_a_model_that_answers_nan_on_its_example_row_is_not_served(tmp_path: Path) -> None:
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit(np.eye(3), np.arange(3.0))
    model.intercept_ = np.nan  # every prediction NaN, and scikit-learn raises nothing
    joblib.dump(model, tmp_path / "nan.joblib")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_model(tmp_path / "nan.joblib")
    with pytest.raises(ModelLoadError, match="model returned non-finite output"):
        create_app([loaded], Settings())
