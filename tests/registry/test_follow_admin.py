"""The admin API over a registry-served app: alias moves, rollback, load/unload, traffic."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from modelport.config import Settings
from modelport.registry import Registry
from modelport.server.admin import admin_extension
from modelport.server.app import create_app
from modelport.server.rollout import follow_extension, load_ref


@pytest.fixture
def reg(sqlite_url: str, tmp_path: Path, heart_package: Path) -> Iterator[Registry]:
    """heart 1.0.0 and 1.1.0, production -> 1.0.0."""
    with Registry.open(sqlite_url, tmp_path / "store") as registry:
        registry.push(heart_package, "heart", "1.0.0")
        registry.push(heart_package, "heart", "1.1.0")
        registry.set_alias("heart", "production", "1.0.0")
        yield registry


ADMIN = "admin-secret"


@pytest.fixture
def admin(reg: Registry) -> Iterator[TestClient]:
    """An app serving heart@production, following it (slow poll: the API triggers checks)."""
    app = create_app([load_ref(reg, "heart@production")], Settings(admin_keys=[ADMIN]),
                     extensions=[follow_extension(reg, "heart", "production", interval_s=60,
                                                  grace_s=0), admin_extension(reg)])
    with TestClient(app, headers={"authorization": f"Bearer {ADMIN}"}) as client:
        yield client


def _version(client: TestClient, records: list[Any]) -> str:
    answer = client.post("/models/heart/predict", json={"instances": records[:1]})
    return str(answer.json()["version"])


def test_moving_the_alias_takes_effect_before_the_answer(admin: TestClient, reg: Registry,
                                                         records: list[Any]) -> None:
    answer = admin.put("/admin/models/heart/aliases/production",
                       json={"version": "1.1.0", "reason": "better"},
                       headers={"x-modelport-actor": "ana"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["follow"]["event"]["outcome"] == "switched"
    assert _version(admin, records) == "1.1.0"
    assert (reg.history("heart")[-1].actor, reg.history("heart")[-1].reason) == ("ana", "better")


def test_rollback_is_one_call(admin: TestClient, records: list[Any]) -> None:
    admin.put("/admin/models/heart/aliases/production", json={"version": "1.1.0"})
    answer = admin.post("/admin/models/heart/aliases/production/rollback")
    assert answer.json()["move"]["to_version"] == "1.0.0"
    assert _version(admin, records) == "1.0.0"


def test_a_move_without_a_version_names_the_field(admin: TestClient) -> None:
    answer = admin.put("/admin/models/heart/aliases/production", json={})
    assert (answer.status_code, answer.json()["field"]) == (422, "version")


def test_load_then_set_a_traffic_policy(admin: TestClient) -> None:
    assert admin.post("/admin/models/heart/versions/1.1.0/load").status_code == 200
    policy = {"arms": [{"version": "1.0.0", "weight": 90}, {"version": "1.1.0", "weight": 10}]}
    assert admin.put("/admin/models/heart/traffic", json=policy).status_code == 200
    got = admin.get("/admin/models/heart/traffic").json()["policy"]
    assert [a["weight"] for a in got["arms"]] == [90, 10]


def test_a_policy_naming_a_version_not_loaded_is_refused(admin: TestClient) -> None:
    policy = {"arms": [{"version": "1.0.0"}, {"version": "2.0.0"}]}
    answer = admin.put("/admin/models/heart/traffic", json=policy)
    # a well-formed policy the server's state refuses: a conflict (load it first), not bad input
    assert answer.status_code == 409 and "heart:2.0.0 is not served" in answer.json()["error"]


def test_unloading_a_version_in_the_policy_is_refused(admin: TestClient) -> None:
    admin.post("/admin/models/heart/versions/1.1.0/load")
    admin.put("/admin/models/heart/traffic", json={"arms": [{"version": "1.1.0"}]})
    assert admin.post("/admin/models/heart/versions/1.1.0/unload").status_code == 409
    admin.delete("/admin/models/heart/traffic")
    assert admin.post("/admin/models/heart/versions/1.1.0/unload").status_code == 200


def test_models_lists_versions_policy_and_follow_status(admin: TestClient) -> None:
    heart = admin.get("/admin/models").json()["heart"]
    assert (heart["default"], heart["versions"]) == ("1.0.0", ["1.0.0"])
    assert heart["follow"]["alias"] == "production"


def test_admin_routes_need_the_admin_key_not_a_prediction_key(reg: Registry) -> None:
    app = create_app([load_ref(reg, "heart@production")],
                     Settings(api_keys=["k1"], admin_keys=[ADMIN]),
                     extensions=[admin_extension(reg)])
    with TestClient(app) as client:
        assert client.get("/admin/models").status_code == 401
        assert client.get("/admin/models", headers={"authorization": "Bearer k1"}
                          ).status_code == 403
        assert client.get("/admin/models", headers={"authorization": f"Bearer {ADMIN}"}
                          ).status_code == 200
        # the admin key also opens the prediction routes
        assert client.get("/models", headers={"x-api-key": ADMIN}).status_code == 200


def test_without_an_admin_key_mutations_are_off_and_say_how_to_turn_them_on(
        reg: Registry) -> None:
    app = create_app([load_ref(reg, "heart@production")], Settings(),
                     extensions=[admin_extension(reg)])
    with TestClient(app) as client:
        answer = client.put("/admin/models/heart/aliases/production", json={"version": "1.1.0"})
        assert answer.status_code == 403
        assert "MODELPORT_ADMIN_KEYS" in answer.json()["error"]
        assert "--admin-keys-file" in answer.json()["error"]
        assert client.post("/v2/repository/models/heart/unload").status_code == 403
        assert client.get("/ready").status_code == 200
    assert reg.alias_target("heart", "production") == "1.0.0"
