"""The model registry: semantic versions and movable aliases in SQL (SQLite or PostgreSQL),
artifacts in a content-addressed store verified on every fetch.

    reg = Registry.open("sqlite:///.modelport/registry.db", Path(".modelport/artifacts"))
    reg.push(Path("heart/"), "heart")                 # heart:1.0.0
    reg.set_alias("heart", "production", "1.0.0", actor="ci", reason="first release",
                  check=True)                         # refused if it fails golden rows
    reg.fetch("heart@production")                     # a verified package directory
"""

from __future__ import annotations

from modelport.registry.core import Registry
from modelport.registry.records import AliasMove, ModelSummary, ModelVersion
from modelport.registry.versions import Ref, SemVer, next_patch, parse_ref, parse_version

__all__ = [
    "AliasMove",
    "ModelSummary",
    "ModelVersion",
    "Ref",
    "Registry",
    "SemVer",
    "next_patch",
    "parse_ref",
    "parse_version",
]
