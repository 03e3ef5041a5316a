"""Model packages: pack, verify sha256s, refuse tampering, load every kind of target."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from modelport.errors import ConfigError, IntegrityError, InvalidInput
from modelport.package import MANIFEST, load_model, open_package, pack


def test_pack_records_name_version_flavor_libraries_signature_and_hashes(
        heart_package: Path) -> None:
    manifest = yaml.safe_load((heart_package / MANIFEST).read_text())
    assert (manifest["name"], manifest["version"], manifest["flavor"]) == ("heart", "1.0.0",
                                                                           "sklearn")
    assert "scikit-learn" in manifest["libraries"]
    assert set(manifest["files"]) == {"model.joblib", "golden.json", "reference.json"}
    assert manifest["reference"] == "reference.json"
    assert all(len(h) == 64 for h in manifest["files"].values())
    names = [f["name"] for f in manifest["signature"]["features"]]
    assert names[:3] == ["age", "sex", "cp"] and len(names) == 13
    thal = manifest["signature"]["features"][-1]
    assert thal["dtype"] == "string" and thal["categories"] == ["fixed", "normal", "reversible"]
    assert manifest["signature"]["classes"] == [0, 1]


def test_golden_rows_hold_the_models_own_outputs(heart_package: Path) -> None:
    pkg = open_package(heart_package)
    golden = pkg.golden()
    assert golden is not None and len(golden["inputs"]) == 8
    model = load_model(heart_package)
    out = model.runtime.predict(model.signature.from_records(golden["inputs"]))
    assert out.predictions.tolist() == golden["predictions"]


def test_tampered_artifact_is_refused(heart_package: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(heart_package, tmp_path / "heart"))
    with (copy / "model.joblib").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(IntegrityError, match=r"model\.joblib.*changed after packing"):
        load_model(copy)


def test_missing_listed_file_is_refused(heart_package: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(heart_package, tmp_path / "heart"))
    (copy / "golden.json").unlink()
    with pytest.raises(IntegrityError, match=r"golden\.json"):
        open_package(copy)


def test_pack_into_a_non_empty_directory_is_refused_and_leaves_it_alone(
        heart_model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        pack(heart_model_path, out, name="heart")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_failed_pack_leaves_no_half_written_package(heart_model_path: Path, tmp_path: Path,
                                                    heart_dir: Path) -> None:
    bad_ref = tmp_path / "ref.csv"
    bad_ref.write_text("age,sex\n1,2\n")
    with pytest.raises(InvalidInput, match="reference data lacks"):
        pack(heart_model_path, tmp_path / "pkg", name="heart", reference=bad_ref)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.csv"]


@pytest.mark.parametrize("name", ["", "has space", "-lead"], ids=["empty", "space", "dash"])
def test_invalid_names_are_refused(heart_model_path: Path, tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="name"):
        pack(heart_model_path, tmp_path / "pkg", name=name)
    assert not (tmp_path / "pkg").exists()


def test_bare_model_file_loads_with_a_pickle_warning(heart_model_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    model = load_model(heart_model_path)
    assert model.name == "heart" or model.name
    assert any("run code when loaded" in r.getMessage() for r in caplog.records)
    assert model.signature.input_kind == "dataframe"


def test_mlserver_model_settings_are_served(heart_model_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mls"
    folder.mkdir()
    shutil.copy(heart_model_path, folder / "model.joblib")
    (folder / "model-settings.json").write_text(json.dumps({
        "name": "heart-mls", "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v7"}}))
    model = load_model(folder / "model-settings.json")
    assert (model.name, model.version, model.runtime.flavor) == ("heart-mls", "v7", "sklearn")


def test_unknown_suffix_says_how_to_fix_it(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"x")
    with pytest.raises(ConfigError, match="known suffixes"):
        load_model(path)
