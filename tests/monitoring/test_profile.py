"""The reference profile: bins, vocabularies, outputs, JSON, and ``modelport profile``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from modelport.cli import app
from modelport.errors import InvalidInput
from modelport.monitoring.profile import (
    CategoricalProfile,
    NumericProfile,
    ReferenceProfile,
    build_profile,
    numeric_profile,
)
from modelport.package import open_package
from tests.monitoring.fixtures.drift_samples import SIGNATURE, columns, frame, predict


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    ref = frame(1000, seed=31)
    return build_profile(ref, SIGNATURE, predict(columns(ref)))


def _feature(profile: ReferenceProfile, name: str) -> NumericProfile | CategoricalProfile:
    return next(p for p in (*profile.features, *profile.outputs) if p.name == name)


def test_numeric_bins_are_reference_deciles(profile: ReferenceProfile) -> None:
    income = _feature(profile, "income")
    assert isinstance(income, NumericProfile)
    assert len(income.cuts) == 9
    assert income.counts[0] == income.counts[-2] == income.counts[-1] == 0
    assert all(95 <= c <= 105 for c in income.counts[1:-2])


def test_a_column_with_few_values_gets_one_bin_per_value(profile: ReferenceProfile) -> None:
    children = _feature(profile, "children")
    assert isinstance(children, NumericProfile) and children.discrete
    assert children.labels()[1:4] == ("0", "1", "2")


def test_values_are_binned_with_underflow_overflow_and_missing() -> None:
    prof = numeric_profile("x", np.array([1.0, 2.0, 3.0, 4.0, 5.0]), bins=2)
    assert prof.cuts == (3.0,)
    got = prof.bin_index(np.array([0.5, 1.0, 2.9, 3.0, 5.0, 5.1, np.nan, np.inf]))
    assert got.tolist() == [0, 1, 1, 2, 2, 3, 4, 3]


def test_categorical_features_keep_the_signature_vocabulary(profile: ReferenceProfile) -> None:
    region = _feature(profile, "region")
    assert isinstance(region, CategoricalProfile)
    assert region.vocabulary == ("north", "south", "east", "west")
    assert region.labels()[-2:] == ("__other__", "missing")
    member = _feature(profile, "member")
    assert isinstance(member, CategoricalProfile) and member.vocabulary == (False, True)


def test_missing_values_are_counted_in_the_reference(profile: ReferenceProfile) -> None:
    score = _feature(profile, "score")
    assert score.counts[-1] == score.moments.missing > 0


def test_outputs_get_class_shares_and_positive_class_probability_bins(
        profile: ReferenceProfile) -> None:
    assert [p.name for p in profile.outputs] == ["prediction", "proba[yes]"]
    assert profile.output_sources == (-1, 1)
    prediction = _feature(profile, "prediction")
    assert isinstance(prediction, CategoricalProfile)
    assert prediction.vocabulary == ("no", "yes") and sum(prediction.counts) == 1000


def test_json_round_trip_keeps_the_profile_and_its_digest(profile: ReferenceProfile) -> None:
    again = ReferenceProfile.from_json(profile.to_json())
    assert again == profile
    assert again.digest() == profile.digest()
    assert len(profile.to_json()) < 20_000


def test_a_feature_absent_from_the_data_is_named() -> None:
    with pytest.raises(InvalidInput, match="field 'region'"):
        build_profile(frame(50, seed=1).drop(columns=["region"]), SIGNATURE)


def test_text_in_a_numeric_feature_is_named() -> None:
    bad = frame(50, seed=1).astype({"income": object})
    bad.loc[3, "income"] = "lots"
    with pytest.raises(InvalidInput, match="field 'income'"):
        build_profile(bad, SIGNATURE)


def test_a_feature_without_any_value_is_refused() -> None:
    bad = frame(50, seed=1)
    bad["score"] = np.nan
    with pytest.raises(InvalidInput, match=r"field 'score'.*all missing"):
        build_profile(bad, SIGNATURE)


def test_empty_reference_data_is_refused() -> None:
    with pytest.raises(InvalidInput, match="no rows"):
        build_profile(frame(0, seed=1), SIGNATURE)


def test_the_profile_command_adds_a_hashed_reference_to_the_package(
        heart_package: Path, heart_frame: pd.DataFrame, tmp_path: Path) -> None:
    pkg = tmp_path / "heart"
    shutil.copytree(heart_package, pkg)
    data = tmp_path / "holdout.csv"
    heart_frame.tail(400).to_csv(data, index=False)
    result = CliRunner().invoke(app, ["profile", str(data), "--package", str(pkg)])
    assert result.exit_code == 0, result.output
    opened = open_package(pkg)  # verifies every sha256, reference.json included
    assert opened.manifest.reference == "reference.json"
    assert "reference.json" in opened.manifest.files
    assert opened.reference_path is not None
    prof = ReferenceProfile.from_json(opened.reference_path.read_text())
    assert prof.rows == 400
    assert [p.name for p in prof.outputs] == ["prediction", "proba[1]"]
    assert isinstance(next(p for p in prof.features if p.name == "thal"), CategoricalProfile)
