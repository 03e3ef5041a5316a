"""Session fixtures: tiny real models trained once, and packages made from them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "heart"


def _example_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("heart_train", EXAMPLE / "train.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["heart_train"] = module
    spec.loader.exec_module(module)
    return module


heart = _example_module()


@pytest.fixture(scope="session")
def heart_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``heart.csv`` + ``model.joblib`` from the bundled example's training script."""
    out = tmp_path_factory.mktemp("heart")
    heart.train(out)
    return out


@pytest.fixture(scope="session")
def heart_frame(heart_dir: Path) -> pd.DataFrame:
    """The synthetic heart data, features plus ``condition``."""
    return pd.read_csv(heart_dir / "heart.csv")


@pytest.fixture(scope="session")
def heart_features(heart_frame: pd.DataFrame) -> pd.DataFrame:
    """The 13 feature columns only."""
    return heart_frame[heart.FEATURES]


@pytest.fixture(scope="session")
def heart_model_path(heart_dir: Path) -> Path:
    """The example Pipeline as a joblib file."""
    return heart_dir / "model.joblib"


@pytest.fixture(scope="session")
def heart_package(heart_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A verified package of the example model, with golden rows from the data. Read-only:
    copy it (``shutil.copytree``) before changing anything in it."""
    from modelport.package import pack

    out = tmp_path_factory.mktemp("pkg") / "heart"
    pack(heart_dir / "model.joblib", out, name="heart", version="1.0.0",
         reference=heart_dir / "heart.csv", target="condition")
    return out
