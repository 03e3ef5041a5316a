"""Traffic policies: split accuracy, sticky assignment, canary steps, shadow copies."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from modelport.errors import InvalidInput
from modelport.traffic import Arm, Assignment, TrafficPolicy, sticky_point

N = 10_000


def _shares(policy: TrafficPolicy, keys: list[str | None], seed: int = 7) -> Counter[str]:
    rng = random.Random(seed)
    return Counter(policy.choose(key, rng).version for key in keys)


def test_a_90_10_split_lands_within_2_points_over_10000_requests() -> None:
    policy = TrafficPolicy.weighted({"1.0.0": 90, "1.1.0": 10})
    counts = _shares(policy, [None] * N)
    assert abs(counts["1.1.0"] / N - 0.10) <= 0.02


def test_a_90_10_split_by_sticky_keys_lands_within_2_points() -> None:
    """Sticky keys hash to uniform points: 10,000 distinct users split 90/10 too."""
    policy = TrafficPolicy.weighted({"1.0.0": 90, "1.1.0": 10}, sticky_header="x-user-id")
    counts = _shares(policy, [f"user-{i}" for i in range(N)])
    assert abs(counts["1.1.0"] / N - 0.10) <= 0.02


def test_a_sticky_key_never_changes_version_while_the_policy_is_unchanged() -> None:
    policy = TrafficPolicy.weighted({"1.0.0": 50, "1.1.0": 30, "1.2.0": 20})
    first = {f"u{i}": policy.choose(f"u{i}", random.Random(1)).version for i in range(500)}
    for seed in range(5):
        rng = random.Random(seed)
        assert all(policy.choose(k, rng).version == v for k, v in first.items())


def test_sticky_points_are_the_same_in_every_process_and_release() -> None:
    """A fixed expected value: Python's per-process salted hash() could not give this."""
    assert sticky_point("user-42") == pytest.approx(0.3090290850626393, abs=1e-15)


def test_a_salt_reshuffles_sticky_points() -> None:
    assert sticky_point("user-42", "reshuffle") != sticky_point("user-42")


def test_stepping_a_canary_up_only_moves_users_into_it() -> None:
    small = TrafficPolicy.canary("1.0.0", "1.1.0", 5, sticky_header="x-user-id")
    large = small.with_canary_percent(25)
    keys = [f"u{i}" for i in range(2000)]
    rng = random.Random(0)
    in_small = {k for k in keys if small.choose(k, rng).arm == "canary"}
    in_large = {k for k in keys if large.choose(k, rng).arm == "canary"}
    assert in_small < in_large
    assert large.canary_percent == pytest.approx(25)


def test_a_canary_at_0_percent_sends_nothing_to_the_candidate() -> None:
    policy = TrafficPolicy.canary("1.0.0", "1.1.0", 0)
    assert set(_shares(policy, [None] * 1000)) == {"1.0.0"}


def test_a_canary_at_100_percent_sends_everything_to_the_candidate() -> None:
    policy = TrafficPolicy.canary("1.0.0", "1.1.0", 100)
    assert set(_shares(policy, [None] * 1000)) == {"1.1.0"}


def test_shadow_answers_with_the_primary_and_mirrors_to_the_candidate() -> None:
    policy = TrafficPolicy.shadowing("1.0.0", "1.1.0")
    assert policy.choose(None, random.Random(0)) == Assignment("1.0.0", "primary", ("1.1.0",))


def test_a_shadow_version_is_not_mirrored_to_itself() -> None:
    policy = TrafficPolicy(arms=(Arm(version="1.0.0"), Arm(version="1.1.0")), shadow=("1.1.0",))
    chosen = [policy.choose(None, random.Random(s)) for s in range(50)]
    assert all(a.version not in a.shadow_versions for a in chosen)


def test_assignment_says_whether_a_sticky_key_decided() -> None:
    policy = TrafficPolicy.single("1.0.0")
    assert policy.choose("u1", random.Random(0)).sticky
    assert not policy.choose(None, random.Random(0)).sticky


def test_a_policy_round_trips_through_json() -> None:
    policy = TrafficPolicy.canary("1.0.0", "1.1.0", 10, sticky_header="x-user-id")
    assert TrafficPolicy.parse(policy.model_dump(mode="json")) == policy


@pytest.mark.parametrize(("data", "field", "message"), [
    ({"arms": [{"version": "1.0.0", "weight": -1}]}, "arms.0.weight", "greater than or equal"),
    ({"arms": [{"version": "1.0.0", "weight": 0}]}, "policy", "add up to more than 0"),
    ({"arms": []}, "arms", "at least 1"),
    ({"arms": [{"version": "1.0.0"}], "weights": {}}, "weights", "Extra inputs"),
    ({"arms": [{"version": "1.0.0", "weight": float("nan")}]}, "arms.0.weight", "finite"),
    ({"arms": [{"version": "1.0.0", "weight": "2"}]}, "arms.0.weight", "valid number"),
    ({"arms": [{"version": "1.0.0", "name": "a\nb"}]}, "arms.0.name", "pattern"),
], ids=["negative", "all-zero", "no-arms", "unknown-field", "nan", "string-weight",
        "name-unfit-for-a-header"])
def test_an_invalid_policy_names_the_field(data: dict[str, object], field: str,
                                           message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        TrafficPolicy.parse(data)
    assert caught.value.field == field


def test_one_version_may_be_in_two_arms_as_an_a_a_test() -> None:
    """Each arm keeps its label, so the two halves can be compared."""
    policy = TrafficPolicy.parse({"arms": [{"version": "1.0.0", "name": "a"},
                                           {"version": "1.0.0", "name": "b"}]})
    picked = {policy.choose(str(key), random.Random(0)).arm for key in range(200)}
    assert picked == {"a", "b"} and policy.versions == ("1.0.0",)


def test_a_policy_naming_an_unknown_version_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"version 2\.0\.0 is not available") as caught:
        TrafficPolicy.parse({"arms": [{"version": "1.0.0"}, {"version": "2.0.0"}]},
                            versions={"1.0.0"})
    assert caught.value.field == "arms.1.version"


def test_an_unknown_shadow_version_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"field 'shadow\.0'"):
        TrafficPolicy.shadowing("1.0.0", "9.9.9").check_versions({"1.0.0"})


@pytest.mark.parametrize("percent", [-1, 101, float("nan")], ids=["below", "above", "nan"])
def test_a_canary_percent_outside_0_100_is_refused(percent: float) -> None:
    with pytest.raises(InvalidInput, match="field 'percent'"):
        TrafficPolicy.canary("1.0.0", "1.1.0", percent)


def test_stepping_a_policy_without_a_canary_is_refused() -> None:
    with pytest.raises(InvalidInput, match="no arm named 'canary'"):
        TrafficPolicy.single("1.0.0").with_canary_percent(10)


def test_versions_lists_arms_then_shadows_once_each() -> None:
    policy = TrafficPolicy(arms=(Arm(version="a"), Arm(version="b")), shadow=("c", "b"))
    assert policy.versions == ("a", "b", "c")
