"""``modelport export PACKAGE --edge --out DIR``: a bundle that predicts with no server."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the ``export`` command to ``app``."""
    app.command("export")(export)


def export(
    package: Annotated[Path, typer.Argument(help="A package directory (modelport pack).",
                                            show_default=False)],
    edge: Annotated[bool, typer.Option(
        "--edge", help="An edge bundle: the model in ORT format, a standalone predict.py "
                       "(numpy + onnxruntime only) and a README with size and latency.")] = False,
    out: Annotated[Path, typer.Option(help="Directory to write.")] = Path("edge"),
    int8: Annotated[bool, typer.Option(
        "--int8/--no-int8", help="Quantize a neural network to INT8 when its metric drop is "
                                 "within --max-metric-drop.")] = True,
    data: Annotated[Path | None, typer.Option(
        help="CSV/Parquet rows to check the conversion and judge INT8 on.")] = None,
    target: Annotated[str | None, typer.Option(
        help="Label column of --data (INT8 is judged by accuracy or R² on it).",
        show_default=False)] = None,
    max_metric_drop: Annotated[float, typer.Option(
        help="Largest metric drop accepted for INT8 (0.01 = one point).")] = 0.01,
    tolerance: Annotated[float, typer.Option(
        help="Largest |Δ| of the float graph's outputs against the model's.")] = 1e-4,
    force: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
) -> None:
    """Export a package for a device: ORT-format model, predict.py, README."""
    from modelport.errors import ConfigError
    from modelport.tools.edge import edge_bundle

    if not edge:
        raise ConfigError("export writes an edge bundle: pass --edge")
    if out.exists() and any(out.iterdir()) and not force:
        raise ConfigError(f"--out: '{out}' exists and is not empty; pass --force to replace it")
    bundle = edge_bundle(package, int8=int8, data=data, target=target,
                         max_metric_drop=max_metric_drop, tolerance=tolerance)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        for name, content in bundle.files.items():
            (staging / name).write_bytes(content)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    typer.echo(f"wrote {out}/: {', '.join(sorted(bundle.files))}")
    typer.echo(f"model: {bundle.model_bytes:,} bytes, {bundle.precision}; predict(): "
               f"{bundle.latency_1_ms:.3f} ms for 1 row, {bundle.latency_100_ms:.3f} ms for 100")
    if bundle.int8 is not None:
        m = bundle.int8
        typer.echo(f"INT8 {m.metric} on {m.rows} rows: {m.before:.4f} -> {m.after:.4f} "
                   f"(drop {m.drop:+.4f}, limit {max_metric_drop:g})")
    typer.echo(f"next: python -m pip install -r {out}/requirements.txt && "
               f"python {out}/predict.py ROWS.json")
