"""Nothing goes live before it answers golden rows: ``registry push`` of a bare artifact,
``registry alias``/``rollback``, and on a running server alias moves, rollbacks, loads (admin
and V2 repository), traffic changes and the alias follower refuse a candidate that fails its
own golden rows or raises on the live version's — and the live version keeps answering."""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from modelport.cli import registry as registry_cli
from modelport.cli import rollout as rollout_cli
from modelport.config import Settings
from modelport.errors import Conflict, GoldenCheckFailed
from modelport.golden import boundary_records
from modelport.package import load_model, open_package, write_manifest
from modelport.registry import Registry
from modelport.server.app import create_app
from modelport.server.factory import build_app
from tests.registry.brokenmodels import fails_above, log_pipeline
from tests.registry.live import serving

KEY = "k-gate"
MODEL_ERROR = r"(Input X contains (NaN|infinity)|non-finite)"
"""The log pipeline's failure: scikit-learn's own error (or NaN answers, were its check off)."""
GOOD, BARE, BROKEN, FAILS_OLD = "1.0.0", "1.1.0", "1.2.0", "2.0.0"


@pytest.fixture(scope="module")
def broken(heart_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The issue's Pipeline with a log step (every row NaN inside it), as a bare file."""
    return log_pipeline(heart_dir, tmp_path_factory.mktemp("broken") / "broken.joblib")


@pytest.fixture(scope="module")
def fails_old(heart_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example model raising on any age above 50: its generated golden rows (ages 0 and
    1) pass, the example package's real rows do not."""
    out = tmp_path_factory.mktemp("fails") / "fails.joblib"
    return fails_above(heart_dir, out, feature="age", limit=50)


def swapped(package: Path, artifact: Path, out: Path) -> Path:
    """``package`` with another artifact in it (sha256s rewritten, golden rows kept): a
    package edited by hand, or made before golden rows were checked."""
    shutil.copytree(package, out)
    shutil.copyfile(artifact, out / "model.joblib")
    write_manifest(open_package(out, verify=False))
    return out


@pytest.fixture
def reg(sqlite_url: str, tmp_path: Path, *, heart_package: Path, heart_model_path: Path,
        broken: Path, fails_old: Path) -> Iterator[Registry]:
    """heart 1.0.0 (golden rows from data), 1.1.0 (the same model packed bare), 1.2.0 (the
    broken pipeline in a hand-edited package), 2.0.0 (raises above age 50). production went
    1.0.0 -> 1.2.0 (moved without a check) -> 1.0.0: a rollback would go to 1.2.0."""
    with Registry.open(sqlite_url, tmp_path / "store") as registry:
        registry.push(heart_package, "heart", GOOD)
        registry.push(heart_model_path, "heart", BARE)
        registry.push(swapped(heart_package, broken, tmp_path / "edited"), "heart", BROKEN)
        registry.push(fails_old, "heart", FAILS_OLD)
        for version in (GOOD, BROKEN, GOOD):
            registry.set_alias("heart", "production", version)
        yield registry


# -- the registry, without a server ---------------------------------------------------------


def _registry_cli(sqlite_url: str, store: Path) -> Callable[..., Result]:
    app = typer.Typer()
    registry_cli.register(app)

    def run(*args: str) -> Result:
        return CliRunner().invoke(app, ["registry", *args, "--db", sqlite_url,
                                        "--store", str(store)])

    return run


def test_pushing_the_broken_pipeline_is_refused_and_stores_nothing(
        sqlite_url: str, tmp_path: Path, broken: Path) -> None:
    result = _registry_cli(sqlite_url, tmp_path / "store")("push", str(broken), "--name",
                                                            "heart")
    assert result.exit_code != 0
    assert isinstance(result.exception, GoldenCheckFailed)
    assert 'heart:1.0.0 (broken.joblib) refused: golden row 0 {"age": 0.0, ' in str(
        result.exception)
    assert re.search(MODEL_ERROR, str(result.exception))
    with Registry.open(sqlite_url, tmp_path / "store") as registry:
        assert registry.models() == []
    assert not (tmp_path / "store" / "objects").exists() or not any(
        (tmp_path / "store" / "objects").rglob("*"))


def test_the_refusal_names_the_version_the_push_would_have_made(reg: Registry,
                                                                broken: Path) -> None:
    before = [v.version for v in reg.versions("heart")]
    with pytest.raises(GoldenCheckFailed, match=r"^heart:2\.0\.1 \(broken\.joblib\) refused"):
        reg.push(broken, "heart")
    with pytest.raises(GoldenCheckFailed, match=r"^heart:3\.0\.0 \(broken\.joblib\) refused"):
        reg.push(broken, "heart", "3.0.0")
    assert [v.version for v in reg.versions("heart")] == before


def test_a_pushed_bare_artifact_carries_golden_rows_from_its_signature(
        sqlite_url: str, tmp_path: Path, heart_model_path: Path) -> None:
    with Registry.open(sqlite_url, tmp_path / "store") as registry:
        record = registry.push(heart_model_path, "heart")
        pkg = open_package(registry.fetch(record.ref))
    assert "golden.json" in record.files
    golden = pkg.golden()
    assert golden is not None and golden["inputs"] == boundary_records(pkg.signature)


def test_registry_alias_refuses_a_version_failing_its_golden_rows(
        reg: Registry, sqlite_url: str, tmp_path: Path) -> None:
    moves = len(reg.history("heart"))
    result = _registry_cli(sqlite_url, tmp_path / "store")("alias", "heart", "production",
                                                            BROKEN)
    assert result.exit_code != 0
    assert isinstance(result.exception, GoldenCheckFailed)
    assert re.search(rf"heart:1\.2\.0 refused: golden row 0 \{{.*\}}: .*{MODEL_ERROR}",
                     str(result.exception))
    assert reg.aliases("heart") == {"production": GOOD}
    assert len(reg.history("heart")) == moves


def test_registry_alias_refuses_a_version_raising_on_the_live_golden_inputs(
        reg: Registry, sqlite_url: str, tmp_path: Path) -> None:
    cli = _registry_cli(sqlite_url, tmp_path / "store")
    result = cli("alias", "heart", "production", FAILS_OLD)
    assert isinstance(result.exception, GoldenCheckFailed)
    assert re.search(r"heart:2\.0\.0 refused: golden row \d+ of the live version heart:1\.0\.0 "
                     r"\{.*\}: the model raised ValueError: age=\d+ is above 50",
                     str(result.exception))
    assert reg.aliases("heart")["production"] == GOOD
    # with nothing live to compare with, its own golden rows are all it must pass
    assert "(unset) → 2.0.0" in cli("alias", "heart", "staging", FAILS_OLD).output


def test_registry_rollback_refuses_a_broken_earlier_target(
        reg: Registry, sqlite_url: str, tmp_path: Path) -> None:
    assert reg.rollback_target("heart", "production") == BROKEN
    result = _registry_cli(sqlite_url, tmp_path / "store")("rollback", "heart", "production")
    assert isinstance(result.exception, GoldenCheckFailed)
    assert "heart:1.2.0 refused: golden row 0" in str(result.exception)
    assert reg.aliases("heart") == {"production": GOOD}


def test_a_rollback_checked_against_one_target_does_not_go_to_another(reg: Registry) -> None:
    """The target is checked before the transaction; if the alias moved meanwhile, refuse."""
    with pytest.raises(Conflict, match=r"moved meanwhile: a rollback now goes to 1\.2\.0"):
        reg.rollback("heart", "production", expect=BARE)
    assert reg.aliases("heart") == {"production": GOOD}


# -- a running server ---------------------------------------------------------------------


@dataclass
class Traffic:
    """Requests sent to the live version the whole time, and what answered them."""

    url: str
    records: list[dict[str, Any]]
    answers: list[tuple[int, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(headers={"authorization": f"Bearer {KEY}"}) as client:
            while not self.stop.wait(0.01):
                answer = client.post(f"{self.url}/models/heart/predict",
                                     json={"instances": self.records[:1]})
                self.answers.append((answer.status_code,
                                     answer.headers.get("x-model-version", "")))


@pytest.fixture
def live(reg: Registry, sqlite_url: str, tmp_path: Path,
         records: list[dict[str, Any]]) -> Iterator[Traffic]:
    """A real server following heart@production (1.0.0), answering requests all along."""
    settings = Settings(model=["heart@production"], registry_db=sqlite_url,
                        registry_store=tmp_path / "store", registry_poll_s=60, swap_grace_s=0,
                        admin_keys=[KEY])
    with serving(build_app(settings)) as url:
        traffic = Traffic(url, records)
        thread = threading.Thread(target=traffic.run, daemon=True)
        thread.start()
        try:
            yield traffic
        finally:
            traffic.stop.set()
            thread.join(timeout=10)


def _admin(live: Traffic, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(method, f"{live.url}/admin/{path}", json=body, timeout=60,
                         headers={"authorization": f"Bearer {KEY}"})


def _still_serving(live: Traffic) -> None:
    """Every request sent so far — while the candidate was checked and refused, and three more
    after — was answered 200 by the live version."""
    wanted = len(live.answers) + 3
    for _ in range(500):
        if len(live.answers) >= wanted:
            break
        live.stop.wait(0.02)
    assert len(live.answers) >= wanted
    assert set(live.answers) == {(200, GOOD)}


def test_an_alias_move_to_a_broken_version_is_refused_and_the_live_one_serves(
        live: Traffic, reg: Registry) -> None:
    answer = _admin(live, "PUT", "models/heart/aliases/production", {"version": BROKEN})
    assert answer.status_code == 409, answer.text
    assert re.search(rf"heart:1\.2\.0 refused: golden row 0 \{{.*\}}: .*{MODEL_ERROR}",
                     answer.json()["error"])
    assert reg.aliases("heart")["production"] == GOOD
    _still_serving(live)


def test_an_alias_move_to_a_version_raising_on_the_live_inputs_is_refused(
        live: Traffic) -> None:
    answer = _admin(live, "PUT", "models/heart/aliases/production", {"version": FAILS_OLD})
    assert answer.status_code == 409, answer.text
    assert "of the live version heart:1.0.0" in answer.json()["error"]
    _still_serving(live)


def test_a_rollback_to_a_broken_version_is_refused(live: Traffic, reg: Registry) -> None:
    answer = _admin(live, "POST", "models/heart/aliases/production/rollback")
    assert answer.status_code == 409, answer.text
    assert "heart:1.2.0 refused: golden row 0" in answer.json()["error"]
    assert reg.aliases("heart")["production"] == GOOD
    _still_serving(live)


def test_loading_a_broken_version_is_refused(live: Traffic) -> None:
    answer = _admin(live, "POST", f"models/heart/versions/{BROKEN}/load")
    assert answer.status_code == 409, answer.text
    assert "heart:1.2.0 refused: golden row 0" in answer.json()["error"]
    assert _admin(live, "GET", "models").json()["heart"]["versions"] == [GOOD]
    _still_serving(live)


def test_a_traffic_policy_with_a_version_raising_on_the_live_inputs_is_refused(
        live: Traffic) -> None:
    """2.0.0 is loaded while the bare 1.1.0 (ages 0 and 1) is live; once 1.0.0 is live again
    a canary of 2.0.0 would raise on 1.0.0's golden rows."""
    assert _admin(live, "POST", f"models/heart/versions/{FAILS_OLD}/load").status_code == 409
    moved = _admin(live, "PUT", "models/heart/aliases/production", {"version": BARE})
    assert moved.status_code == 200, moved.text
    assert _admin(live, "POST", f"models/heart/versions/{FAILS_OLD}/load").status_code == 200
    back = _admin(live, "PUT", "models/heart/aliases/production", {"version": GOOD})
    assert back.json()["follow"]["serving"] == GOOD
    policy = {"arms": [{"version": GOOD, "weight": 90}, {"version": FAILS_OLD, "weight": 10}]}
    answer = _admin(live, "PUT", "models/heart/traffic", policy)
    assert answer.status_code == 409, answer.text
    assert re.search(r"heart:2\.0\.0 refused: golden row \d+ of the live version heart:1\.0\.0 "
                     r"\{.*\}: the model raised ValueError: age=\d+ is above 50",
                     answer.json()["error"])
    assert _admin(live, "GET", "models/heart/traffic").status_code == 404  # no policy set


def test_refusals_are_counted_and_shown_by_rollout_status(live: Traffic) -> None:
    _admin(live, "PUT", "models/heart/aliases/production", {"version": BROKEN})
    _admin(live, "POST", f"models/heart/versions/{BROKEN}/load")
    metrics = httpx.get(f"{live.url}/metrics", headers={"authorization": f"Bearer {KEY}"}).text
    for action in ("alias_move", "load"):
        assert (f'modelport_rollout_refusals_total{{action="{action}",model="heart",'
                f'version="1.2.0"}} 1.0') in metrics
    app = typer.Typer()
    rollout_cli.register(app)
    status = CliRunner(env={"MODELPORT_ADMIN_KEY": KEY}).invoke(
        app, ["rollout", "status", live.url])
    assert status.exit_code == 0, status.output
    assert "refused heart:1.2.0 (load): golden row 0 {" in status.output
    refused = _admin(live, "GET", "models").json()["heart"]["refused"]
    assert (refused["version"], refused["action"]) == (BROKEN, "load")
    _still_serving(live)


def test_the_follower_refuses_a_move_made_elsewhere_without_a_check(
        reg: Registry, sqlite_url: str, tmp_path: Path, records: list[dict[str, Any]]) -> None:
    settings = Settings(model=["heart@production"], registry_db=sqlite_url,
                        registry_store=tmp_path / "store", registry_poll_s=0.1,
                        swap_grace_s=0, admin_keys=[KEY])
    with serving(build_app(settings)) as url:
        traffic = Traffic(url, records)
        reg.set_alias("heart", "production", FAILS_OLD)  # an old client: no check
        thread = threading.Thread(target=traffic.run, daemon=True)
        thread.start()
        try:
            refused = None
            for _ in range(100):
                refused = _admin(traffic, "GET", "models").json()["heart"]["refused"]
                if refused is not None:
                    break
                traffic.stop.wait(0.05)
            assert refused is not None and (refused["version"], refused["action"]) == (
                FAILS_OLD, "follow")
            metrics = httpx.get(f"{url}/metrics", headers={"authorization": f"Bearer {KEY}"})
            assert ('modelport_rollout_refusals_total{action="follow",model="heart",'
                    'version="2.0.0"} 1.0') in metrics.text
        finally:
            traffic.stop.set()
            thread.join(timeout=10)
    assert set(traffic.answers) == {(200, GOOD)}


def test_a_v2_repository_load_of_a_model_failing_its_golden_rows_is_refused(
        heart_dir: Path, heart_package: Path, tmp_path: Path) -> None:
    """A package whose model raises on some of its golden rows (not on its example row, so it
    warms up and serves) is unloaded, then refused when loaded again."""
    golden = open_package(heart_package).golden()
    example = open_package(heart_package).signature.feature("age").example
    assert golden is not None and max(r["age"] for r in golden["inputs"]) > example
    model = fails_above(heart_dir, tmp_path / "fails.joblib", feature="age", limit=example)
    pkg = swapped(heart_package, model, tmp_path / "edited")
    app = create_app([load_model(pkg)], Settings(admin_keys=[KEY]))
    with serving(app) as url:
        headers = {"authorization": f"Bearer {KEY}"}
        repo = f"{url}/v2/repository/models/heart"
        assert httpx.post(f"{repo}/unload", headers=headers).status_code == 200
        answer = httpx.post(f"{repo}/load", headers=headers)
        assert answer.status_code == 409, answer.text
        assert re.search(r"heart:1\.0\.0 refused: golden row \d+ \{.*\}: the model raised "
                         r"ValueError: age=\d+ is above", answer.json()["error"])
        index = httpx.post(f"{url}/v2/repository/index", headers=headers).json()
        assert index == [{"name": "heart", "version": "", "state": "UNAVAILABLE",
                          "reason": "unloaded"}]
