"""The artifact store: files kept by their sha256, verified every time they are read.

::

    STORE/
      objects/ab/abcdef…        one file per distinct content (read-only once written)
      packages/heart/1.2.0/     a package directory materialised from objects (a checkout)
      resolved/heart@production.json   what that reference last resolved to (see below)

Writes go to a temporary file in the same directory, are fsync'd and moved into place with
``os.replace``, so a reader never sees half an object (not even after a crash or a SIGKILL) and
concurrent writers of the same content are harmless. A writer holds a lock on its temporary
file; one left behind by a killed writer (nobody holds its lock) is removed by the next write
into that directory. Objects are shared by content, so deleting a version leaves them in place.

Each time a server resolves a registry reference (``heart@production``) it records the answer
under ``resolved/`` (:meth:`ArtifactStore.remember`): the version and its manifest, whose sha256s
name the objects. While the catalog's database is unreachable, a server starting up serves that
last good answer (:meth:`ArtifactStore.recall`), every object verified as on any fetch.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import yaml

from modelport.errors import IntegrityError, ModelLoadError
from modelport.package import MANIFEST, Manifest, file_sha256, open_package

__all__ = ["ArtifactStore", "Resolution", "digest_of"]

_CHUNK = 1 << 20
_TEMP = ".tmp-"
"""Prefix of a temporary file being written (its writer holds a lock on it)."""
_NEW = ".new-"
"""Prefix of a temporary file in the instant before its writer locked it."""
_STALE_NEW_S = 3600.0


def digest_of(files: Mapping[str, str]) -> str:
    """One sha256 for a whole package: over its sorted ``path sha256`` lines."""
    lines = "".join(f"{path} {sha}\n" for path, sha in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


@dataclass(frozen=True)
class Resolution:
    """What a registry reference resolved to the last time the catalog answered."""

    ref: str
    """The reference as served: ``heart@production`` or ``heart:1.2.0``."""
    name: str
    version: str
    digest: str
    """:func:`digest_of` the package's files."""
    manifest: str
    """``modelport.yaml`` as registered: its sha256s name every object of the package."""
    recorded_at: float
    """Unix time of the resolution."""

    @property
    def files(self) -> dict[str, str]:
        """Package file name -> sha256, from the manifest."""
        return dict(Manifest.model_validate(yaml.safe_load(self.manifest)).files)


class ArtifactStore:
    """Content-addressed files under ``root`` (a local directory or a shared volume)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def object_path(self, sha256: str) -> Path:
        """Where the object with this sha256 lives (whether or not it exists)."""
        return self.root / "objects" / sha256[:2] / sha256

    def put(self, source: Path, expected: str) -> Path:
        """Copy ``source`` into the store; its sha256 must be ``expected`` (else
        :class:`IntegrityError`). A valid object already there is kept as is."""
        target = self.object_path(expected)
        target.parent.mkdir(parents=True, exist_ok=True)
        _sweep_temporaries(target.parent)
        if target.is_file() and file_sha256(target) == expected:
            return target
        with _locked_temporary(target.parent) as (out, tmp):
            actual = _copy_hashing(source, out)
            if actual != expected:
                raise IntegrityError(f"'{source}' has sha256 {actual[:12]}…, its manifest "
                                     f"records {expected[:12]}…; the package was changed "
                                     "after packing — refusing to register it")
            out.flush()
            os.fsync(out.fileno())
            tmp.chmod(0o444)
            os.replace(tmp, target)
        _fsync_dir(target.parent)
        return target

    def verify(self, sha256: str, *, what: str) -> Path:
        """The object's path after checking its sha256; ``what`` names it in the error."""
        path = self.object_path(sha256)
        if not path.is_file():
            raise IntegrityError(f"{what}: the store has no object {sha256[:12]}… ({path}); "
                                 "the store was altered — push the package again")
        actual = file_sha256(path)
        if actual != sha256:
            raise IntegrityError(f"{what}: the stored object {path} has sha256 {actual[:12]}…, "
                                 f"expected {sha256[:12]}…; the store was altered — refusing "
                                 "to use it; push the package again")
        return path

    def checkout(self, name: str, version: str, files: Mapping[str, str],
                 manifest: str) -> Path:
        """A verified package directory for ``name`` ``version``: every object is checked,
        and the checkout is rebuilt atomically when it is missing or differs."""
        sources = {_plain(p): self.verify(s, what=f"'{p}' of {name}:{version}")
                   for p, s in files.items()}
        dest = self.root / "packages" / name / version
        if _is_current(dest, manifest):
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=dest.parent))
        try:
            for rel, src in sources.items():
                shutil.copyfile(src, staging / rel)
            (staging / MANIFEST).write_text(manifest, encoding="utf-8")
            open_package(staging)
            _swap_in(staging, dest, manifest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if not _is_current(dest, manifest):
            raise IntegrityError(f"the checkout of {name}:{version} at {dest} was changed while "
                                 "it was being written; fetch it again")
        return dest

    def remove_checkout(self, name: str, version: str) -> None:
        """Drop a materialised package directory (objects stay: they are shared by content)."""
        shutil.rmtree(self.root / "packages" / name / version, ignore_errors=True)

    def remember(self, ref: str, name: str, version: str) -> Resolution:
        """Record that ``ref`` resolved to ``name`` ``version``, whose checkout was just made
        (and verified) by :meth:`checkout`; the record replaces the previous one atomically."""
        manifest = (self.root / "packages" / name / version / MANIFEST).read_text(
            encoding="utf-8")
        files = Manifest.model_validate(yaml.safe_load(manifest)).files
        record = Resolution(ref, name, version, digest_of(files), manifest, time.time())
        path = self._resolution_path(ref)
        path.parent.mkdir(parents=True, exist_ok=True)
        _sweep_temporaries(path.parent)
        with _locked_temporary(path.parent) as (out, tmp):
            out.write(json.dumps(asdict(record), indent=1).encode())
            out.flush()
            os.fsync(out.fileno())
            os.replace(tmp, path)
        _fsync_dir(path.parent)
        return record

    def recall(self, ref: str) -> Resolution | None:
        """The last recorded resolution of ``ref`` (None when there is none); check out its
        package with :meth:`checkout`, which verifies every object."""
        path = self._resolution_path(ref)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            record = Resolution(**doc)
            files = record.files
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, yaml.YAMLError) as exc:
            raise IntegrityError(f"the record of what {ref} last resolved to ({path}) is "
                                 f"unreadable ({exc}); delete it and start once while the "
                                 "registry database is reachable") from exc
        if record.ref != ref or digest_of(files) != record.digest:
            raise IntegrityError(f"the record of what {ref} last resolved to ({path}) does not "
                                 "match its own manifest; the store was altered — delete it "
                                 "and start once while the registry database is reachable")
        return record

    def _resolution_path(self, ref: str) -> Path:
        return self.root / "resolved" / f"{urllib.parse.quote(ref, safe='@:+')}.json"


def _sweep_temporaries(directory: Path) -> int:
    """Remove temporary files that writers killed mid-write left in ``directory`` (nobody
    holds their lock); files being written now are left alone. Returns how many went."""
    now = time.time()
    return sum(_unlink(path) for path in directory.iterdir() if _left_behind(path, now))


def _left_behind(path: Path, now: float) -> bool:
    if path.name.startswith(_TEMP):
        return _abandoned(path)
    return path.name.startswith(_NEW) and _age(path, now) > _STALE_NEW_S


def _abandoned(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # locked by its (live) writer, gone meanwhile, or not ours to read
        return False
    return True


def _age(path: Path, now: float) -> float:
    try:
        return now - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _unlink(path: Path) -> int:
    try:
        path.unlink()
    except FileNotFoundError:
        return 0
    return 1


@contextlib.contextmanager
def _locked_temporary(directory: Path) -> Iterator[tuple[BinaryIO, Path]]:
    """A new temporary file in ``directory``, locked before it gets its visible
    ``.tmp-`` name (so a sweeper never sees it unlocked); removed unless moved away."""
    fd, new_name = tempfile.mkstemp(prefix=_NEW, dir=directory)
    tmp = directory / (_TEMP + Path(new_name).name[len(_NEW):])
    with os.fdopen(fd, "wb") as out:
        try:
            fcntl.flock(out, fcntl.LOCK_EX)
            os.replace(new_name, tmp)
            yield out, tmp
        finally:
            Path(new_name).unlink(missing_ok=True)
            tmp.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _plain(rel: str) -> str:
    if not rel or Path(rel).name != rel or rel in (".", ".."):
        raise IntegrityError(f"a package file is named '{rel}'; only plain file names are "
                             "allowed in a package")
    return rel


def _is_current(dest: Path, manifest: str) -> bool:
    manifest_path = dest / MANIFEST
    if not manifest_path.is_file() or manifest_path.read_text(encoding="utf-8") != manifest:
        return False
    try:
        open_package(dest)
    except ModelLoadError:
        return False
    return True


def _swap_in(staging: Path, dest: Path, manifest: str) -> None:
    """Move ``staging`` to ``dest``; an existing stale ``dest`` is moved aside first. A current
    ``dest`` (another process — a replica sharing the store — wrote the same checkout
    meanwhile) is kept as it is: moving it aside would pull it from under that process's feet.
    Losing a race is fine: the caller re-checks."""
    if _is_current(dest, manifest):
        return
    if dest.exists():
        trash = Path(tempfile.mkdtemp(prefix=".old-", dir=dest.parent))
        with contextlib.suppress(FileNotFoundError):
            os.replace(dest, trash / "pkg")
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.rename(staging, dest)
    except OSError:
        if not dest.is_dir():
            raise


def _copy_hashing(source: Path, out: BinaryIO) -> str:
    digest = hashlib.sha256()
    with source.open("rb") as src:
        for chunk in iter(lambda: src.read(_CHUNK), b""):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()
