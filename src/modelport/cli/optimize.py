"""``modelport optimize PACKAGE``: convert to ONNX and prove parity, or compress with proof
(``--quantize int8``, ``--prune SHARE``), and record the result in the manifest."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from modelport.tools.compress import CompressionReport

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the ``optimize`` command to ``app``."""
    app.command("optimize")(optimize)


def optimize(
    package: Annotated[Path, typer.Argument(help="A package directory (modelport pack).")],
    tolerance: Annotated[float, typer.Option(
        help="Largest accepted |Δ| of a probability (or regression output) vs the native "
             "model.")] = 1e-4,
    quantize: Annotated[str | None, typer.Option(
        "--quantize", help="int8: torch packages get quantize_dynamic on their Linear/LSTM "
                           "layers; other neural networks an INT8 copy of their ONNX model.",
        show_default=False)] = None,
    prune: Annotated[float | None, typer.Option(
        help="Torch packages: zero this share of each Linear layer's weights (L1 "
             "unstructured), e.g. 0.5.", show_default=False)] = None,
    data: Annotated[Path | None, typer.Option(
        help="CSV/Parquet rows to check parity and judge compression on, besides the "
             "package's golden rows.")] = None,
    target: Annotated[str | None, typer.Option(
        help="Label column of --data: compression is judged by accuracy (or R²) on it "
             "instead of agreement with the original.", show_default=False)] = None,
    max_metric_drop: Annotated[float, typer.Option(
        help="Largest metric drop (accuracy or R² points, 0.01 = one point) for which the "
             "compressed copy becomes the served model.")] = 0.01,
) -> None:
    """Convert the package's model to ONNX and serve it only if it answers the same; or
    quantize/prune it and serve the copy only if its metric holds."""
    from modelport.errors import ConfigError
    from modelport.package import open_package

    if quantize is not None and quantize != "int8":
        raise ConfigError(f"--quantize: '{quantize}' is not supported (int8)")
    if open_package(package).manifest.flavor == "torch" and (quantize or prune is not None):
        from modelport.tools.compress_torch import compress

        report = compress(package, quantize=quantize is not None, prune=prune, data=data,
                          target=target, max_metric_drop=max_metric_drop)
        _show(report)
        return
    if prune is not None:
        raise ConfigError("--prune works on torch models' Linear layers only")
    _convert(package, tolerance, quantize is not None, data, target, max_metric_drop)


def _convert(package: Path, tolerance: float, quantize: bool, data: Path | None,
             target: str | None, max_metric_drop: float) -> None:
    from modelport.tools.optimize import optimize as run

    report = run(package, tolerance=tolerance, quantize=quantize, data=data, target=target,
                 max_metric_drop=max_metric_drop)
    p = report.parity
    typer.echo(f"wrote {report.package / report.artifact} (opset {report.opset}, "
               f"{report.converter})")
    typer.echo(f"parity on {p.rows} rows: labels differing {p.label_mismatches}, "
               f"max |Δ| {p.max_abs_diff:.3g} (tolerance {p.tolerance:g})")
    typer.echo(f"note: {report.note}")
    if not p.passed:
        typer.secho("parity FAILED: the package keeps serving the native model "
                    "(runtime='onnx' still forces the ONNX one)", err=True, fg=typer.colors.RED)
        raise typer.Exit(1)
    typer.secho("parity passed: the package now serves the ONNX model", fg=typer.colors.GREEN)
    if report.quantized is not None:
        q = report.quantized
        typer.echo(f"INT8 copy vs the native model: labels differing "
                   f"{q.parity.label_mismatches}, max |Δ| {q.parity.max_abs_diff:.3g}")
        if q.compression is not None:
            _show(q.compression)


def _show(report: CompressionReport) -> None:
    """The compression report, and exit 1 when the copy is refused."""
    m = report.metric
    typer.echo(f"{report.method}: wrote {report.artifact} ({report.flavor})")
    typer.echo(f"  size: {report.bytes_before:,} -> {report.bytes_after:,} bytes "
               f"({report.bytes_after / report.bytes_before:.0%})")
    for lat in report.latency:
        typer.echo(f"  latency, {lat.rows} row{'s' if lat.rows > 1 else ''}: "
                   f"{lat.before_ms:.3f} -> {lat.after_ms:.3f} ms (median)")
    if report.sparsity is not None:
        typer.echo(f"  sparsity of the pruned layers: {report.sparsity:.1%}")
    typer.echo(f"  {m.metric} on {m.rows} rows: {m.before:.4f} -> {m.after:.4f} "
               f"(drop {m.drop:+.4f}, limit {report.max_metric_drop:g})")
    if not report.served:
        typer.secho(f"REFUSED: the metric dropped by more than {report.max_metric_drop:g}; "
                    "the package keeps serving the original", err=True, fg=typer.colors.RED)
        raise typer.Exit(1)
    typer.secho(f"the package now serves {report.artifact}", fg=typer.colors.GREEN)
