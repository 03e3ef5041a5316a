"""The MLflow scoring protocol (``mlflow models serve``), as a front door over the data plane.

Callers of an MLflow scoring server change nothing but the host:

- ``POST /invocations`` (the primary model) and ``POST /models/{name}/invocations``, with
  ``Content-Type: application/json`` and exactly one of

  ============================  ==================================================================
  ``dataframe_split``           ``{"columns": [...], "data": [[...], ...]}`` (pandas ``split``;
                                without ``columns`` the rows are in signature order)
  ``dataframe_records``         ``[{"age": 63, ...}, ...]`` (pandas ``records``)
  ``instances``                 records, or rows in signature order (TF-serving style)
  ``inputs``                    records, rows, or ``{"age": [...], ...}`` (one list per column)
  ============================  ==================================================================

  and optionally ``params`` (an object; modelport's runtimes take no inference parameters, so
  they are accepted and left unused, as ``mlflow models serve`` does for a model whose
  signature declares none); or ``Content-Type: text/csv``: a header line naming the columns,
  then one line per row, each value read as its feature's type. A charset other than UTF-8 is
  refused with 415, as is any other content type.
- Columns the model does not take are ignored, as MLflow's schema enforcement ignores them;
  a missing one is refused. Answers are ``{"predictions": [...]}`` (labels for a classifier,
  numbers for a regressor), what ``mlflow.pyfunc`` answers for the same model.
- Errors are ``{"error_code": "BAD_REQUEST", "message": "row 0, field 'age': ..."}`` with 400
  for bad input (the row and the column named, from the same validation as every protocol);
  other statuses as on every route (404, 415, 500 with the request id, 503, 504), with MLflow's
  error codes (:func:`~modelport.server.errors.mlflow_code`).
- ``GET /ping``: 200 when every model is ready, 503 otherwise (an empty body, as MLflow's);
  ``GET /version``: modelport's version, as text. ``/health`` keeps modelport's meaning
  (``probes.py``: the process answers).

The request goes the way of every protocol (``docs/architecture.md``): a ``RequestContext``
with protocol ``mlflow`` (the prediction log's ``route``), :meth:`DataPlane.resolve`, validation
by the signature into ``Columns``, :meth:`DataPlane.infer` (micro-batcher, cache, metrics,
drift, prediction log, shadow copies).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

import modelport
from modelport.errors import InvalidInput, UnsupportedMediaType
from modelport.server.edge import request_context
from modelport.server.fastlane import RouteTable
from modelport.server.schemas import MlflowErrorBody, meaning
from modelport.server.state import app_state, read_json
from modelport.signature import Feature, Signature, UnseenPolicy, numbers_only
from modelport.types import Columns

__all__ = ["FORMATS", "csv_batch", "media_kind", "mlflow_batch", "mlflow_request", "router",
           "table"]

router = APIRouter(tags=["mlflow"])
table = RouteTable(router)
"""The prediction routes: answered by the fast lane."""
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
"""The JSON request shapes; a body holds exactly one."""
_JSON, _CSV = "application/json", "text/csv"
_CHARSETS = frozenset({"utf-8", "utf8"})
_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": MlflowErrorBody, "description": meaning(status)}
    for status in (400, 404, 415, 500, 503, 504)}
_ERRORS[400]["description"] = "Invalid input: names the row and the field"


def media_kind(content_type: str | None) -> str:
    """``json`` or ``csv`` from a ``Content-Type``; 415 for anything else, or for a charset
    other than UTF-8."""
    if not content_type:
        raise UnsupportedMediaType(f"no Content-Type: send {_JSON} or {_CSV}")
    media, *params = (p.strip() for p in content_type.split(";"))
    media = media.lower()
    if media not in (_JSON, _CSV):
        raise UnsupportedMediaType(f"this server takes {_JSON} or {_CSV}, not {media}")
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in _CHARSETS:
            raise UnsupportedMediaType(f"charset {value.strip()} is not supported: send UTF-8")
    return "json" if media == _JSON else "csv"


def mlflow_batch(body: Any, sig: Signature, *, unseen: UnseenPolicy, max_rows: int,
                 plain: bool = False) -> Columns:
    """Validate an MLflow JSON body into a batch (``plain``: its text held only numbers)."""
    if not isinstance(body, Mapping):
        raise InvalidInput(f"expected a JSON object with one of {_listed(FORMATS)}")
    given = [k for k in FORMATS if k in body]
    if len(given) != 1:
        found = f"got {_listed(given)}" if given else f"got keys {_listed(list(body)[:8])}"
        raise InvalidInput(f"expected exactly one of {_listed(FORMATS)}; {found}",
                           field=given[1] if len(given) > 1 else None)
    if "params" in body and not isinstance(body["params"], Mapping):
        raise InvalidInput("expected an object of inference parameters", field="params")
    key = given[0]
    value = body[key]
    opts: dict[str, Any] = {"unseen": unseen, "max_rows": max_rows}
    if key == "dataframe_split":
        return _split(value, sig, plain=plain, **opts)
    if key == "dataframe_records":
        if not isinstance(value, list):
            raise InvalidInput("expected a list of records", field=key)
        return sig.from_records(_known_records(value, sig), **opts)
    if isinstance(value, Mapping) and key == "inputs":
        if not all(isinstance(value[n], list) for n in sig.names if n in value):
            raise InvalidInput("expected one list of values per column", field=key)
        return sig.from_columns(_known(value, sig), **opts)
    if not isinstance(value, list):
        kinds = "records, rows or an object of columns" if key == "inputs" else "records or rows"
        raise InvalidInput(f"expected a list of {kinds}", field=key)
    if value and isinstance(value[0], Mapping):
        return sig.from_records(_known_records(value, sig), **opts)
    return sig.from_rows(value, numbers_only=plain, **opts)


def _split(value: Any, sig: Signature, *, plain: bool, unseen: UnseenPolicy,
           max_rows: int) -> Columns:
    """``{"columns": [...], "data": [[...], ...]}``: rows, in the columns' order."""
    where = "dataframe_split"
    if not isinstance(value, Mapping):
        raise InvalidInput("expected an object with 'columns' and 'data'", field=where)
    data = value.get("data")
    if not isinstance(data, list):
        raise InvalidInput("expected a list of rows", field=f"{where}.data")
    if "columns" not in value:
        return sig.from_rows(data, unseen=unseen, max_rows=max_rows, numbers_only=plain)
    columns = value["columns"]
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise InvalidInput("expected a list of column names", field=f"{where}.columns")
    if len(set(columns)) != len(columns):
        twice = next(c for c in columns if columns.count(c) > 1)
        raise InvalidInput(f"column '{twice}' is named twice", field=f"{where}.columns")
    if tuple(columns) == sig.names:
        return sig.from_rows(data, unseen=unseen, max_rows=max_rows, numbers_only=plain)
    width = len(columns)
    keep = [(j, c) for j, c in enumerate(columns) if c in sig.name_set]
    records = []
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != width:
            got = f"{len(row)}" if isinstance(row, list) else "not a list"
            raise InvalidInput(f"expected {width} values (one per column: "
                               f"{', '.join(columns)}), got {got}", row=i)
        records.append({c: row[j] for j, c in keep})
    return sig.from_records(records, unseen=unseen, max_rows=max_rows)


def _known(record: Mapping[str, Any], sig: Signature) -> Mapping[str, Any]:
    """``record`` without the columns the model does not take (MLflow ignores them too)."""
    if record.keys() <= sig.name_set:
        return record
    return {k: v for k, v in record.items() if k in sig.name_set}


def _known_records(records: list[Any], sig: Signature) -> list[Any]:
    return [_known(r, sig) if isinstance(r, Mapping) else r for r in records]


def csv_batch(raw: bytes, sig: Signature, *, unseen: UnseenPolicy, max_rows: int) -> Columns:
    """Validate a CSV body (a header line of column names, then one line per row) into a
    batch; each value is read as its feature's type, an empty one is missing (null)."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnsupportedMediaType(f"the CSV body is not UTF-8 text ({exc.reason} at byte "
                                   f"{exc.start})") from None
    try:
        lines = [line for line in csv.reader(io.StringIO(text, newline=""), strict=True)
                 if line]
    except csv.Error as exc:
        raise InvalidInput(f"the CSV body cannot be read: {exc}") from None
    if not lines:
        raise InvalidInput("the CSV body is empty: send a header line with the column names, "
                           "then one line per row")
    header = [c.strip() for c in lines[0]]
    if len(set(header)) != len(header):
        twice = next(c for c in header if header.count(c) > 1)
        raise InvalidInput(f"column '{twice}' is named twice in the CSV header")
    keep = [(j, sig.feature(c)) for j, c in enumerate(header) if c in sig.name_set]
    records = []
    for i, line in enumerate(lines[1:]):
        if len(line) != len(header):
            raise InvalidInput(f"expected {len(header)} values (one per column of the header), "
                               f"got {len(line)}", row=i)
        records.append({f.name: _cell(f, line[j], i) for j, f in keep})
    if not records:
        raise InvalidInput("the CSV body has a header and no rows: send at least one row")
    return sig.from_records(records, unseen=unseen, max_rows=max_rows)


def _cell(feat: Feature, text: str, row: int) -> Any:
    """One CSV value as its feature's type (empty: missing); the signature judges it next."""
    if feat.dtype == "string":
        return text if text != "" else None
    value = text.strip()
    if value == "":
        return None
    try:
        if feat.dtype == "bool":
            low = value.lower()
            if low in _TRUE or low in _FALSE:
                return low in _TRUE
            raise ValueError(value)
        if feat.dtype == "int":
            try:
                return int(value)
            except ValueError:
                number = float(value)  # "3.0": the signature checks that it is whole
                return None if math.isnan(number) and feat.nullable else number
        return float(value)
    except ValueError:
        expected = {"bool": "true or false", "int": "an integer", "float": "a number"}
        raise InvalidInput(f"expected {expected[feat.dtype]}, got {text[:40]!r}",
                           field=feat.name, row=row) from None


def mlflow_request(sig: Signature, *, unseen: UnseenPolicy, max_rows: int,
                   record: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of an MLflow JSON body for ``sig`` (the OpenAPI document's): exactly
    one of the four shapes, ``params`` an object. ``record`` is a record's schema that admits
    other columns too (they are ignored), ``row`` an ordered row's. As for the native route,
    a body of one list per column is shown with one row."""
    bound = {"type": "array", "minItems": 1, "maxItems": max_rows}
    records, rows = {**bound, "items": record}, {**bound, "items": row}
    columns = {"type": "object", "required": list(sig.names),
               "properties": {f.name: {"type": "array", "items": f.json_schema(unseen=unseen),
                                       "minItems": 1, "maxItems": 1} for f in sig.features},
               "description": "One list per column. JSON Schema cannot say that the lists "
                              "have equal lengths: this schema shows one row; lists of any "
                              f"equal length up to {max_rows} are accepted."}
    split = {"type": "object", "required": ["data"],
             "properties": {"columns": {"const": list(sig.names)}, "data": rows},
             "description": "pandas' split orient. The columns may come in any order (each "
                            "row's values then follow it); this schema shows the signature's."}
    shapes: dict[str, dict[str, Any]] = {
        "dataframe_split": split, "dataframe_records": records,
        "instances": {"oneOf": [records, rows]}, "inputs": {"oneOf": [records, rows, columns]}}
    return {"oneOf": [
        {"type": "object", "title": key, "required": [key],
         "properties": {key: shape, "params": {"type": "object"}},
         "not": {"anyOf": [{"required": [other]} for other in FORMATS if other != key]}}
        for key, shape in shapes.items()],
        "description": "Exactly one of dataframe_split, dataframe_records, instances or inputs; "
                       "columns the model does not take are ignored. Also accepted: text/csv "
                       "with a header line naming the columns."}


def _listed(keys: Sequence[Any]) -> str:
    return ", ".join(f"'{k}'" for k in keys) or "nothing"


async def _invoke(request: Request, name: str | None) -> Response:
    state = app_state(request)
    plane, s = state.dataplane, state.settings
    ctx = request_context(request)
    ctx.protocol = ctx.route = "mlflow"
    served = plane.resolve(ctx, name, None)
    kind = media_kind(request.headers.get("content-type"))
    if kind == "csv":
        batch = csv_batch(await request.body(), served.signature, unseen=s.unseen_categories,
                          max_rows=s.max_batch_rows)
    else:
        body = await read_json(request)
        batch = mlflow_batch(body, served.signature, unseen=s.unseen_categories,
                             max_rows=s.max_batch_rows, plain=numbers_only(await request.body()))
    outputs = await plane.infer(ctx, served, batch)
    preds = outputs.predictions
    answer = {"predictions": preds.tolist() if preds.dtype == object else preds}
    return Response(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY),
                    media_type="application/json")


@table.post("/invocations", kind="mlflow", summary="MLflow scoring: predict with the primary "
            "model", responses=_ERRORS)
async def invocations(request: Request) -> Response:
    """``dataframe_split``, ``dataframe_records``, ``instances`` or ``inputs`` (JSON), or
    ``text/csv`` with a header line; answers ``{"predictions": [...]}``."""
    return await _invoke(request, None)


@table.post("/models/{name}/invocations", kind="mlflow",
            summary="MLflow scoring: predict with a model", responses=_ERRORS)
async def model_invocations(request: Request, name: str) -> Response:
    """As ``/invocations``, with the model ``name`` (its default version, or the one its
    traffic policy picks)."""
    return await _invoke(request, name)


_PING: dict[int | str, dict[str, Any]] = {
    200: {"description": "Every model is ready", "content": {"text/plain": {}}},
    503: {"description": meaning(503), "content": {"text/plain": {}}}}


@router.get("/ping", summary="MLflow readiness probe", responses=_PING,
            response_class=Response)
async def ping(request: Request) -> Response:
    """200 when every model is loaded and warmed (and the server is not draining), else 503;
    the body is a newline, as MLflow's."""
    ready = app_state(request).dataplane.ready()
    return Response("\n", status_code=200 if ready else 503, media_type="text/plain")


@router.get("/version", summary="Server version (MLflow scoring protocol)",
            responses={200: {"description": "The version, as text",
                             "content": {"text/plain": {"schema": {"type": "string"}}}}},
            response_class=Response)
async def server_version() -> Response:
    """modelport's version, as text (an MLflow scoring server answers its mlflow version)."""
    return Response(modelport.__version__, media_type="text/plain")
