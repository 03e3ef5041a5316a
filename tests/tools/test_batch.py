"""Offline batch scoring: chunks, formats, rejects, atomic output, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from modelport.cli import app
from modelport.errors import ConfigError, InvalidInput
from modelport.package import load_model
from modelport.tools import batch


@pytest.fixture
def frame(heart_features: pd.DataFrame) -> pd.DataFrame:
    """200 heart rows with a ``pid`` id column first."""
    df = heart_features.head(200).copy()
    df.insert(0, "pid", np.arange(1000, 1200))
    return df


def _write(df: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_json(path, orient="records", lines=True)
    return path


def test_output_keeps_id_columns_and_adds_prediction_and_probabilities(
        heart_package: Path, frame: pd.DataFrame, tmp_path: Path) -> None:
    src = _write(frame, tmp_path / "in.csv")
    result = batch.score(heart_package, str(src), tmp_path / "out.parquet", id_cols=["pid"])
    out = pd.read_parquet(result.output)
    model = load_model(heart_package)
    expected = model.runtime.predict(model.signature.from_records(
        frame.drop(columns="pid").to_dict("records")))
    assert list(out.columns) == ["pid", "prediction", "proba_0", "proba_1"]
    assert out["pid"].tolist() == frame["pid"].tolist()
    assert out["prediction"].tolist() == expected.predictions.tolist()
    assert np.allclose(out[["proba_0", "proba_1"]].to_numpy(), expected.probabilities)
    assert (result.rows_in, result.scored, result.rejected) == (200, 200, 0)


BAD = [
    ("age", "old", "expected a number, got 'old'"),
    ("chol", None, "missing value (null/NaN) is not accepted by this model"),
    ("thal", "weird", "unseen category 'weird'"),
    ("cp", 7, "unseen category 7"),
    ("age", 50.5, "expected an integer, got 50.5"),
]


@pytest.mark.parametrize(("field", "value", "message"), BAD, ids=[b[2][:20] for b in BAD])
def test_a_bad_row_goes_to_rejects_with_its_reason_and_the_rest_is_scored(
        heart_package: Path, frame: pd.DataFrame, tmp_path: Path, *, field: str,
        value: object, message: str) -> None:
    df = frame.astype({field: object})
    df.loc[7, field] = value
    src = _write(df, tmp_path / "in.jsonl")
    result = batch.score(heart_package, str(src), tmp_path / "out.parquet", id_cols=["pid"],
                         chunk_rows=64)
    rejects = pd.read_parquet(result.rejects)
    assert (result.rows_in, result.scored, result.rejected) == (200, 199, 1)
    assert rejects[["source", "row", "field"]].values.tolist() == [["in.jsonl", 7, field]]
    assert rejects["message"][0].startswith(message)
    assert 1007 not in pd.read_parquet(result.output)["pid"].tolist()


def test_rejects_are_counted_per_row_across_chunks(
        heart_package: Path, frame: pd.DataFrame, tmp_path: Path) -> None:
    df = frame.astype({"thal": object, "age": float})
    df.loc[[3, 70, 150], "thal"] = None
    df.loc[150, "age"] = -1.5
    result = batch.score(heart_package, str(_write(df, tmp_path / "in.csv")),
                         tmp_path / "out.parquet", chunk_rows=50)
    rejects = pd.read_parquet(result.rejects)
    assert rejects["row"].tolist() == [3, 70, 150]
    assert result.scored + result.rejected == result.rows_in == 200


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_parquet_and_json_lines_score_like_csv(
        heart_package: Path, frame: pd.DataFrame, tmp_path: Path, suffix: str) -> None:
    csv = batch.score(heart_package, str(_write(frame, tmp_path / "in.csv")),
                      tmp_path / "a.parquet", id_cols=["pid"])
    other = batch.score(heart_package, str(_write(frame, tmp_path / f"in{suffix}")),
                        tmp_path / "b.parquet", id_cols=["pid"], chunk_rows=33)
    assert pq.read_table(csv.output).equals(pq.read_table(other.output))


def test_a_glob_scores_every_matching_file_in_name_order(
        heart_package: Path, frame: pd.DataFrame, tmp_path: Path) -> None:
    _write(frame.iloc[100:], tmp_path / "part-2.parquet")
    _write(frame.iloc[:100], tmp_path / "part-1.parquet")
    result = batch.score(heart_package, str(tmp_path / "part-*.parquet"),
                         tmp_path / "out.parquet", id_cols=["pid"], chunk_rows=40)
    assert pd.read_parquet(result.output)["pid"].tolist() == frame["pid"].tolist()
    assert batch.count_rows(batch.resolve_inputs(str(tmp_path / "part-*.parquet"))) == 200


def test_csv_output_when_asked(heart_package: Path, frame: pd.DataFrame, tmp_path: Path) -> None:
    result = batch.score(heart_package, str(_write(frame, tmp_path / "in.csv")),
                         tmp_path / "out.csv", id_cols=["pid"], rejects=tmp_path / "bad.csv")
    assert pd.read_csv(result.output).shape == (200, 4)
    assert list(pd.read_csv(tmp_path / "bad.csv").columns) == ["source", "row", "field",
                                                               "message"]


def test_a_missing_feature_column_names_it_and_leaves_no_output(
        heart_package: Path, frame: pd.DataFrame, tmp_path: Path) -> None:
    src = _write(frame.drop(columns="thal"), tmp_path / "in.csv")
    with pytest.raises(InvalidInput, match="field 'thal'"):
        batch.score(heart_package, str(src), tmp_path / "out.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_an_unknown_id_column_is_a_clear_error(
        heart_package: Path, frame: pd.DataFrame, tmp_path: Path) -> None:
    src = _write(frame, tmp_path / "in.csv")
    with pytest.raises(ConfigError, match="id column 'patient'"):
        batch.score(heart_package, str(src), tmp_path / "out.parquet", id_cols=["patient"])


def test_no_matching_input_is_a_clear_error(heart_package: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no input file matches"):
        batch.score(heart_package, str(tmp_path / "*.csv"), tmp_path / "out.parquet")


def test_predict_command_reports_counts(
        heart_package: Path, frame: pd.DataFrame, tmp_path: Path) -> None:
    df = frame.astype({"age": str})
    df.loc[0, "age"] = "n/a"
    src = _write(df, tmp_path / "in.parquet")
    out = tmp_path / "preds.parquet"
    result = CliRunner().invoke(app, ["predict", str(heart_package), str(src), "--out",
                                      str(out), "--id-cols", "pid", "--chunk-rows", "64"])
    assert result.exit_code == 0, result.output
    assert "rows in: 200  scored: 199  rejected: 1" in result.output
    assert pq.read_metadata(out).num_rows == 199
