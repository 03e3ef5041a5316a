"""``modelport registry push`` killed with SIGKILL at several points of a 64 MiB push.

Whatever the moment, the catalog shows no version that is not whole, the store holds no object
whose content differs from its name (a killed writer's temporary file may stay, never under an
object's name, and the next write into its directory removes it), and pushing the same version
again succeeds and loads, every sha256 verified.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from modelport.package import file_sha256, load_model, open_package, write_manifest
from modelport.registry import Registry

pytestmark = pytest.mark.e2e

BIG = 64 * 1024 * 1024
SEED = 12


def _with_weights(heart_package: Path, out: Path, seed: int) -> tuple[Path, str]:
    """A copy of the example package with a BIG file of fresh bytes; its sha256."""
    if not out.exists():
        shutil.copytree(heart_package, out)
    (out / "weights.bin").write_bytes(random.Random(seed).randbytes(BIG))
    write_manifest(open_package(out, verify=False))
    return out, file_sha256(out / "weights.bin")


def _push(package: Path, version: str, db: str, store: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "modelport", "registry", "push", str(package), "--name", "heart",
         "--version", version, "--db", db, "--store", str(store)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})


def _temporaries(directory: Path) -> list[Path]:
    return list(directory.glob(".tmp-*")) if directory.is_dir() else []


def _kill_when(proc: subprocess.Popen[bytes], moment: Callable[[], bool]) -> bool:
    """SIGKILL ``proc`` as soon as ``moment()`` is true; False if it finished first."""
    while proc.poll() is None:
        if moment():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.001)
    return False


def _copied(directory: Path, share: float) -> Callable[[], bool]:
    """True once a temporary file in ``directory`` holds ``share`` of BIG."""
    def probe() -> bool:
        for tmp in _temporaries(directory):
            try:
                if tmp.stat().st_size >= share * BIG:
                    return True
            except FileNotFoundError:
                pass
        return False
    return probe


def _after(seconds: float) -> Callable[[], bool]:
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() >= deadline


def _aftermath(reg: Registry, version: str, obj: Path) -> str:
    """Where the kill landed, read from what it left."""
    if version in {v.version for v in reg.versions("heart")}:
        return "after the commit"
    if obj.exists():
        return "object stored, version not committed"
    if _temporaries(obj.parent):
        return "while copying the object"
    return "before the store"


def _assert_consistent(reg: Registry) -> None:
    """Every listed version is whole; every object's content matches its name."""
    for record in reg.versions("heart"):
        open_package(reg.fetch(record.ref))
    for path in (reg.store.root / "objects").glob("*/*"):
        if not path.name.startswith("."):
            assert file_sha256(path) == path.name, f"{path} is not what its name says"


def test_a_push_killed_at_any_moment_leaves_nothing_half_written(
        heart_package: Path, tmp_path: Path) -> None:
    db, store = f"sqlite:///{tmp_path / 'registry.db'}", tmp_path / "store"
    rng = random.Random(SEED)
    with Registry.open(db, store) as reg:
        package, sha = _with_weights(heart_package, tmp_path / "big", 0)
        started = time.monotonic()
        first = _push(package, "1.0.0", db, store)
        _, err = first.communicate(timeout=60)
        assert first.returncode == 0, err.decode()
        whole = time.monotonic() - started
        moments: list[tuple[str, Callable[[Path], Callable[[], bool]]]] = [
            ("a quarter copied", lambda d: _copied(d, 0.25)),
            ("three quarters copied", lambda d: _copied(d, 0.75)),
            ("object in place", lambda d: lambda: any(d.glob("[0-9a-f]*"))),
            ("at a random time", lambda d: _after(rng.uniform(0.3, 1.0) * whole)),
        ]
        landed = []
        for i, (name, moment) in enumerate(moments, start=1):
            version = f"1.0.{i}"
            package, sha = _with_weights(heart_package, package, i)
            obj = reg.store.object_path(sha)
            proc = _push(package, version, db, store)
            killed = _kill_when(proc, moment(obj.parent))
            if proc.stderr is not None:
                proc.stderr.close()
            landed.append(f"{name}: {_aftermath(reg, version, obj) if killed else 'finished'}")
            _assert_consistent(reg)
            if version not in {v.version for v in reg.versions("heart")}:
                reg.push(package, "heart", version)
            assert _temporaries(obj.parent) == []
            loaded = load_model(reg.fetch(f"heart:{version}"))
            assert loaded.version == version
        history = [v.version for v in reg.versions("heart")]
    print(f"\npush of {BIG >> 20} MiB ({whole:.2f} s whole) killed: " + "; ".join(landed))
    assert history == ["1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4"]
    assert sum("finished" not in x and "after the commit" not in x for x in landed) >= 2
