"""``modelport registry …`` commands: one library call each, plus formatting."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from modelport.cli.registry import register
from modelport.errors import Conflict, InvalidInput
from modelport.registry import Registry

Cli = Callable[..., Result]


@pytest.fixture
def cli(sqlite_url: str, tmp_path: Path) -> Cli:
    """Run ``registry ARGS`` against a fresh catalog; returns the click Result."""
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    common = ["--db", sqlite_url, "--store", str(tmp_path / "store")]

    def run(*args: str) -> Result:
        return runner.invoke(app, ["registry", *args, *common])

    return run


def test_push_prints_the_version_it_got(cli: Cli, package: Path) -> None:
    result = cli("push", str(package), "--name", "heart")
    assert result.exit_code == 0, result.output
    assert "pushed heart:1.0.0" in result.output


def test_push_with_a_version_that_is_not_semantic_fails(cli: Cli, package: Path) -> None:
    result = cli("push", str(package), "--name", "heart", "--version", "1.2")
    assert isinstance(result.exception, InvalidInput)


def test_alias_then_rollback_then_history(cli: Cli, heart_package: Path) -> None:
    cli("push", str(heart_package), "--name", "heart")
    cli("push", str(heart_package), "--name", "heart")
    assert "(unset) → 1.0.0" in cli("alias", "heart", "production", "1.0.0").output
    cli("alias", "heart", "production", "1.0.1", "--reason", "better", "--actor", "ana")
    assert "rolled back heart@production: 1.0.1 → 1.0.0" in cli(
        "rollback", "heart", "production").output
    moves = json.loads(cli("history", "heart", "--json").output)
    assert [(m["to_version"], m["kind"]) for m in moves] == [
        ("1.0.0", "move"), ("1.0.1", "move"), ("1.0.0", "rollback")]
    assert (moves[1]["actor"], moves[1]["reason"]) == ("ana", "better")


def test_list_and_show_report_aliases(cli: Cli, heart_package: Path) -> None:
    cli("push", str(heart_package), "--name", "heart", "--version", "1.2.0")
    cli("alias", "heart", "production", "1.2.0")
    listed = json.loads(cli("list", "--json").output)
    shown = json.loads(cli("show", "heart@production", "--json").output)
    assert listed == [{"name": "heart", "versions": 1, "latest": "1.2.0",
                       "aliases": {"production": "1.2.0"}}]
    assert (shown["version"], shown["aliases"]) == ("1.2.0", ["production"])
    assert "heart:1.2.0" in cli("show", "heart").output


def test_delete_is_refused_while_aliased(cli: Cli, heart_package: Path) -> None:
    cli("push", str(heart_package), "--name", "heart")
    cli("alias", "heart", "production", "1.0.0")
    assert isinstance(cli("delete", "heart:1.0.0").exception, Conflict)


def test_delete_needs_a_version(cli: Cli, package: Path) -> None:
    assert isinstance(cli("delete", "heart").exception, InvalidInput)


def test_the_modelport_command_has_the_registry_group(sqlite_url: str, tmp_path: Path,
                                                      package: Path) -> None:
    """End to end through the installed entry point: exit code 2 and one line on a conflict."""
    with Registry.open(sqlite_url, tmp_path / "store") as reg:
        reg.push(package, "heart")
    done = subprocess.run([sys.executable, "-m", "modelport", "registry", "push", str(package),
                           "--name", "heart", "--version", "1.0.0", "--db", sqlite_url,
                           "--store", str(tmp_path / "store")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "error: heart:1.0.0 is already registered" in done.stderr
