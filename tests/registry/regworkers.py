"""Helpers for the registry tests, importable by worker processes (spawned, not forked)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml

from modelport.package import MANIFEST, Manifest, file_sha256
from modelport.registry import Registry


def make_package(root: Path, content: bytes, name: str = "tiny") -> Path:
    """A package directory with one artifact of ``content`` (catalog tests never load it)."""
    root.mkdir(parents=True)
    (root / "model.joblib").write_bytes(content)
    (root / "golden.json").write_text('{"inputs": [], "predictions": []}', encoding="utf-8")
    manifest = Manifest(
        name=name, version="0.0.1", flavor="sklearn", artifact="model.joblib",
        created="2025-01-01T00:00:00+00:00", python="3.11", libraries={}, signature={},
        files={p.name: file_sha256(p) for p in sorted(root.iterdir())}, golden="golden.json",
    )
    (root / MANIFEST).write_text(yaml.safe_dump(manifest.model_dump(exclude_none=True)),
                                 encoding="utf-8")
    return root


def push_and_move(db_url: str, store: str, worker: int, rounds: int) -> list[str]:
    """In its own process: push ``rounds`` versions (next patch each) and move
    ``production`` to each; returns the versions it got."""
    got = []
    with Registry.open(db_url, Path(store)) as reg, tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds):
            pkg = make_package(Path(tmp) / f"p{i}", f"worker {worker} round {i}".encode())
            version = reg.push(pkg, "shared", actor=f"w{worker}").version
            reg.set_alias("shared", "production", version, actor=f"w{worker}")
            got.append(version)
    return got
