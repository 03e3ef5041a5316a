"""Traffic policies by model: which version answers an unversioned request."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from modelport.traffic import Assignment, TrafficPolicy

__all__ = ["TrafficRouter"]


class TrafficRouter:
    """Traffic policies by model name; unversioned requests of a model with a policy are
    routed by it (others use the model's default version)."""

    def __init__(self, rng: Any = None) -> None:
        self._policies: dict[str, TrafficPolicy] = {}
        self._rng = rng or random.Random()  # routing, not security

    def get(self, name: str) -> TrafficPolicy | None:
        """The model's policy, if it has one."""
        return self._policies.get(name)

    def set(self, name: str, policy: TrafficPolicy | None) -> None:
        """Replace (or with None, remove) the model's policy: one assignment."""
        if policy is None:
            self._policies.pop(name, None)
        else:
            self._policies[name] = policy

    def route(self, name: str, headers: Mapping[str, str]) -> Assignment | None:
        """The assignment for one request to ``name`` (None: no policy, use the default);
        ``headers`` by lower-case name (HTTP headers, gRPC metadata)."""
        policy = self._policies.get(name)
        if policy is None:
            return None
        sticky = policy.sticky_header
        key = headers.get(sticky.lower()) if sticky else None
        return policy.choose(key, self._rng)

