"""Semantic versions and references: parsed the same way by the catalog and the CLI."""

from __future__ import annotations

import pytest

from modelport.errors import InvalidInput
from modelport.registry import Ref, next_patch, parse_ref, parse_version
from modelport.registry.versions import latest


@pytest.mark.parametrize("text", ["1.2", "1", "v1.2.0", "1.2.0.0", "01.2.0", "1.2.x", ""],
                         ids=["two-parts", "one-part", "v-prefix", "four-parts",
                              "leading-zero", "letter", "empty"])
def test_a_version_that_is_not_semantic_is_refused_naming_the_field(text: str) -> None:
    with pytest.raises(InvalidInput, match=r"field 'version'.*not a semantic version"):
        parse_version(text)


def test_prerelease_and_build_parts_are_kept() -> None:
    assert str(parse_version("1.2.0-rc.1+build.5")) == "1.2.0-rc.1+build.5"


@pytest.mark.parametrize(("existing", "expected"), [
    ([], "1.0.0"),
    (["1.0.0"], "1.0.1"),
    (["1.0.9", "1.0.10", "0.9.0"], "1.0.11"),
    (["1.2.0", "1.3.0-rc.1"], "1.3.0"),
], ids=["first", "one", "numeric-order", "after-prerelease"])
def test_next_patch_is_one_above_the_highest(existing: list[str], expected: str) -> None:
    assert next_patch(existing) == expected


def test_latest_orders_by_precedence_not_text() -> None:
    assert latest(["1.9.0", "1.10.0", "1.10.0-rc.2", "1.10.0-rc.10"]) == "1.10.0"


def test_prerelease_identifiers_compare_numerically() -> None:
    assert latest(["1.0.0-rc.2", "1.0.0-rc.10", "1.0.0-alpha"]) == "1.0.0-rc.10"


@pytest.mark.parametrize(("text", "ref"), [
    ("heart", Ref("heart")),
    ("heart:1.2.0", Ref("heart", version="1.2.0")),
    ("heart@production", Ref("heart", alias="production")),
    ("heart.v2-x@canary", Ref("heart.v2-x", alias="canary")),
], ids=["latest", "version", "alias", "dotted-name"])
def test_references_name_a_model_and_a_version_or_an_alias(text: str, ref: Ref) -> None:
    assert parse_ref(text) == ref
    assert str(parse_ref(text)) == text


@pytest.mark.parametrize(("text", "field"), [
    ("heart:1.2", "version"), ("heart@1x", "alias"), ("-heart", "name"), ("he art", "name"),
], ids=["bad-version", "alias-starts-with-digit", "name-starts-with-dash", "space"])
def test_a_bad_reference_names_the_part_that_is_wrong(text: str, field: str) -> None:
    with pytest.raises(InvalidInput, match=f"field '{field}'"):
        parse_ref(text)
