"""The MLflow scoring protocol against a real ``modelport serve`` of two MLflow model
directories, in a process where importing mlflow fails (and is written down if tried).

Every request shape is compared with mlflow's own pyfunc predictions on the same model, and
mlflow's own request examples (the ones ``mlflow models serve --help`` shows) are sent
unchanged.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from tests.mlflow_serving.conftest import Saved, mlflow_answer, pyfunc_predict, python, records
from tests.server.test_e2e import start_server, stop

pytestmark = [pytest.mark.e2e]


@pytest.fixture(scope="module")
def served(mlflow_dirs: dict[str, Saved], no_mlflow: dict[str, str],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``modelport serve ab/ mixed/ bare/`` (``ab`` primary) with a prediction log, mlflow
    blocked; the URL and the prediction log's SQLite file."""
    db = tmp_path_factory.mktemp("predlog") / "predictions.db"
    env = {**no_mlflow, "MODELPORT_LOG_DB": f"sqlite:///{db}", "MODELPORT_GRPC_PORT": "0"}
    proc, url = start_server(*(str(mlflow_dirs[m].path) for m in ("ab", "mixed", "bare")),
                             env=env)
    yield url, db
    assert stop(proc) == 0


def _post(url: str, body: Any) -> httpx.Response:
    return httpx.post(url, json=body, timeout=30)


def test_every_request_shape_answers_what_mlflow_answers(
        served: tuple[str, Path], mlflow_dirs: dict[str, Saved]) -> None:
    """Each shape mlflow's scoring server takes gets mlflow's answer; the shapes modelport
    takes beyond (ordered rows, for a model with named columns) get pyfunc's answer on the
    rows they stand for."""
    url = f"{served[0]}/models/mixed/invocations"
    mixed = mlflow_dirs["mixed"]
    rows = mixed.frame.iloc[10:35]
    split = rows.to_dict(orient="split")  # what mlflow's own client sends: index included
    recs = records(rows)
    ordered = [list(r.values()) for r in recs]
    mlflow_shapes: dict[str, Any] = {
        "dataframe_split": {"dataframe_split": {"columns": split["columns"], "data": ordered,
                                                "index": split["index"]}},
        "dataframe_split, other column order": {"dataframe_split": {
            "columns": ["kind", "dose", "age"],
            "data": [[r["kind"], r["dose"], r["age"]] for r in recs]}},
        "dataframe_records": {"dataframe_records": recs},
        "dataframe_records, extra column": {"dataframe_records": [r | {"id": i} for i, r in
                                                                  enumerate(recs)]},
        "instances (records)": {"instances": recs},
        "inputs (records)": {"inputs": recs},
        "inputs (columns)": {"inputs": {c: [r[c] for r in recs] for c in recs[0]}},
        "with params": {"dataframe_records": recs, "params": {"threshold": 0.5}},
    }
    expected = pyfunc_predict(mixed.path, rows)
    for shape, body in mlflow_shapes.items():
        text = json.dumps(body)
        assert mlflow_answer(mixed.path, text) == {"predictions": expected}, shape
        resp = httpx.post(url, content=text, headers={"Content-Type": "application/json"},
                          timeout=30)
        assert resp.status_code == 200, (shape, resp.text)
        assert resp.json() == {"predictions": expected}, shape
        assert resp.headers["x-model-name"] == "mixed"
    csv = rows.to_csv(index=False)
    assert mlflow_answer(mixed.path, csv, "text/csv") == {"predictions": expected}
    for content_type in ("text/csv", "text/csv; charset=utf-8"):
        resp = httpx.post(url, content=csv.encode(), timeout=30,
                          headers={"Content-Type": content_type})
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"predictions": expected}
    resp = httpx.post(url, content=json.dumps({"inputs": recs}).encode(), timeout=30,
                      headers={"Content-Type": "application/json; charset=UTF-8"})
    assert resp.json() == {"predictions": expected}
    for body in ({"dataframe_split": {"data": ordered}}, {"instances": ordered},
                 {"inputs": ordered}):  # modelport's own: rows in the signature's order
        assert _post(url, body).json() == {"predictions": expected}, body


def _mlflow_examples() -> list[dict[str, Any]]:
    """The JSON bodies of the ``curl`` examples in ``mlflow models serve --help``."""
    from mlflow.models.cli import serve

    bodies = re.findall(r"-d '(\{.*?\})'", serve.help or "", re.S)
    return [json.loads(b) for b in bodies]


@pytest.mark.parametrize("model", ["ab", "bare"])
def test_mlflows_own_request_examples_run_unchanged(served: tuple[str, Path],
                                                    mlflow_dirs: dict[str, Saved],
                                                    model: str) -> None:
    """The examples are for a model of two columns ``a`` and ``b``: ``ab`` (with a
    signature: the primary model, ``/invocations``) and ``bare`` (without)."""
    from mlflow.exceptions import MlflowException

    url = f"{served[0]}/invocations" if model == "ab" else f"{served[0]}/models/bare/invocations"
    path = mlflow_dirs[model].path
    frame = pd.DataFrame({"a": [1.0, 3.0, 5.0], "b": [2.0, 4.0, 6.0]})
    examples = _mlflow_examples()
    assert sorted(next(iter(e)) for e in examples) == [
        "dataframe_records", "dataframe_split", "inputs", "instances"]
    answered = 0
    for body in examples:
        text = json.dumps(body)
        resp = httpx.post(url, content=text, headers={"Content-Type": "application/json"},
                          timeout=30)
        try:
            expected = mlflow_answer(path, text)
        except MlflowException:  # mlflow's server refuses it for this model
            if "instances" in body:  # a string and a tensor per row: refused by both
                assert resp.status_code == 400
                assert resp.json() == {"error_code": "BAD_REQUEST", "message": "row 0, field "
                                       "'a': expected a number, got the string 't1'"}
                continue
            # ordered rows for a model with named columns: modelport takes them in order
            assert model == "ab" and body == {"inputs": [[1, 2], [3, 4], [5, 6]]}
            expected = {"predictions": pyfunc_predict(path, frame)}
        assert resp.status_code == 200, (body, resp.text)
        assert resp.json()["predictions"] == pytest.approx(expected["predictions"]), body
        answered += 1
    assert answered == 3
    # and the CSV a pandas user sends (DataFrame.to_csv: a header line, then the rows)
    csv = frame.to_csv(index=False)
    resp = httpx.post(url, content=csv, timeout=30, headers={"Content-Type": "text/csv"})
    assert resp.status_code == 200
    assert resp.json()["predictions"] == pytest.approx(
        mlflow_answer(path, csv, "text/csv")["predictions"])


@pytest.mark.parametrize(("body", "message"), [
    ({"dataframe_records": [{"age": 40, "dose": 1.0, "kind": "a"}, {"age": 40, "dose": "x",
                                                                    "kind": "a"}]},
     "row 1, field 'dose': expected a number, got the string 'x'"),
    ({"dataframe_split": {"columns": ["age", "dose"], "data": [[40, 1.0]]}},
     "row 0, field 'kind': missing required feature"),
    ({"dataframe_split": {"columns": ["age", "dose", "kind"], "data": [[40, 1.0]]}},
     "row 0: expected 3 values (one per feature: age, dose, kind), got 2"),
    ({"instances": [[40, 1.0, "a"]], "inputs": [[40, 1.0, "a"]]},
     "field 'inputs': expected exactly one of 'dataframe_split', 'dataframe_records', "
     "'instances', 'inputs'; got 'instances', 'inputs'"),
    ({"data": [[40, 1.0, "a"]]},
     "expected exactly one of 'dataframe_split', 'dataframe_records', 'instances', 'inputs'; "
     "got keys 'data'"),
    ({"inputs": [[40, 1.0, "a"]], "params": [1]},
     "field 'params': expected an object of inference parameters"),
    ({"instances": [[40.5, 1.0, "a"]]}, "row 0, field 'age': expected an integer, got 40.5"),
])
def test_bad_input_is_400_naming_the_row_and_the_field(served: tuple[str, Path], body: Any,
                                                       message: str) -> None:
    resp = _post(f"{served[0]}/models/mixed/invocations", body)
    assert resp.status_code == 400
    assert resp.json() == {"error_code": "BAD_REQUEST", "message": message}


def test_csv_errors_charsets_and_content_types(served: tuple[str, Path]) -> None:
    url = f"{served[0]}/models/mixed/invocations"

    def send(body: bytes, content_type: str) -> httpx.Response:
        return httpx.post(url, content=body, headers={"Content-Type": content_type},
                          timeout=30)

    resp = send(b"age,dose,kind\n40,1.0,a\n41,abc,b\n", "text/csv")
    assert resp.status_code == 400
    assert resp.json()["message"] == "row 1, field 'dose': expected a number, got 'abc'"
    assert send(b"age,dose,kind\n40,1.0\n", "text/csv").json()["message"] == (
        "row 0: expected 3 values (one per column of the header), got 2")
    for content_type in ("text/csv; charset=latin-1", "application/json; charset=utf-16"):
        resp = send(b"age,dose,kind\n40,1.0,a\n", content_type)
        assert resp.status_code == 415, content_type
        assert resp.json()["error_code"] == "BAD_REQUEST"
        assert "is not supported: send UTF-8" in resp.json()["message"]
    resp = send(b"{}", "text/plain")
    assert resp.status_code == 415
    assert "takes application/json or text/csv, not text/plain" in resp.json()["message"]
    resp = _post(f"{served[0]}/models/nope/invocations", {"inputs": [[1]]})
    assert resp.status_code == 404 and resp.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_probes_and_version(served: tuple[str, Path]) -> None:
    url = served[0]
    ping = httpx.get(f"{url}/ping", timeout=10)
    assert ping.status_code == 200 and ping.text == "\n"
    version = httpx.get(f"{url}/version", timeout=10)
    assert version.status_code == 200 and re.fullmatch(r"\d+\.\d+\.\d+.*", version.text)
    health = httpx.get(f"{url}/health", timeout=10)  # modelport's liveness, as before
    assert health.status_code == 200 and health.json() == {"status": "alive"}


def test_metrics_and_the_prediction_log_count_mlflow_requests(
        served: tuple[str, Path], mlflow_dirs: dict[str, Saved]) -> None:
    url, db = served
    rows = records(mlflow_dirs["ab"].frame.head(7))
    resp = _post(f"{url}/invocations", {"dataframe_records": rows,
                                        "params": {"note": "counted"}})
    assert resp.status_code == 200
    rid = resp.headers["x-request-id"]
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    assert re.search(r'modelport_requests_total\{[^}]*model="ab"[^}]*route="/invocations"'
                     r'[^}]*status="200"[^}]*\} [1-9]', metrics), metrics[:3000]
    assert re.search(r'modelport_predictions_total\{[^}]*model="ab"[^}]*\} ([0-9.]+)', metrics)
    deadline = time.monotonic() + 20
    logged: list[Any] = []
    while time.monotonic() < deadline and len(logged) < len(rows):
        if db.exists():
            with contextlib.closing(sqlite3.connect(db)) as conn, \
                    contextlib.suppress(sqlite3.OperationalError):  # no table yet
                logged = conn.execute("SELECT route, model FROM modelport_predictions "
                                      "WHERE request_id = ?", (rid,)).fetchall()
        time.sleep(0.2)
    assert logged == [("mlflow", "ab")] * len(rows)


def test_the_server_never_tried_to_import_mlflow(served: tuple[str, Path],
                                                 no_mlflow: dict[str, str],
                                                 tmp_path: Path) -> None:
    """Last: after every other request of this module. The blocker itself works: a process
    given the same environment cannot import mlflow, and its attempt is written down."""
    assert not Path(no_mlflow["MLFLOW_IMPORT_LOG"]).exists()
    log = tmp_path / "control.log"
    run = subprocess.run([python(), "-c", "import mlflow"], capture_output=True, text=True,
                         env={**no_mlflow, "MLFLOW_IMPORT_LOG": str(log)}, timeout=60,
                         check=False)
    assert run.returncode != 0 and "mlflow is blocked in this process" in run.stderr
    assert log.read_text(encoding="utf-8").split() == ["mlflow"]
