"""``modelport optimize PACKAGE``: convert to ONNX, prove parity, record it in the manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the ``optimize`` command to ``app``."""
    app.command("optimize")(optimize)


def optimize(
    package: Annotated[Path, typer.Argument(help="A package directory (modelport pack).")],
    tolerance: Annotated[float, typer.Option(
        help="Largest accepted |Δ| of a probability (or regression output) vs the native "
             "model.")] = 1e-4,
    quantize: Annotated[bool, typer.Option(
        "--quantize", help="Also write an INT8 copy (neural networks only).")] = False,
    data: Annotated[Path | None, typer.Option(
        help="CSV/Parquet rows to check parity on, besides the package's golden rows.")] = None,
) -> None:
    """Convert the package's model to ONNX and serve it only if it answers the same."""
    from modelport.tools.optimize import optimize as run

    report = run(package, tolerance=tolerance, quantize=quantize, data=data)
    p = report.parity
    typer.echo(f"wrote {report.package / report.artifact} (opset {report.opset}, "
               f"{report.converter})")
    typer.echo(f"parity on {p.rows} rows: labels differing {p.label_mismatches}, "
               f"max |Δ| {p.max_abs_diff:.3g} (tolerance {p.tolerance:g})")
    if report.quantized is not None:
        q = report.quantized
        typer.echo(f"INT8 copy {q.artifact}: {q.bytes_before} -> {q.bytes_after} bytes; vs "
                   f"native: labels differing {q.parity.label_mismatches}, max |Δ| "
                   f"{q.parity.max_abs_diff:.3g}")
    typer.echo(f"note: {report.note}")
    if not p.passed:
        typer.secho("parity FAILED: the package keeps serving the native model "
                    "(runtime='onnx' still forces the ONNX one)", err=True, fg=typer.colors.RED)
        raise typer.Exit(1)
    typer.secho("parity passed: the package now serves the ONNX model", fg=typer.colors.GREEN)
