"""Offline batch scoring: CSV / Parquet / JSON-lines files streamed through a model in chunks.

Memory stays flat as the input grows: files are read chunk by chunk, each chunk is validated
against the signature and scored, and the result is appended to the output (Parquet by
default, or CSV) under a temporary name that is renamed into place at the end. Rows that fail
validation never sink their chunk: they go to a rejects file with the reason (source file, row,
field, message) and the others are scored. Nothing is dropped silently; the counts come back.

With ``dask=`` the same chunk scoring runs as one Dask task per chunk, the model loaded once
per worker process (cached by package path + sha256); results are written in input order, so
the output is identical to the single-process run.
"""

from __future__ import annotations

import glob
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelport.errors import ConfigError, IntegrityError
from modelport.package import MANIFEST, LoadedModel, file_sha256, load_model
from modelport.tools.batch_validate import empty_rejects, score_frame

__all__ = ["BatchResult", "Chunk", "Scored", "count_rows", "iter_chunks", "resolve_inputs",
           "score", "worker_loads"]

_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
            ".ndjson": "jsonl", ".json": "jsonl"}
_OUT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", "": "parquet"}


@dataclass(frozen=True)
class BatchResult:
    """What a batch run did: counts, where the files are, how long it took."""

    rows_in: int
    scored: int
    rejected: int
    output: Path
    rejects: Path
    seconds: float

    @property
    def rows_per_s(self) -> float:
        """Input rows per second, end to end."""
        return self.rows_in / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Chunk:
    """A slice of one input file: ``frame`` (a DataFrame) starts at row ``offset`` of ``source``."""

    source: str
    offset: int
    frame: Any


@dataclass(frozen=True)
class Scored:
    """The scored rows (``table``) and the rejected ones (``rejects``) of one chunk, as Arrow."""

    rows: int
    table: Any
    rejects: Any


def resolve_inputs(pattern: str) -> list[Path]:
    """The files a path or glob names, sorted; each must be CSV, Parquet or JSON lines."""
    has_magic = glob.has_magic(pattern)
    files = sorted(Path(p) for p in glob.glob(pattern)) if has_magic else [Path(pattern)]
    files = [f for f in files if f.is_file()]
    if not files:
        raise ConfigError(f"no input file matches '{pattern}'")
    for f in files:
        if f.suffix.lower() not in _FORMATS:
            raise ConfigError(f"cannot read '{f.name}': use .csv, .parquet or .jsonl files")
    return files


def count_rows(files: Sequence[Path]) -> int | None:
    """Total rows when cheap to know (Parquet metadata), else ``None``."""
    import pyarrow.parquet as pq

    if any(_FORMATS[f.suffix.lower()] != "parquet" for f in files):
        return None
    return sum(int(pq.ParquetFile(f).metadata.num_rows) for f in files)


def iter_chunks(
    path: Path, chunk_rows: int, *, text_columns: Sequence[str] = ()
) -> Iterator[Chunk]:
    """Stream ``path`` as DataFrames of at most ``chunk_rows`` rows (constant memory).

    ``text_columns`` are read as text from CSV, so a category such as ``"3"`` stays a string.
    """
    import pandas as pd

    fmt = _FORMATS[path.suffix.lower()]
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with pq.ParquetFile(path) as pf:
            yield from _numbered(path, (b.to_pandas() for b in pf.iter_batches(chunk_rows)))
        return
    if fmt == "csv":
        reader = pd.read_csv(path, chunksize=chunk_rows, dtype=dict.fromkeys(text_columns, object))
    else:
        reader = pd.read_json(path, lines=True, chunksize=chunk_rows, dtype=False)
    with reader:
        yield from _numbered(path, reader)


def _numbered(path: Path, frames: Iterable[Any]) -> Iterator[Chunk]:
    offset = 0
    for frame in frames:
        yield Chunk(path.name, offset, frame)
        offset += len(frame)


def score(
    package: Path,
    inputs: str,
    out: Path,
    *,
    id_cols: Sequence[str] = (),
    chunk_rows: int = 50_000,
    rejects: Path | None = None,
    dask: str | None = None,
    dask_workers: int | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> BatchResult:
    """Score every row of ``inputs`` (a path or glob) with the model at ``package``.

    ``out`` gets the input's ``id_cols``, ``prediction`` and ``proba_<class>`` columns; rows
    that fail validation go to ``rejects`` (default: ``<out>.rejects.parquet``). ``dask`` is
    ``"local"`` or a scheduler address. ``on_rows(n)`` is called after each chunk.
    """
    if chunk_rows < 1:
        raise ConfigError(f"--chunk-rows must be at least 1, got {chunk_rows}")
    started = time.perf_counter()
    files = resolve_inputs(inputs)
    model = load_model(package)
    text = [f.name for f in model.signature.features if f.dtype == "string"]
    chunks = (c for f in files for c in iter_chunks(f, chunk_rows, text_columns=text))
    ids = tuple(id_cols)
    if dask is None:
        results: Iterator[Scored] = (_score(model, c, ids) for c in chunks)
    else:
        results = _score_dask(package, chunks, ids, dask, dask_workers)
    rejects = rejects or out.with_name(f"{out.stem}.rejects.parquet")
    counts = _write_all(results, out, rejects, on_rows)
    return BatchResult(counts[0], counts[1], counts[2], out, rejects,
                       time.perf_counter() - started)


def _score(model: LoadedModel, chunk: Chunk, id_cols: tuple[str, ...]) -> Scored:
    table, rejects = score_frame(model, chunk.frame, id_cols, source=chunk.source,
                                 offset=chunk.offset)
    return Scored(len(chunk.frame), table, rejects)


def _write_all(results: Iterator[Scored], out: Path, rejects: Path,
               on_rows: Callable[[int], None] | None) -> tuple[int, int, int]:
    rows = scored = rejected = 0
    with _sink(out) as write_out, _sink(rejects) as write_rejects:
        write_rejects(empty_rejects())
        for part in results:
            write_out(part.table)
            write_rejects(part.rejects)
            rows += part.rows
            scored += part.table.num_rows
            rejected += part.rejects.num_rows
            if on_rows is not None:
                on_rows(part.rows)
    return rows, scored, rejected


@contextmanager
def _sink(path: Path) -> Iterator[Callable[[Any], None]]:
    """Append Arrow tables to ``path`` via a temporary file; renamed into place on success."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    fmt = _OUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"cannot write '{path.name}': use a .parquet or .csv output")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    state: dict[str, Any] = {}

    def write(table: Any) -> None:
        if "writer" not in state:
            cls = pq.ParquetWriter if fmt == "parquet" else pacsv.CSVWriter
            state["writer"] = cls(str(tmp), table.schema)
            state["schema"] = table.schema
        state["writer"].write_table(_conform(table, state["schema"]))

    try:
        yield write
        if "writer" in state:
            state["writer"].close()
        os.replace(tmp, path)
    except BaseException:
        if "writer" in state:
            state["writer"].close()
        tmp.unlink(missing_ok=True)
        raise


def _conform(table: Any, schema: Any) -> Any:
    if table.schema.equals(schema):
        return table
    try:
        return table.cast(schema)
    except (ValueError, TypeError, NotImplementedError) as exc:  # ArrowInvalid is a ValueError
        raise ConfigError(f"a later chunk's columns do not match the first chunk's ({exc}); "
                          "give the id columns one type throughout") from exc


# -- Dask --------------------------------------------------------------------------------------

_MODELS: dict[tuple[str, str], LoadedModel] = {}
_MODELS_LOCK = threading.Lock()
_LOADS = [0]


def worker_loads() -> int:
    """How many times this process loaded a model for Dask tasks (one per package, ideally)."""
    return _LOADS[0]


def package_digest(package: Path) -> str:
    """sha256 that names a package's exact contents (its manifest lists every file's sha256)."""
    return file_sha256(package / MANIFEST if package.is_dir() else package)


def _cached_model(package: str, digest: str) -> LoadedModel:
    """The model at ``package``, loaded once per worker process and checked against ``digest``."""
    key = (package, digest)
    with _MODELS_LOCK:
        if key not in _MODELS:
            path = Path(package)
            if package_digest(path) != digest:
                raise IntegrityError(f"'{package}' on this Dask worker differs from the client's "
                                     "copy; give every worker the same package")
            _MODELS[key] = load_model(path)
            _LOADS[0] += 1
        return _MODELS[key]


def _remote_score(package: str, digest: str, chunk: Chunk, id_cols: tuple[str, ...]) -> Scored:
    return _score(_cached_model(package, digest), chunk, id_cols)


def _score_dask(package: Path, chunks: Iterator[Chunk], id_cols: tuple[str, ...],
                address: str, workers: int | None) -> Iterator[Scored]:
    """One task per chunk; a bounded window of chunks in flight keeps the client's memory flat."""
    digest = package_digest(package)
    where = str(package.resolve())
    with _dask_client(address, workers) as client:
        window: deque[Any] = deque()
        limit = 2 * max(1, len(client.scheduler_info()["workers"])) + 1
        for chunk in chunks:
            data = client.scatter(chunk, hash=False)
            window.append(client.submit(_remote_score, where, digest, data, id_cols, pure=False))
            while len(window) >= limit:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


@contextmanager
def _dask_client(address: str, workers: int | None) -> Iterator[Any]:
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ConfigError("--dask needs Dask: pip install 'modelport[dask]'") from exc
    if address != "local":
        with Client(address, timeout=30) as client:  # type: ignore[no-untyped-call]
            yield client
        return
    n = workers or os.cpu_count() or 1
    cluster = LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, Client(cluster) as client:  # type: ignore[no-untyped-call]
        yield client

