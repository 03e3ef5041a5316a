"""Semantic versions and registry references (``heart``, ``heart:1.2.0``, ``heart@production``).

Pure functions, no database: the catalog and the CLI both parse with them, so a bad version or
reference gets the same clear message everywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelport.errors import InvalidInput

__all__ = [
    "ALIAS_PATTERN",
    "NAME_PATTERN",
    "VERSION_PATTERN",
    "Ref",
    "SemVer",
    "check_alias",
    "check_name",
    "latest",
    "next_patch",
    "parse_ref",
    "parse_version",
]

VERSION_PATTERN = (
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-((?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
    r"(?:\.(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
"""A semantic version, as a regular expression that means the same in Python and in JSON Schema
(ASCII digits only; matched whole)."""
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
"""A model name."""
ALIAS_PATTERN = r"^[A-Za-z][A-Za-z0-9._-]{0,63}$"
"""An alias name."""
_SEMVER = re.compile(VERSION_PATTERN)
_NAME = re.compile(NAME_PATTERN)
_ALIAS = re.compile(ALIAS_PATTERN)


@dataclass(frozen=True, order=False)
class SemVer:
    """A parsed semantic version (semver.org 2.0); ``key`` orders by precedence."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: str = ""

    @property
    def key(self) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
        """Sort key: a release outranks its pre-releases; numeric identifiers sort as numbers."""
        pre = tuple((0, int(p)) if p.isdigit() else (1, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        return text + (f"+{self.build}" if self.build else "")


def parse_version(text: str) -> SemVer:
    """Parse ``MAJOR.MINOR.PATCH[-pre][+build]``; anything else is :class:`InvalidInput`."""
    match = _SEMVER.fullmatch(text.strip())
    if match is None:
        raise InvalidInput(f"'{text}' is not a semantic version; use MAJOR.MINOR.PATCH, "
                           "e.g. 1.2.0", field="version")
    major, minor, patch, pre, build = match.groups()
    return SemVer(int(major), int(minor), int(patch),
                  tuple(pre.split(".")) if pre else (), build or "")


def next_patch(existing: list[str]) -> str:
    """The version a push without ``--version`` gets: one patch above the highest, or 1.0.0.

    The highest being a pre-release (``1.3.0-rc.1``), the next is its release (``1.3.0``).
    """
    if not existing:
        return "1.0.0"
    top = max((parse_version(v) for v in existing), key=lambda v: v.key)
    if top.prerelease:
        return f"{top.major}.{top.minor}.{top.patch}"
    return f"{top.major}.{top.minor}.{top.patch + 1}"


def latest(existing: list[str]) -> str | None:
    """The highest version by semantic-version precedence (None when there is none)."""
    if not existing:
        return None
    return max(existing, key=lambda v: parse_version(v).key)


def check_name(name: str) -> str:
    """A model name: letters, digits, ``.``, ``_``, ``-``; starts with a letter or digit."""
    if not _NAME.fullmatch(name):
        raise InvalidInput(f"'{name}' is not a valid model name; use letters, digits, '.', '_' "
                           "and '-' (at most 100, starting with a letter or digit)", field="name")
    return name


def check_alias(alias: str) -> str:
    """An alias name such as ``production``: starts with a letter."""
    if not _ALIAS.fullmatch(alias):
        raise InvalidInput(f"'{alias}' is not a valid alias; use a letter followed by letters, "
                           "digits, '.', '_' or '-' (at most 64)", field="alias")
    return alias


@dataclass(frozen=True)
class Ref:
    """What a reference names: a model plus at most one of a version or an alias."""

    name: str
    version: str | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name if self.version is None else f"{self.name}:{self.version}"


def parse_ref(text: str) -> Ref:
    """``heart@production`` (alias), ``heart:1.2.0`` (version) or ``heart`` (latest)."""
    if "@" in text:
        name, alias = text.split("@", 1)
        return Ref(check_name(name), alias=check_alias(alias))
    if ":" in text:
        name, version = text.split(":", 1)
        return Ref(check_name(name), version=str(parse_version(version)))
    return Ref(check_name(text))
