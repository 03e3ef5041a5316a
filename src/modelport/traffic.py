"""Traffic policies: which version answers a request, and which ones get a shadow copy.

Pure logic, no framework: the server asks ``policy.choose(sticky_key, rng)`` per request and
gets an :class:`Assignment`. One policy shape covers every scheme:

- weighted A/B: ``arms`` with weights (any non-negative numbers, at least one positive); a
  version may be in several arms (an A/A test: give the arms names);
- canary: two arms, ``canary`` (the candidate, a percentage) and ``stable``;
- shadow: ``shadow`` versions receive a copy of each request off the hot path, the client
  gets the chosen arm's answer;
- sticky: with ``sticky_header`` set, the server passes that header's value as the sticky
  key; the key's stable hash (BLAKE2b, not Python's per-process ``hash``) picks the arm, so a
  user keeps their version for as long as the policy is unchanged, in every replica.

The canary arm sits first on the unit interval, so stepping its percentage up only moves
sticky users *into* the canary, never out of it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelport.errors import InvalidInput

__all__ = ["Arm", "Assignment", "Rng", "TrafficPolicy", "sticky_point"]

CANARY = "canary"
STABLE = "stable"


class Rng(Protocol):
    """Anything with ``random() -> float`` in [0, 1): ``random.Random``, numpy's Generator."""

    def random(self) -> float:
        """A uniform float in [0, 1)."""
        ...


@dataclass(frozen=True)
class Assignment:
    """Where one request goes: the answering ``version``, its arm's name, the versions that
    get a shadow copy, and whether a sticky key decided it."""

    version: str
    arm: str
    shadow_versions: tuple[str, ...] = ()
    sticky: bool = False


class Arm(BaseModel):
    """One version and its share of the traffic."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = Field(min_length=1)
    weight: float = Field(default=1.0, ge=0, allow_inf_nan=False, strict=True)
    name: str = Field(default="", pattern=r"^[ -~]{0,64}$")
    """Label in headers and metrics (printable ASCII: it is sent as ``X-Model-Arm``);
    defaults to the version."""

    @property
    def label(self) -> str:
        """The arm's name, or its version when unnamed."""
        return self.name or self.version


class TrafficPolicy(BaseModel):
    """How a model's traffic splits between its versions (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    arms: tuple[Arm, ...] = Field(min_length=1, json_schema_extra={
        "contains": {"properties": {"weight": {"exclusiveMinimum": 0}}}})
    """At least one with a positive weight (a weight left out is 1)."""
    shadow: tuple[str, ...] = ()
    sticky_header: str | None = None
    salt: str = ""
    """Changes every sticky assignment at once (e.g. to reshuffle users between runs)."""

    @model_validator(mode="after")
    def _check(self) -> TrafficPolicy:
        if sum(a.weight for a in self.arms) <= 0:
            raise ValueError("the weights of the arms must add up to more than 0")
        return self

    # constructors -----------------------------------------------------------------------

    @classmethod
    def parse(cls, data: Mapping[str, Any], *,
              versions: Collection[str] | None = None) -> TrafficPolicy:
        """Validate a policy from JSON-like data; errors are :class:`InvalidInput` naming the
        field. With ``versions``, every version the policy names must be among them."""
        try:
            policy = cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "policy"
            raise InvalidInput(first["msg"], field=field) from exc
        if versions is not None:
            policy.check_versions(versions)
        return policy

    @classmethod
    def single(cls, version: str) -> TrafficPolicy:
        """All traffic to one version."""
        return cls(arms=(Arm(version=version),))

    @classmethod
    def weighted(cls, weights: Mapping[str, float], *,
                 sticky_header: str | None = None) -> TrafficPolicy:
        """A/B(/C…) split: version -> weight."""
        return cls.parse({"arms": [{"version": v, "weight": w} for v, w in weights.items()],
                          "sticky_header": sticky_header})

    @classmethod
    def canary(cls, stable: str, candidate: str, percent: float, *,
               sticky_header: str | None = None) -> TrafficPolicy:
        """``percent`` of the traffic to ``candidate``, the rest to ``stable``."""
        _check_percent(percent)
        return cls.parse({"arms": [
            {"version": candidate, "weight": percent, "name": CANARY},
            {"version": stable, "weight": 100.0 - percent, "name": STABLE},
        ], "sticky_header": sticky_header})

    @classmethod
    def shadowing(cls, primary: str, candidate: str) -> TrafficPolicy:
        """Every request answered by ``primary`` and mirrored to ``candidate``."""
        return cls(arms=(Arm(version=primary, name="primary"),), shadow=(candidate,))

    # queries ----------------------------------------------------------------------------

    @property
    def versions(self) -> tuple[str, ...]:
        """Every version the policy names (arms first, then shadows), once each."""
        return tuple(dict.fromkeys([a.version for a in self.arms] + list(self.shadow)))

    @property
    def canary_percent(self) -> float | None:
        """The canary arm's share in percent (None when the policy has no canary arm)."""
        total = sum(a.weight for a in self.arms)
        for arm in self.arms:
            if arm.name == CANARY:
                return 100.0 * arm.weight / total
        return None

    def check_versions(self, available: Collection[str]) -> None:
        """:class:`InvalidInput` naming the first version the policy uses that is not in
        ``available`` (e.g. not loaded by the server or not registered)."""
        for i, arm in enumerate(self.arms):
            if arm.version not in available:
                raise InvalidInput(f"version {arm.version} is not available (have: "
                                   f"{', '.join(sorted(available)) or 'none'})",
                                   field=f"arms.{i}.version")
        for i, version in enumerate(self.shadow):
            if version not in available:
                raise InvalidInput(f"version {version} is not available", field=f"shadow.{i}")

    def with_canary_percent(self, percent: float) -> TrafficPolicy:
        """The same policy with the canary stepped to ``percent`` (0 to 100)."""
        _check_percent(percent)
        if self.canary_percent is None:
            raise InvalidInput("the policy has no arm named 'canary'; make one with "
                               "TrafficPolicy.canary(stable, candidate, percent)", field="arms")
        others = [a for a in self.arms if a.name != CANARY]
        rest = sum(a.weight for a in others)
        arms = tuple(a.model_copy(update={"weight": percent if a.name == CANARY else
                                          (100.0 - percent) * _share(a, rest, len(others))})
                     for a in self.arms)
        return self.model_copy(update={"arms": arms})

    def choose(self, sticky_key: str | None, rng: Rng) -> Assignment:
        """The arm for one request: by the sticky key's stable hash when there is one, else
        by ``rng``. Shadow versions other than the chosen one come along."""
        sticky = sticky_key is not None
        point = sticky_point(sticky_key, self.salt) if sticky_key is not None else rng.random()
        arm = self._arm_at(point)
        shadows = tuple(v for v in self.shadow if v != arm.version)
        return Assignment(arm.version, arm.label, shadows, sticky)

    def _arm_at(self, point: float) -> Arm:
        total = sum(a.weight for a in self.arms)
        edge = 0.0
        chosen = None
        for arm in self.arms:
            if arm.weight <= 0:
                continue
            chosen = arm
            edge += arm.weight / total
            if point < edge:
                return arm
        assert chosen is not None  # the validator guarantees a positive weight
        return chosen  # point rounded past the last edge


def sticky_point(key: str, salt: str = "") -> float:
    """A stable position in [0, 1) for a sticky key: the same in every process and release."""
    digest = hashlib.blake2b(f"{salt}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _check_percent(percent: float) -> None:
    if not (math.isfinite(percent) and 0.0 <= percent <= 100.0):
        raise InvalidInput(f"{percent} is not a percentage between 0 and 100", field="percent")


def _share(arm: Arm, rest: float, count: int) -> float:
    """A non-canary arm's part of what the canary leaves: as now, or equal parts when the
    canary had everything."""
    return arm.weight / rest if rest > 0 else 1.0 / count
