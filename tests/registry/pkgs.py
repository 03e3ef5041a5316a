"""Packages of the example model made to fail (or to disagree) on purpose."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from modelport.package import open_package, write_manifest


def broken_golden(heart_package: Path, out: Path) -> Path:
    """A package that loads but whose recorded golden outputs disagree with the model."""
    shutil.copytree(heart_package, out)
    golden = json.loads((out / "golden.json").read_text())
    golden["predictions"] = [1 - p for p in golden["predictions"]]
    (out / "golden.json").write_text(json.dumps(golden))
    write_manifest(open_package(out, verify=False))
    return out


def unloadable(heart_package: Path, out: Path) -> Path:
    """A package whose artifact is not a model (its sha256s are right: it fails to load)."""
    shutil.copytree(heart_package, out)
    (out / "model.joblib").write_bytes(b"not a model")
    write_manifest(open_package(out, verify=False))
    return out


def contrarian(heart_dir: Path, out: Path) -> Path:
    """A package of the example pipeline trained on the flipped label: same signature, and
    it disagrees with the example model on nearly every row."""
    import joblib
    import pandas as pd
    from sklearn.base import clone

    from modelport.package import pack

    frame = pd.read_csv(heart_dir / "heart.csv")
    model = clone(joblib.load(heart_dir / "model.joblib"))
    model.set_params(clf__n_estimators=10)
    model.fit(frame.drop(columns="condition"), 1 - frame["condition"])
    joblib.dump(model, out.parent / "contrarian.joblib")
    pack(out.parent / "contrarian.joblib", out, name="heart", version="1.0.0",
         reference=heart_dir / "heart.csv", target="condition")
    return out
