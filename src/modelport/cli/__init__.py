"""The ``modelport`` command line: every command is one library call plus formatting.

Each area registers its commands from its own module (``serve``, ``registry``, ``build``,
``monitor``, ``tools``); errors are translated once, here, into a message and an exit code.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated

import typer

from modelport.errors import ModelportError

__all__ = ["app", "main"]

app = typer.Typer(
    name="modelport",
    help="Turn a trained model file into a production service, and keep it healthy there.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



def _show_version(value: bool) -> None:
    if value:
        from modelport import __version__

        typer.echo(f"modelport {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_show_version, is_eager=True,
        help="Print modelport's version and exit.")] = False) -> None:
    """Turn a trained model file into a production service, and keep it healthy there."""


_AREAS = ("serve", "registry", "rollout", "build", "monitor", "tools", "optimize",
          "export")
for _area in _AREAS:
    try:
        importlib.import_module(f"modelport.cli.{_area}").register(app)
    except ModuleNotFoundError as _exc:  # an area not written yet
        if _exc.name != f"modelport.cli.{_area}":
            raise


def main() -> None:
    """Entry point of the ``modelport`` script: one message and an exit code per error."""
    try:
        code = app(standalone_mode=False)
    except ModelportError as exc:
        typer.secho(f"error: {exc.message}", err=True, fg=typer.colors.RED)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # usage errors (Typer's click) show themselves with their code
        show, exit_code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(exit_code, int):
            show()
            sys.exit(exit_code)
        if type(exc).__name__ == "Abort":
            sys.exit(130)
        raise
    sys.exit(code if isinstance(code, int) else 0)
