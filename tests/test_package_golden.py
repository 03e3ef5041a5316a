"""Golden rows always: made from the signature without data, and a model that fails them is
refused by ``pack`` (nothing written) and by :func:`check_candidate`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from modelport.cli import app
from modelport.errors import GoldenCheckFailed
from modelport.golden import MAX_GENERATED, boundary_records, check_own, signatures_match
from modelport.package import load_model, open_package, pack
from modelport.registry.gate import check_candidate
from modelport.signature import Feature, Signature
from tests.registry.brokenmodels import fails_above, log_pipeline

MODEL_ERROR = r"(Input X contains (NaN|infinity)|non-finite)"
"""The log pipeline's failure: scikit-learn's own error (or NaN answers, were its check off)."""


@pytest.fixture(scope="module")
def broken(heart_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The issue's Pipeline with a log step: every row turns NaN inside it."""
    return log_pipeline(heart_dir, tmp_path_factory.mktemp("broken") / "broken.joblib")


def _sig(*features: Feature) -> Signature:
    return Signature(features=features, input_kind="dataframe")


def test_the_first_generated_row_is_the_signature_example() -> None:
    sig = _sig(Feature("a", "float", example=2.5), Feature("c", "string", ("x", "y")))
    assert boundary_records(sig)[0] == {"a": 2.5, "c": "x"}


@pytest.mark.parametrize(("feature", "changed"), [
    (Feature("n", "float", example=2.5), [0.0, 1.0]),
    (Feature("n", "float"), [1.0]),
    (Feature("i", "int", example=0), [1]),
    (Feature("c", "string", ("a", "b", "c", "d")), ["d", "b"]),
    (Feature("c", "int", (3, 7), example=7), [3]),
    (Feature("b", "bool", example=True), [False]),
    (Feature("n", "float", nullable=True, example=0.0), [1.0, None]),
    (Feature("s", "string"), []),
], ids=["number", "number-no-example", "integer", "categories-first-last", "codes",
        "boolean", "nullable", "open-string"])
def test_boundary_rows_change_one_feature_to_a_value_the_signature_knows(
        feature: Feature, changed: list[Any]) -> None:
    other = Feature("other", "float", example=5.0)
    rows = boundary_records(_sig(other, feature))
    mine = [r[feature.name] for r in rows[1:] if r["other"] == 5.0]
    assert mine == changed
    assert all(r["other"] == 5.0 or r[feature.name] == rows[0][feature.name] for r in rows[1:])


def test_a_wide_signature_gets_one_row_per_feature_first_and_is_capped() -> None:
    sig = _sig(*(Feature(f"x{i}", "float", example=3.0) for i in range(100)))
    rows = boundary_records(sig)
    assert len(rows) == MAX_GENERATED
    assert [next(k for k in r if r[k] != 3.0) for r in rows[1:]] == [
        f"x{i}" for i in range(MAX_GENERATED - 1)]


def test_pack_without_data_records_golden_rows_from_the_signature(
        heart_model_path: Path, tmp_path: Path) -> None:
    pkg = pack(heart_model_path, tmp_path / "bare", name="heart")
    golden = pkg.golden()
    assert golden is not None and pkg.manifest.golden == "golden.json"
    assert golden["inputs"] == boundary_records(pkg.signature)
    model = load_model(pkg.root)
    answered = model.runtime.predict(model.signature.from_records(golden["inputs"]))
    assert answered.predictions.tolist() == golden["predictions"]
    assert answered.probabilities is not None
    assert answered.probabilities.tolist() == golden["probabilities"]


def test_pack_refuses_the_broken_pipeline_naming_the_row_and_the_error(
        broken: Path, tmp_path: Path) -> None:
    out = tmp_path / "packages" / "heart"
    with pytest.raises(GoldenCheckFailed, match=MODEL_ERROR) as refused:
        pack(broken, out, name="heart")
    assert 'refused: golden row 0 {"age": 0.0,' in refused.value.message
    assert not (tmp_path / "packages").exists()


def test_pack_with_data_refuses_it_too(broken: Path, heart_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(GoldenCheckFailed, match=MODEL_ERROR) as refused:
        pack(broken, tmp_path / "heart", name="heart", reference=heart_dir / "heart.csv",
             target="condition")
    first = pd.read_csv(heart_dir / "heart.csv").iloc[0]
    assert f'golden row 0 {{"age": {first["age"]}, ' in refused.value.message
    assert list(tmp_path.iterdir()) == []


def test_the_row_named_is_the_first_the_model_raises_on(
        heart_dir: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(heart_dir / "heart.csv").head(8)
    limit = float(frame["age"].iloc[:3].max())
    above = (frame["age"] > limit).to_numpy()
    assert above.any()
    first_bad = int(above.argmax())
    model = fails_above(heart_dir, tmp_path / "fails.joblib", feature="age", limit=limit)
    with pytest.raises(GoldenCheckFailed) as refused:
        pack(model, tmp_path / "heart", name="heart", reference=heart_dir / "heart.csv",
             target="condition")
    assert f"golden row {first_bad} " in refused.value.message
    assert f"the model raised ValueError: age={frame['age'].iloc[first_bad]} is above" in \
        refused.value.message


def test_modelport_pack_exits_non_zero_with_the_refusal(broken: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["pack", str(broken), "--name", "heart",
                                      "--out", str(tmp_path / "heart")])
    assert result.exit_code != 0
    assert isinstance(result.exception, GoldenCheckFailed)
    assert not (tmp_path / "heart").exists()


def test_a_candidate_raising_on_the_live_versions_golden_inputs_is_refused(
        heart_dir: Path, heart_package: Path, tmp_path: Path) -> None:
    """Its own generated rows (ages 0 and 1) pass; the live version's real rows do not."""
    fails = fails_above(heart_dir, tmp_path / "fails.joblib", feature="age", limit=50)
    candidate = load_model(pack(fails, tmp_path / "new", name="heart", version="2.0.0").root)
    live = open_package(heart_package)
    assert signatures_match(candidate.signature, live.signature)
    with pytest.raises(GoldenCheckFailed, match=r"heart:2\.0\.0 refused: golden row \d+ of "
                                                r"the live version heart:1\.0\.0 \{"):
        check_candidate(candidate, live)
    assert check_candidate(candidate) == len(boundary_records(candidate.signature))


def test_a_candidate_answering_differently_from_its_record_is_refused(
        heart_package: Path, tmp_path: Path) -> None:
    model = load_model(heart_package)
    golden = open_package(heart_package).golden()
    assert golden is not None
    flipped = golden | {"predictions": [1 - p for p in golden["predictions"]]}
    with pytest.raises(GoldenCheckFailed, match=r"golden check failed for heart:1\.0\.0: 8 of 8"):
        check_own(model.runtime, flipped, what="heart:1.0.0")


def test_a_package_without_golden_rows_is_checked_on_generated_ones(
        broken: Path, heart_package: Path, tmp_path: Path) -> None:
    """An old package (or one edited by hand) with the broken model in it."""
    import shutil

    from modelport.package import write_manifest

    root = Path(shutil.copytree(heart_package, tmp_path / "old"))
    shutil.copyfile(broken, root / "model.joblib")
    (root / "golden.json").unlink()
    write_manifest(open_package(root, verify=False), golden=None)
    assert open_package(root).golden() is None
    with pytest.raises(GoldenCheckFailed, match=MODEL_ERROR):
        check_candidate(load_model(root))
