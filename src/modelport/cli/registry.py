"""``modelport registry …``: push, list, show, alias, rollback, history, delete.

Each command opens the catalog named by ``--db`` (or ``MODELPORT_REGISTRY_DB``), makes one
library call and prints the result; errors are translated once, by ``modelport.cli.main``.
"""

from __future__ import annotations

import getpass
import json
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from modelport.config import Settings
from modelport.errors import InvalidInput
from modelport.registry import AliasMove, ModelVersion, Registry, parse_ref

__all__ = ["register"]

Db = Annotated[str | None, typer.Option(
    "--db", help="Catalog URL: sqlite:///path.db or postgresql+psycopg://… "
                 "[env: MODELPORT_REGISTRY_DB]", show_default=False)]
Store = Annotated[Path | None, typer.Option(
    "--store", help="Artifact store directory [env: MODELPORT_REGISTRY_STORE]",
    show_default=False)]
Actor = Annotated[str | None, typer.Option(
    "--actor", help="Who does this, recorded with the change (default: the login name)",
    show_default=False)]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]

_out = Console(highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add the ``registry`` command group to the ``modelport`` app."""
    group = typer.Typer(help="Model versions and aliases: push, list, alias, rollback …",
                        no_args_is_help=True)
    for command in (push, list_models, show, alias, rollback, history, delete):
        name = "list" if command is list_models else command.__name__
        group.command(name)(command)
    app.add_typer(group, name="registry")


def push(
    package_or_file: Annotated[Path, typer.Argument(help="A package directory or a model file")],
    *,
    name: Annotated[str, typer.Option("--name", help="Model name in the registry")],
    version: Annotated[str | None, typer.Option(
        "--version", help="Semantic version (default: next patch)", show_default=False)] = None,
    db: Db = None, store: Store = None, actor: Actor = None,
) -> None:
    """Register a package as NAME:VERSION. A bare model file is packed first, with golden
    rows made from its signature; one that raises on them is refused."""
    with _open(db, store) as reg:
        record = reg.push(package_or_file, name, version, actor=actor or _login())
    _out.print(f"pushed {record.ref} (sha256 {record.digest[:12]})")


def list_models(db: Db = None, store: Store = None, as_json: Json = False) -> None:
    """Every model: how many versions, the latest, and its aliases."""
    with _open(db, store) as reg:
        models = reg.models()
    if as_json:
        _print_json([asdict(m) for m in models])
        return
    table = Table("model", "versions", "latest", "aliases")
    for m in models:
        aliases = ", ".join(f"{a}→{v}" for a, v in m.aliases.items())
        table.add_row(m.name, str(m.versions), m.latest or "-", aliases or "-")
    _out.print(table)


def show(
    ref: Annotated[str, typer.Argument(help="heart, heart:1.2.0 or heart@production")],
    db: Db = None, store: Store = None, as_json: Json = False,
) -> None:
    """One version: flavor, digest, files, who pushed it, which aliases point at it."""
    with _open(db, store) as reg:
        record = reg.resolve(ref)
        pointing = [a for a, v in reg.aliases(record.name).items() if v == record.version]
    if as_json:
        _print_json(_version_dict(record) | {"aliases": pointing})
        return
    _out.print(f"[bold]{record.ref}[/bold]  flavor {record.flavor}  sha256 {record.digest}")
    _out.print(f"pushed {_when(record.created_at)} by {record.created_by or 'unknown'}; "
               f"aliases: {', '.join(pointing) or 'none'}")
    for path, sha in sorted(record.files.items()):
        _out.print(f"  {path}  {sha}")


def alias(
    name: Annotated[str, typer.Argument(help="Model name")],
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="e.g. production")],
    version: Annotated[str, typer.Argument(help="Target version, e.g. 1.2.0")],
    *,
    reason: Annotated[str | None, typer.Option("--reason", help="Recorded with the move")] = None,
    db: Db = None, store: Store = None, actor: Actor = None,
) -> None:
    """Point NAME@ALIAS at VERSION (atomically, recorded). VERSION is loaded and checked
    first: one that raises on its golden rows, or on those of the current target, is refused
    and the alias stays."""
    with _open(db, store) as reg:
        move = reg.set_alias(name, alias_name, version, actor=actor or _login(), reason=reason,
                             check=True)
    _out.print(_describe(move))


def rollback(
    name: Annotated[str, typer.Argument(help="Model name")],
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="e.g. production")],
    *,
    reason: Annotated[str | None, typer.Option("--reason", help="Recorded with the move")] = None,
    db: Db = None, store: Store = None, actor: Actor = None,
) -> None:
    """Move NAME@ALIAS back to the target it had before (checked first, as for alias)."""
    with _open(db, store) as reg:
        move = reg.rollback(name, alias_name, actor=actor or _login(), reason=reason,
                            check=True)
    _out.print(_describe(move))


def history(
    name: Annotated[str, typer.Argument(help="Model name")],
    alias_name: Annotated[str | None, typer.Option("--alias", help="Only this alias")] = None,
    db: Db = None, store: Store = None, as_json: Json = False,
) -> None:
    """Every alias move of a model, oldest first."""
    with _open(db, store) as reg:
        moves = reg.history(name, alias_name)
    if as_json:
        _print_json([asdict(m) for m in moves])
        return
    table = Table("when", "alias", "from", "to", "kind", "by", "reason")
    for m in moves:
        table.add_row(_when(m.at), m.alias, m.from_version or "-", m.to_version, m.kind,
                      m.actor or "-", m.reason or "")
    _out.print(table)


def delete(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION, e.g. heart:1.0.0")],
    db: Db = None, store: Store = None,
) -> None:
    """Forget one version (refused while an alias points at it)."""
    parsed = parse_ref(ref)
    if parsed.version is None:
        raise InvalidInput(f"'{ref}' names no version; delete takes NAME:VERSION, "
                           "e.g. heart:1.0.0", field="ref")
    with _open(db, store) as reg:
        reg.delete(parsed.name, parsed.version)
    _out.print(f"deleted {parsed}")


def _open(db: str | None, store: Path | None) -> Registry:
    settings = Settings()
    return Registry.open(db or settings.registry_db, store or settings.registry_store)


def _login() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (e.g. a bare container)
        return None


def _describe(move: AliasMove) -> str:
    if move.kind == "unchanged":
        return f"{move.name}@{move.alias} already points at {move.to_version}"
    verb = "rolled back" if move.kind == "rollback" else "moved"
    return f"{verb} {move.name}@{move.alias}: {move.from_version or '(unset)'} → {move.to_version}"


def _version_dict(record: ModelVersion) -> dict[str, Any]:
    data = asdict(record)
    data.pop("manifest")
    data["files"] = dict(record.files)
    return data


def _when(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, default=str, indent=2))
