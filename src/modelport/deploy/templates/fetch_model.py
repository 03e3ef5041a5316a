"""Download a model package archive at image build time, check its sha256, unpack it.

    python fetch_model.py URL SHA256 DEST

URL points at a ``.tar.gz`` of a modelport package directory (``tar -C PKG -czf pkg.tar.gz .``).
Nothing is unpacked unless the archive's sha256 matches; members that would land outside DEST
are refused. Standard library only (it runs before anything is installed).
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import IO


def fetch(url: str, sha256: str, dest: Path) -> None:
    """Download ``url`` to a temporary file, verify, then unpack into ``dest``."""
    if len(sha256) != 64:
        raise SystemExit("fetch_model: MODEL_SHA256 must be the archive's 64-hex-digit sha256")
    digest = hashlib.sha256()
    with tempfile.TemporaryFile() as tmp:
        with urllib.request.urlopen(url, timeout=120) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                tmp.write(chunk)
        if digest.hexdigest() != sha256.lower():
            raise SystemExit(f"fetch_model: sha256 of {url} is {digest.hexdigest()}, "
                             f"expected {sha256}; refusing to use it")
        tmp.seek(0)
        _unpack(tmp, dest)


def _unpack(fileobj: IO[bytes], dest: Path) -> None:
    staging = Path(tempfile.mkdtemp(prefix=".model-", dir=dest.parent if dest.parent.is_dir()
                                    else None))
    try:
        with tarfile.open(fileobj=fileobj, mode="r:*") as archive:
            for member in archive.getmembers():
                target = (staging / member.name).resolve()
                if not (member.isfile() or member.isdir()) or \
                        not target.is_relative_to(staging.resolve()):
                    raise SystemExit(f"fetch_model: refusing archive member '{member.name}'")
            if hasattr(tarfile, "data_filter"):
                archive.extractall(staging, filter="data")
            else:  # Pythons without extraction filters: members were checked above
                archive.extractall(staging)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), str(dest))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit("usage: python fetch_model.py URL SHA256 DEST")
    fetch(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
