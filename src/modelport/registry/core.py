"""The :class:`Registry`: versions and aliases in SQL, artifacts in a content-addressed store.

The library API the CLI and the server call. Every write is one transaction, retried on a
transient failure; every fetch verifies the sha256 of every artifact it hands out.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import TracebackType

import yaml
from sqlalchemy.engine import Connection, Engine

from modelport.errors import Conflict, ModelNotFound
from modelport.mlflow_model import is_mlflow_dir
from modelport.package import Package, open_package, pack
from modelport.registry import catalog
from modelport.registry.db import connect, migrate, transact
from modelport.registry.gate import check_version
from modelport.registry.records import AliasMove, ModelSummary, ModelVersion
from modelport.registry.store import ArtifactStore, digest_of
from modelport.registry.versions import (
    check_alias,
    check_name,
    latest,
    next_patch,
    parse_ref,
    parse_version,
)

__all__ = ["Registry"]


class Registry:
    """A model catalog (SQLite or PostgreSQL) plus its artifact store."""

    def __init__(self, engine: Engine, store: ArtifactStore) -> None:
        self.engine = engine
        self.store = store

    @classmethod
    def open(cls, db_url: str, store: Path) -> Registry:
        """Connect, bring the schema up to date (Alembic), and use ``store`` for artifacts."""
        engine = connect(db_url)
        try:
            migrate(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, ArtifactStore(store))

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # versions ---------------------------------------------------------------------------

    def push(self, package_dir_or_file: Path, name: str, version: str | None = None, *,
             actor: str | None = None) -> ModelVersion:
        """Register a package directory (or a bare model file, packed first: with golden rows
        made from its signature, refused when it fails them) as ``name:version``; ``version``
        defaults to the next patch above the highest."""
        check_name(name)
        wanted = None if version is None else str(parse_version(version))
        with _as_package(Path(package_dir_or_file), name,
                         lambda: wanted or self._next_version(name)) as pkg:
            for rel, sha in pkg.manifest.files.items():
                self.store.put(pkg.root / rel, sha)
            return transact(self.engine, lambda c: _insert(c, pkg, name, wanted, actor),
                            write=True)

    def _next_version(self, name: str) -> str:
        """The version a push without one would get now (the insert decides it again)."""
        def work(conn: Connection) -> str:
            try:
                return next_patch(catalog.version_names(conn, catalog.find_model(conn, name)))
            except ModelNotFound:
                return next_patch([])

        return transact(self.engine, work)

    def get(self, name: str, version: str) -> ModelVersion:
        """One exact version, or :class:`ModelNotFound`."""
        wanted = str(parse_version(version))
        return transact(self.engine, lambda c: catalog.version_record(c, name, wanted))

    def resolve(self, ref: str) -> ModelVersion:
        """``heart@production`` (alias), ``heart:1.2.0`` (version) or ``heart`` (latest)."""
        parsed = parse_ref(ref)

        def work(conn: Connection) -> ModelVersion:
            version = parsed.version
            if parsed.alias is not None:
                version = catalog.alias_target(conn, parsed.name, parsed.alias)
                if version is None:
                    catalog.find_model(conn, parsed.name)
                    raise ModelNotFound(f"model '{parsed.name}' has no alias "
                                        f"'{parsed.alias}'; set it with: modelport registry "
                                        f"alias {parsed.name} {parsed.alias} VERSION")
            if version is None:
                version = latest(catalog.version_names(conn, catalog.find_model(conn, parsed.name)))
                if version is None:
                    raise ModelNotFound(f"model '{parsed.name}' has no versions left")
            return catalog.version_record(conn, parsed.name, version)

        return transact(self.engine, work)

    def fetch(self, ref: str) -> Path:
        """A verified package directory for ``ref``, materialised from the store. Every
        artifact's sha256 is checked on every call (:class:`IntegrityError` if altered)."""
        record = self.resolve(ref)
        return self.store.checkout(record.name, record.version, record.files, record.manifest)

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of a model, lowest first (semantic-version order)."""
        def work(conn: Connection) -> list[ModelVersion]:
            names = catalog.version_names(conn, catalog.find_model(conn, name))
            ordered = sorted(names, key=lambda v: parse_version(v).key)
            return [catalog.version_record(conn, name, v) for v in ordered]

        return transact(self.engine, work)

    def models(self) -> list[ModelSummary]:
        """Every model with its version count, latest version and aliases."""
        def work(conn: Connection) -> list[ModelSummary]:
            out = []
            for name in catalog.model_names(conn):
                model_id = catalog.find_model(conn, name)
                names = catalog.version_names(conn, model_id)
                out.append(ModelSummary(name, len(names), latest(names),
                                        catalog.alias_map(conn, model_id)))
            return out

        return transact(self.engine, work)

    def delete(self, name: str, version: str) -> None:
        """Forget a version; :class:`Conflict` while an alias points at it."""
        wanted = str(parse_version(version))

        def work(conn: Connection) -> None:
            model_id = catalog.lock_model(conn, name, create=False)
            catalog.version_record(conn, name, wanted)
            pointing = catalog.alias_rows_for_version(conn, model_id, wanted)
            if pointing:
                raise Conflict(f"{name}:{wanted} is the target of alias "
                               f"{', '.join(pointing)}; move the alias first (modelport "
                               f"registry alias {name} {pointing[0]} OTHER_VERSION)")
            catalog.delete_version(conn, model_id, wanted)

        transact(self.engine, work, write=True)
        self.store.remove_checkout(name, wanted)

    # aliases ----------------------------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: str, *, actor: str | None = None,
                  reason: str | None = None, check: bool = False) -> AliasMove:
        """Point ``alias`` at ``version`` atomically and record the move. ``check`` first loads
        the version from the store and refuses it (:class:`GoldenCheckFailed`; the alias stays)
        when it fails its golden rows or raises on those of the alias's current target."""
        check_alias(alias)
        wanted = str(parse_version(version))
        if check:
            check_version(self, name, wanted, live=self.alias_target(name, alias))

        def work(conn: Connection) -> AliasMove:
            model_id = catalog.lock_model(conn, name, create=False)
            catalog.version_record(conn, name, wanted)
            return _move(conn, model_id, AliasMove(name, alias, None, wanted, "move",
                                                   catalog.now(), actor, reason))

        return transact(self.engine, work, write=True)

    def rollback(self, name: str, alias: str, *, actor: str | None = None,
                 reason: str | None = None, check: bool = False,
                 expect: str | None = None) -> AliasMove:
        """Move ``alias`` back to the target it had before its current one (moves already
        rolled back are skipped, so repeated rollbacks walk further back; deleted versions
        are skipped too). :class:`Conflict` when there is nothing to go back to, or when the
        target is not ``expect`` (the alias moved meanwhile). ``check``: as for
        :meth:`set_alias`, the target is checked first."""
        check_alias(alias)
        if check:
            expect = self.rollback_target(name, alias)
            check_version(self, name, expect, live=self.alias_target(name, alias))

        def work(conn: Connection) -> AliasMove:
            model_id = catalog.lock_model(conn, name, create=False)
            target = _rollback_target(conn, model_id, name, alias)
            if expect is not None and target != expect:
                raise Conflict(f"{name}@{alias} moved meanwhile: a rollback now goes to "
                               f"{target}, not {expect}; run it again")
            return _move(conn, model_id, AliasMove(name, alias, None, target, "rollback",
                                                   catalog.now(), actor, reason))

        return transact(self.engine, work, write=True)

    def rollback_target(self, name: str, alias: str) -> str:
        """The version :meth:`rollback` would move ``alias`` to now (nothing moves)."""
        check_alias(alias)

        def work(conn: Connection) -> str:
            return _rollback_target(conn, catalog.find_model(conn, name), name, alias)

        return transact(self.engine, work)

    def history(self, name: str, alias: str | None = None) -> list[AliasMove]:
        """Every recorded alias move of a model (or of one alias), oldest first."""
        return transact(self.engine, lambda c: catalog.events(c, name, alias))

    def aliases(self, name: str) -> dict[str, str]:
        """alias -> version for one model."""
        return transact(self.engine,
                        lambda c: catalog.alias_map(c, catalog.find_model(c, name)))

    def alias_target(self, name: str, alias: str) -> str | None:
        """The version ``name@alias`` points at now (None when unset): one cheap query, meant
        to be polled by a server that follows the alias."""
        return transact(self.engine, lambda c: catalog.alias_target(c, name, alias))


@contextmanager
def _as_package(source: Path, name: str, version: Callable[[], str]) -> Iterator[Package]:
    """The verified package at ``source``; a bare model file is packed into a temporary one
    (as ``version()``, the version it is about to get), and so is an MLflow model directory."""
    if source.is_dir() and not is_mlflow_dir(source):
        yield open_package(source)
        return
    if not source.is_file() and not source.is_dir():
        raise ModelNotFound(f"'{source}' does not exist; give a package directory or a model "
                            "file")
    with tempfile.TemporaryDirectory(prefix="modelport-push-") as tmp:
        yield pack(source, Path(tmp) / name, name=name, version=version())


def _insert(conn: Connection, pkg: Package, name: str, version: str | None,
            actor: str | None) -> ModelVersion:
    model_id = catalog.lock_model(conn, name, create=True)
    existing = catalog.version_names(conn, model_id)
    chosen = version or next_patch(existing)
    if chosen in existing:
        raise Conflict(f"{name}:{chosen} is already registered; push with another --version "
                       f"(the next free patch is {next_patch(existing)})")
    manifest = pkg.manifest.model_copy(update={"name": name, "version": chosen})
    record = ModelVersion(
        name=name, version=chosen, flavor=pkg.manifest.flavor,
        digest=digest_of(pkg.manifest.files), files=dict(pkg.manifest.files),
        created_at=catalog.now(), created_by=actor,
        manifest=yaml.safe_dump(manifest.model_dump(exclude_none=True), sort_keys=False),
    )
    catalog.insert_version(conn, model_id, record)
    return record


def _move(conn: Connection, model_id: int, proposed: AliasMove) -> AliasMove:
    """Record ``proposed`` with the alias's current target as ``from_version``; a move to
    where the alias already points records nothing (kind ``unchanged``)."""
    current = catalog.alias_map(conn, model_id).get(proposed.alias)
    move = replace(proposed, from_version=current)
    if current == proposed.to_version:
        return replace(move, kind="unchanged")
    catalog.move_alias(conn, model_id, move)
    return move


def _rollback_target(conn: Connection, model_id: int, name: str, alias: str) -> str:
    """Replay the alias's moves as a stack (a move pushes; a rollback pops down to its
    target); the answer is the nearest entry below the top that still exists."""
    stack: list[str] = []
    for event in catalog.events(conn, name, alias):
        if event.kind == "rollback":
            while stack and stack[-1] != event.to_version:
                stack.pop()
        if not stack or stack[-1] != event.to_version:
            stack.append(event.to_version)
    if not stack:
        raise ModelNotFound(f"model '{name}' has no alias '{alias}' to roll back")
    existing = set(catalog.version_names(conn, model_id))
    for candidate in reversed(stack[:-1]):
        if candidate in existing and candidate != stack[-1]:
            return candidate
    raise Conflict(f"{name}@{alias} has no earlier target to roll back to (it points at "
                   f"{stack[-1]} and no earlier target of it is still registered)")
