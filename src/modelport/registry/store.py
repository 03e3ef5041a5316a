"""The artifact store: files kept by their sha256, verified every time they are read.

::

    STORE/
      objects/ab/abcdef…        one file per distinct content (read-only once written)
      packages/heart/1.2.0/     a package directory materialised from objects (a checkout)

Writes go to a temporary file in the same directory and are moved into place with
``os.replace``, so a reader never sees half an object and concurrent writers of the same
content are harmless. Objects are shared by content, so deleting a version leaves them in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from modelport.errors import IntegrityError, ModelLoadError
from modelport.package import MANIFEST, file_sha256, open_package

__all__ = ["ArtifactStore", "digest_of"]

_CHUNK = 1 << 20


def digest_of(files: Mapping[str, str]) -> str:
    """One sha256 for a whole package: over its sorted ``path sha256`` lines."""
    lines = "".join(f"{path} {sha}\n" for path, sha in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


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
        if target.is_file() and file_sha256(target) == expected:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                actual = _copy_hashing(source, out)
            if actual != expected:
                raise IntegrityError(f"'{source}' has sha256 {actual[:12]}…, its manifest "
                                     f"records {expected[:12]}…; the package was changed "
                                     "after packing — refusing to register it")
            tmp.chmod(0o444)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
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
            _swap_in(staging, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if not _is_current(dest, manifest):
            raise IntegrityError(f"the checkout of {name}:{version} at {dest} was changed while "
                                 "it was being written; fetch it again")
        return dest

    def remove_checkout(self, name: str, version: str) -> None:
        """Drop a materialised package directory (objects stay: they are shared by content)."""
        shutil.rmtree(self.root / "packages" / name / version, ignore_errors=True)


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


def _swap_in(staging: Path, dest: Path) -> None:
    """Move ``staging`` to ``dest``; an existing (stale) ``dest`` is moved aside first. Losing a
    race to another process that wrote the same checkout is fine: the caller re-checks."""
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
