"""What the registry hands out: frozen records, never rows or dicts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

__all__ = ["AliasMove", "ModelSummary", "ModelVersion"]


@dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model."""

    name: str
    version: str
    flavor: str
    digest: str
    """sha256 over the package's files (see ``store.digest_of``): equal digests, equal models."""
    files: Mapping[str, str]
    """Package file name -> sha256 of its store object."""
    created_at: datetime
    created_by: str | None
    manifest: str = field(repr=False)
    """``modelport.yaml`` as registered (name and version set to the registry's)."""

    @property
    def ref(self) -> str:
        """``name:version``, the reference that always names this exact version."""
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class AliasMove:
    """One recorded move of an alias (``from_version`` is None for its first assignment)."""

    name: str
    alias: str
    from_version: str | None
    to_version: str
    kind: Literal["move", "rollback", "unchanged"]
    """``unchanged``: the alias already pointed there; nothing was recorded."""
    at: datetime
    actor: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class ModelSummary:
    """A model in the catalog at a glance."""

    name: str
    versions: int
    latest: str | None
    aliases: Mapping[str, str]
