"""``modelport rollout …`` against a real server (uvicorn on 127.0.0.1, API key required)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from modelport.cli.rollout import ACTOR_HEADER, register
from modelport.config import Settings
from modelport.errors import ConfigError, Conflict, InvalidInput, Unauthorized
from modelport.registry import Registry
from modelport.server import admin
from modelport.server.factory import build_app
from tests.registry.live import free_port, serving
from tests.registry.pkgs import broken_golden

Cli = Callable[..., Result]
KEY = "k-rollout"


@pytest.fixture
def server(sqlite_url: str, tmp_path: Path, heart_package: Path) -> Iterator[str]:
    """heart 1.0.0, 1.1.0 and a broken 1.2.0; the server follows heart@production (1.0.0)."""
    store = tmp_path / "store"
    with Registry.open(sqlite_url, store) as reg:
        for version in ("1.0.0", "1.1.0"):
            reg.push(heart_package, "heart", version)
        reg.push(broken_golden(heart_package, tmp_path / "bad"), "heart", "1.2.0")
        reg.set_alias("heart", "production", "1.0.0")
    settings = Settings(model=["heart@production"], registry_db=sqlite_url,
                        registry_store=store, registry_poll_s=60, swap_grace_s=0,
                        admin_keys=[KEY])
    with serving(build_app(settings)) as url:
        yield url


@pytest.fixture
def cli(server: str) -> Cli:
    """``rollout COMMAND URL ARGS`` with the admin key from MODELPORT_ADMIN_KEY."""
    app = typer.Typer()
    register(app)
    runner = CliRunner(env={"MODELPORT_ADMIN_KEY": KEY})

    def run(command: str, *args: str) -> Result:
        return runner.invoke(app, ["rollout", command, server, *args])

    return run


def _version(url: str, records: list[dict[str, Any]]) -> str:
    answer = httpx.post(f"{url}/models/heart/predict", json={"instances": records[:1]},
                        headers={"authorization": f"Bearer {KEY}"})
    return answer.headers["x-model-version"]


def test_status_shows_the_serving_version_and_the_alias_followed(cli: Cli) -> None:
    table = cli("status", "--model", "heart")
    assert table.exit_code == 0, table.output
    assert "heart" in table.output and "@production" in table.output
    heart = json.loads(cli("status", "--json").output)["heart"]
    assert (heart["default"], heart["follow"]["target"]) == ("1.0.0", "1.0.0")


def test_alias_switches_the_server_before_the_command_returns(
        cli: Cli, server: str, records: list[dict[str, Any]]) -> None:
    result = cli("alias", "heart", "production", "1.1.0", "--reason", "better recall")
    assert result.exit_code == 0, result.output
    assert "moved heart@production: 1.0.0 → 1.1.0" in result.output
    assert f"{server} serves heart:1.1.0" in result.output
    assert _version(server, records) == "1.1.0"


def test_alias_to_a_broken_version_is_refused_and_the_live_one_keeps_serving(
        cli: Cli, server: str, records: list[dict[str, Any]]) -> None:
    result = cli("alias", "heart", "production", "1.2.0")
    assert isinstance(result.exception, Conflict)
    assert "golden check failed for heart:1.2.0" in str(result.exception)
    assert _version(server, records) == "1.0.0"
    heart = json.loads(cli("status", "--json").output)["heart"]
    assert (heart["follow"]["target"], heart["refused"]["version"]) == ("1.0.0", "1.2.0")


def test_rollback_takes_effect_on_the_server(cli: Cli, server: str,
                                             records: list[dict[str, Any]]) -> None:
    cli("alias", "heart", "production", "1.1.0")
    result = cli("rollback", "heart", "production", "--reason", "latency")
    assert "rolled back heart@production: 1.1.0 → 1.0.0" in result.output
    assert _version(server, records) == "1.0.0"


def test_without_a_key_the_error_says_how_to_give_one(server: str) -> None:
    app = typer.Typer()
    register(app)
    result = CliRunner(env={"MODELPORT_ADMIN_KEY": None}).invoke(app, ["rollout", "status", server])
    assert isinstance(result.exception, Unauthorized)
    assert "--admin-key" in str(result.exception)


def test_a_server_that_is_not_there_is_a_clear_error() -> None:
    app = typer.Typer()
    register(app)
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["rollout", "status", url])
    assert isinstance(result.exception, ConfigError)
    assert f"cannot reach {url}" in str(result.exception)


def test_weights_split_traffic_between_loaded_versions(cli: Cli) -> None:
    assert "loaded heart:1.1.0" in cli("load", "heart", "1.1.0").output
    result = cli("traffic", "heart", "--weights", "1.0.0=90,1.1.0=10")
    assert result.exit_code == 0, result.output
    assert "1.0.0 90% · 1.1.0 10%" in result.output
    assert "1.0.0 90% · 1.1.0 10%" in cli("traffic", "heart").output


def test_canary_then_step_it_up(cli: Cli, server: str) -> None:
    cli("load", "heart", "1.1.0")
    assert "1.1.0 (canary) 5%" in cli("traffic", "heart", "--canary", "1.1.0",
                                      "--percent", "5").output
    assert "canary 1.1.0 5% → 25%" in cli("canary-step", "heart", "--to", "25").output
    assert "canary 1.1.0 25% → 35%" in cli("canary-step", "heart", "--by", "10").output


def test_shadow_then_sticky_then_clear(cli: Cli) -> None:
    cli("load", "heart", "1.1.0")
    assert "1.0.0 (primary) 100%; shadow 1.1.0" in cli("traffic", "heart",
                                                       "--shadow", "1.1.0").output
    sticky = cli("traffic", "heart", "--sticky-header", "X-User").output
    assert "shadow 1.1.0; sticky by X-User" in sticky
    assert "policy removed" in cli("traffic", "heart", "--clear").output
    assert "no policy" in cli("traffic", "heart").output


@pytest.mark.parametrize(("args", "field"), [
    (["--weights", "1.0.0=ninety"], "--weights"),
    (["--weights", "=5"], "--weights"),
    (["--percent", "5"], "--percent"),
    (["--canary", "1.1.0"], "--percent"),
    (["--weights", "1.0.0=1", "--clear"], "--clear"),
], ids=["weight-not-a-number", "no-version", "percent-alone", "canary-without-percent",
        "two-policies"])
def test_a_bad_traffic_command_names_the_option_before_calling(args: list[str],
                                                               field: str) -> None:
    app = typer.Typer()
    register(app)
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens: the CLI must not get that far
    result = CliRunner().invoke(app, ["rollout", "traffic", url, "heart", *args])
    assert isinstance(result.exception, InvalidInput), result.output
    assert f"'{field}'" in str(result.exception)


def test_a_policy_naming_a_version_not_loaded_is_refused_by_the_server(cli: Cli) -> None:
    result = cli("traffic", "heart", "--weights", "1.0.0=90,2.0.0=10")
    assert isinstance(result.exception, Conflict)
    assert "heart:2.0.0 is not served here" in str(result.exception)


def test_canary_step_without_a_canary_says_how_to_start_one(cli: Cli) -> None:
    result = cli("canary-step", "heart", "--to", "50")
    assert isinstance(result.exception, InvalidInput)
    assert "--canary VERSION --percent 5" in str(result.exception)


def test_unloading_a_version_in_the_policy_is_refused(cli: Cli) -> None:
    cli("load", "heart", "1.1.0")
    cli("traffic", "heart", "--weights", "1.0.0=1,1.1.0=1")
    assert isinstance(cli("unload", "heart", "1.1.0").exception, Conflict)
    cli("traffic", "heart", "--clear")
    assert "unloaded heart:1.1.0" in cli("unload", "heart", "1.1.0").output


def test_the_actor_header_is_the_one_the_server_reads() -> None:
    assert ACTOR_HEADER == admin.ACTOR_HEADER
