"""The artifact store: content-addressed, verified on every fetch, corrupted files refused."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelport.errors import IntegrityError
from modelport.package import load_model, open_package
from modelport.registry import Registry


@pytest.fixture
def reg(sqlite_url: str, tmp_path: Path) -> Iterator[Registry]:
    """The store does not depend on the catalog's database: SQLite is enough here."""
    with Registry.open(sqlite_url, tmp_path / "store") as registry:
        yield registry


def _corrupt(path: Path) -> None:
    path.chmod(0o644)
    path.write_bytes(path.read_bytes() + b"tampered")


def test_fetch_gives_a_verified_package_with_the_registry_version(reg: Registry,
                                                                  package: Path) -> None:
    reg.push(package, "heart", "1.2.0")
    pkg = open_package(reg.fetch("heart:1.2.0"))
    assert (pkg.manifest.name, pkg.manifest.version) == ("heart", "1.2.0")


def test_equal_content_is_stored_once(reg: Registry, package: Path) -> None:
    first = reg.push(package, "heart")
    second = reg.push(package, "other")
    objects = [p for p in (reg.store.root / "objects").rglob("*") if p.is_file()]
    assert first.digest == second.digest
    assert len(objects) == len(first.files)


def test_a_corrupted_store_object_is_refused_on_fetch(reg: Registry, package: Path) -> None:
    record = reg.push(package, "heart")
    reg.fetch("heart")
    _corrupt(reg.store.object_path(record.files["model.joblib"]))
    with pytest.raises(IntegrityError, match=r"'model.joblib' of heart:1\.0\.0.*altered"):
        reg.fetch("heart")


def test_a_missing_store_object_is_refused_on_fetch(reg: Registry, package: Path) -> None:
    record = reg.push(package, "heart")
    path = reg.store.object_path(record.files["golden.json"])
    path.chmod(0o644)
    path.unlink()
    with pytest.raises(IntegrityError, match="the store has no object"):
        reg.fetch("heart")


def test_a_changed_checkout_is_rebuilt_from_the_store(reg: Registry, package: Path) -> None:
    reg.push(package, "heart")
    checkout = reg.fetch("heart")
    (checkout / "model.joblib").write_bytes(b"changed on disk")
    assert (reg.fetch("heart") / "model.joblib").read_bytes() == b"weights v1"


def test_push_of_a_tampered_package_is_refused(reg: Registry, package: Path) -> None:
    (package / "model.joblib").write_bytes(b"swapped after packing")
    with pytest.raises(IntegrityError, match="changed after packing"):
        reg.push(package, "heart")
    assert reg.models() == []


def test_delete_removes_the_checkout(reg: Registry, package: Path) -> None:
    reg.push(package, "heart")
    checkout = reg.fetch("heart:1.0.0")
    reg.delete("heart", "1.0.0")
    assert not checkout.exists()


def test_a_real_package_round_trips_and_predicts(reg: Registry, heart_package: Path) -> None:
    reg.push(heart_package, "heart", "3.1.4")
    model = load_model(reg.fetch("heart:3.1.4"))
    golden = open_package(heart_package).golden()
    assert golden is not None
    outputs = model.runtime.predict(model.signature.from_records(golden["inputs"]))
    assert model.version == "3.1.4"
    assert outputs.predictions.tolist() == golden["predictions"]


def test_a_bare_model_file_is_packed_on_push(reg: Registry, heart_model_path: Path,
                                             tmp_path: Path) -> None:
    copy = tmp_path / "model.joblib"
    shutil.copyfile(heart_model_path, copy)
    record = reg.push(copy, "heart")
    assert (record.version, record.flavor) == ("1.0.0", "sklearn")
    assert load_model(reg.fetch("heart")).version == "1.0.0"


def test_replicas_fetching_the_same_version_at_once_never_pull_it_from_each_other(
        reg: Registry, package: Path) -> None:
    """Replicas sharing a store check out the same version as they start: a writer that
    finishes second keeps the first one's checkout rather than moving it aside, so a replica
    that already holds the path can always read it."""
    import threading

    reg.push(package, "heart", "1.2.0")
    problems: list[BaseException] = []
    start = threading.Barrier(6)

    def replica() -> None:
        start.wait()
        try:
            for _ in range(20):
                path = reg.fetch("heart:1.2.0")
                open_package(path)
        except BaseException as exc:  # collected: a thread's failure must fail the test
            problems.append(exc)

    for _ in range(5):
        shutil.rmtree(reg.store.root / "packages", ignore_errors=True)
        threads = [threading.Thread(target=replica) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert problems == []
