"""Versions and aliases in the catalog, each behaviour on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from modelport.errors import Conflict, InvalidInput, ModelNotFound
from modelport.registry import Registry


def test_push_without_version_gives_next_patch(registry: Registry, package: Path) -> None:
    assert registry.push(package, "heart").version == "1.0.0"
    assert registry.push(package, "heart").version == "1.0.1"


def test_push_with_version_keeps_it(registry: Registry, package: Path) -> None:
    registry.push(package, "heart", "1.2.0")
    assert registry.push(package, "heart").version == "1.2.1"


def test_push_of_an_existing_version_is_a_conflict(registry: Registry, package: Path) -> None:
    registry.push(package, "heart", "1.2.0")
    with pytest.raises(Conflict, match=r"heart:1\.2\.0 is already registered.*1\.2\.1"):
        registry.push(package, "heart", "1.2.0")


def test_push_refuses_a_version_that_is_not_semantic(registry: Registry, package: Path) -> None:
    with pytest.raises(InvalidInput, match=r"field 'version'.*'1\.2' is not a semantic version"):
        registry.push(package, "heart", "1.2")


def test_registered_manifest_carries_the_registry_name_and_version(
        registry: Registry, package: Path) -> None:
    record = registry.push(package, "heart", "2.0.0", actor="ci")
    manifest = yaml.safe_load(registry.get("heart", "2.0.0").manifest)
    assert (manifest["name"], manifest["version"]) == ("heart", "2.0.0")
    assert record.created_by == "ci"


def test_resolve_without_version_gives_the_highest(registry: Registry, package: Path) -> None:
    for version in ("1.9.0", "1.10.0", "1.10.1-rc.1"):
        registry.push(package, "heart", version)
    assert registry.resolve("heart").version == "1.10.1-rc.1"
    assert registry.resolve("heart:1.9.0").version == "1.9.0"


def test_resolve_an_alias(registry: Registry, package: Path) -> None:
    registry.push(package, "heart")
    registry.push(package, "heart")
    registry.set_alias("heart", "production", "1.0.0")
    assert registry.resolve("heart@production").version == "1.0.0"


@pytest.mark.parametrize(("ref", "message"), [
    ("nope", "no model named 'nope'"),
    ("heart:9.9.9", r"no version 9\.9\.9 \(registered: 1\.0\.0\)"),
    ("heart@staging", "no alias 'staging'"),
], ids=["model", "version", "alias"])
def test_resolve_of_something_unknown_says_what(registry: Registry, package: Path,
                                                ref: str, message: str) -> None:
    registry.push(package, "heart")
    with pytest.raises(ModelNotFound, match=message):
        registry.resolve(ref)


def test_versions_are_listed_in_semantic_order(registry: Registry, package: Path) -> None:
    for version in ("1.10.0", "1.2.0", "1.9.0"):
        registry.push(package, "heart", version)
    assert [v.version for v in registry.versions("heart")] == ["1.2.0", "1.9.0", "1.10.0"]


def test_models_summarise_versions_and_aliases(registry: Registry, package: Path) -> None:
    registry.push(package, "heart")
    registry.push(package, "heart")
    registry.push(package, "iris")
    registry.set_alias("heart", "production", "1.0.0")
    summary = {m.name: m for m in registry.models()}
    assert (summary["heart"].versions, summary["heart"].latest) == (2, "1.0.1")
    assert summary["heart"].aliases == {"production": "1.0.0"}
    assert summary["iris"].aliases == {}


def test_alias_move_is_recorded_with_from_to_actor_reason(registry: Registry,
                                                          package: Path) -> None:
    registry.push(package, "heart")
    registry.push(package, "heart")
    registry.set_alias("heart", "production", "1.0.0", actor="alice")
    registry.set_alias("heart", "production", "1.0.1", actor="bob", reason="better AUC")
    moves = registry.history("heart")
    assert [(m.from_version, m.to_version, m.actor, m.reason) for m in moves] == [
        (None, "1.0.0", "alice", None), ("1.0.0", "1.0.1", "bob", "better AUC")]
    assert moves[0].at <= moves[1].at and moves[1].at.tzinfo is not None


def test_alias_to_an_unknown_version_is_refused(registry: Registry, package: Path) -> None:
    registry.push(package, "heart")
    with pytest.raises(ModelNotFound, match=r"no version 2\.0\.0"):
        registry.set_alias("heart", "production", "2.0.0")
    assert registry.alias_target("heart", "production") is None


def test_moving_an_alias_where_it_points_records_nothing(registry: Registry,
                                                         package: Path) -> None:
    registry.push(package, "heart")
    registry.set_alias("heart", "production", "1.0.0")
    assert registry.set_alias("heart", "production", "1.0.0").kind == "unchanged"
    assert len(registry.history("heart")) == 1


def test_rollback_returns_to_the_previous_target(registry: Registry, package: Path) -> None:
    for _ in range(3):
        registry.push(package, "heart")
    for version in ("1.0.0", "1.0.1", "1.0.2"):
        registry.set_alias("heart", "production", version)
    move = registry.rollback("heart", "production", actor="oncall")
    assert (move.from_version, move.to_version, move.kind) == ("1.0.2", "1.0.1", "rollback")
    assert registry.alias_target("heart", "production") == "1.0.1"


def test_repeated_rollbacks_walk_further_back(registry: Registry, package: Path) -> None:
    for _ in range(3):
        registry.push(package, "heart")
    for version in ("1.0.0", "1.0.1", "1.0.2"):
        registry.set_alias("heart", "production", version)
    registry.rollback("heart", "production")
    assert registry.rollback("heart", "production").to_version == "1.0.0"
    with pytest.raises(Conflict, match="no earlier target"):
        registry.rollback("heart", "production")


def test_rollback_skips_a_deleted_version(registry: Registry, package: Path) -> None:
    for _ in range(3):
        registry.push(package, "heart")
    for version in ("1.0.0", "1.0.1", "1.0.2"):
        registry.set_alias("heart", "production", version)
    registry.set_alias("heart", "staging", "1.0.2")
    registry.rollback("heart", "production")
    registry.set_alias("heart", "production", "1.0.2")
    registry.delete("heart", "1.0.1")
    assert registry.rollback("heart", "production").to_version == "1.0.0"


def test_rollback_of_an_unset_alias_is_not_found(registry: Registry, package: Path) -> None:
    registry.push(package, "heart")
    with pytest.raises(ModelNotFound, match="no alias 'production' to roll back"):
        registry.rollback("heart", "production")


def test_delete_is_refused_while_an_alias_points_at_it(registry: Registry,
                                                       package: Path) -> None:
    registry.push(package, "heart")
    registry.set_alias("heart", "production", "1.0.0")
    with pytest.raises(Conflict, match=r"heart:1\.0\.0 is the target of alias production"):
        registry.delete("heart", "1.0.0")
    assert registry.get("heart", "1.0.0").version == "1.0.0"


def test_delete_forgets_the_version_and_keeps_the_history(registry: Registry,
                                                          package: Path) -> None:
    registry.push(package, "heart")
    registry.push(package, "heart")
    registry.set_alias("heart", "production", "1.0.0")
    registry.set_alias("heart", "production", "1.0.1")
    registry.delete("heart", "1.0.0")
    assert [v.version for v in registry.versions("heart")] == ["1.0.1"]
    assert len(registry.history("heart")) == 2


def test_aliases_lists_every_alias_of_a_model(registry: Registry, package: Path) -> None:
    registry.push(package, "heart")
    registry.push(package, "heart")
    registry.set_alias("heart", "production", "1.0.0")
    registry.set_alias("heart", "staging", "1.0.1")
    assert registry.aliases("heart") == {"production": "1.0.0", "staging": "1.0.1"}


def test_history_of_one_alias_leaves_the_others_out(registry: Registry, package: Path) -> None:
    registry.push(package, "heart")
    registry.set_alias("heart", "production", "1.0.0")
    registry.set_alias("heart", "staging", "1.0.0")
    assert [m.alias for m in registry.history("heart", "staging")] == ["staging"]
