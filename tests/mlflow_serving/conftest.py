"""Small models saved the way MLflow users save them, and a way to run a process without
mlflow.

Every model is trained here on a few hundred synthetic rows; ``pip_requirements`` is given to
``save_model`` so that MLflow does not spend seconds inferring it.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

BLOCK_MLFLOW = '''"""Test helper: importing mlflow fails here, and each attempt is written down."""
import os
import sys


class _NoMlflow:
    def find_spec(self, name, path=None, target=None):
        if name == "mlflow" or name.startswith("mlflow."):
            with open(os.environ["MLFLOW_IMPORT_LOG"], "a", encoding="utf-8") as log:
                log.write(name + "\\n")
            raise ImportError(f"mlflow is blocked in this process ({name})")
        return None


sys.meta_path.insert(0, _NoMlflow())
'''


@dataclass(frozen=True)
class Saved:
    """A model saved with ``mlflow.<flavor>.save_model``, with the data it was trained on."""

    path: Path
    frame: pd.DataFrame
    model: Any


@pytest.fixture(scope="session")
def mlflow_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Saved]:
    """``ab``: a LogisticRegression on two number columns ``a`` and ``b`` (the columns of
    mlflow's own request examples), saved with MLflow's default serialization (skops), a
    signature and an input example. ``mixed``: a Pipeline on an integer, a number and a string
    category, saved as a cloudpickle. ``bare``: a Ridge regression without signature or
    example. ``xgb``: an XGBClassifier."""
    import mlflow.sklearn
    import mlflow.xgboost
    import xgboost
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    root = tmp_path_factory.mktemp("mlflow-models")
    rng = np.random.default_rng(14)
    sk = [f"scikit-learn=={version('scikit-learn')}"]
    ab = pd.DataFrame({"a": rng.normal(3, 2, 300), "b": rng.normal(4, 2, 300)})
    ab_y = (ab["a"] + rng.normal(0, 1, 300) > ab["b"]).astype(int)
    ab_model = LogisticRegression().fit(ab, ab_y)
    mlflow.sklearn.save_model(ab_model, root / "ab", pip_requirements=sk,
                              signature=infer_signature(ab, ab_model.predict(ab)),
                              input_example=ab.head(3))

    mixed = pd.DataFrame({"age": rng.integers(20, 80, 300), "dose": rng.normal(1, 0.5, 300),
                          "kind": rng.choice(["a", "b", "c"], 300)})
    mixed_y = np.where((mixed["age"] > 50) ^ (mixed["kind"] == "a"), "sick", "well")
    pre = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), ["kind"])],
                            remainder="passthrough")
    pipe = Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=1000))]).fit(mixed,
                                                                                   mixed_y)
    mlflow.sklearn.save_model(pipe, root / "mixed", serialization_format="cloudpickle",
                              pip_requirements=sk,
                              signature=infer_signature(mixed, pipe.predict(mixed)),
                              input_example=mixed.head(4))

    reg = Ridge().fit(ab, ab["a"] * 2 - ab["b"])
    mlflow.sklearn.save_model(reg, root / "bare", serialization_format="cloudpickle",
                              pip_requirements=sk)

    xgb = xgboost.XGBClassifier(n_estimators=8, max_depth=3).fit(ab, ab_y)
    mlflow.xgboost.save_model(xgb, root / "xgb", input_example=ab.head(2),
                              pip_requirements=[f"xgboost=={version('xgboost')}"])
    return {"ab": Saved(root / "ab", ab, ab_model), "mixed": Saved(root / "mixed", mixed, pipe),
            "bare": Saved(root / "bare", ab, reg), "xgb": Saved(root / "xgb", ab, xgb)}


@pytest.fixture(scope="session")
def no_mlflow(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for a subprocess in which ``import mlflow`` fails (a ``sitecustomize``
    first on its path); each attempt is appended to the file ``MLFLOW_IMPORT_LOG`` names."""
    root = tmp_path_factory.mktemp("no-mlflow")
    (root / "sitecustomize.py").write_text(BLOCK_MLFLOW, encoding="utf-8")
    repo = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join([str(root), repo, os.environ.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)
    return {**os.environ, "PYTHONPATH": path, "MLFLOW_IMPORT_LOG": str(root / "imports.log"),
            "PYTHONNOUSERSITE": "1"}


def pyfunc_predict(path: Path, frame: pd.DataFrame) -> list[Any]:
    """What mlflow's own pyfunc answers for ``frame``."""
    import mlflow.pyfunc

    answer = mlflow.pyfunc.load_model(str(path)).predict(frame)
    return np.asarray(answer).tolist()


def python() -> str:
    """The interpreter running the tests (its virtual environment's)."""
    return sys.executable


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of ``frame`` as JSON-ready records, every float exact."""
    return [{k: v.item() if hasattr(v, "item") else v for k, v in row.items()}
            for row in frame.to_dict(orient="records")]


def mlflow_answer(path: Path, body: str | bytes, content_type: str = "application/json") -> Any:
    """What ``mlflow models serve`` answers for ``body``: mlflow's own request handler
    (``mlflow.pyfunc.scoring_server.invocations``) on the model loaded by ``mlflow.pyfunc``.
    Raises mlflow's exception where its server answers an error."""
    import mlflow.pyfunc
    from mlflow.pyfunc.scoring_server import invocations

    model = mlflow.pyfunc.load_model(str(path))
    with warnings.catch_warnings():  # as in its server: scikit-learn's warnings are no errors
        warnings.simplefilter("ignore")
        answer = invocations(body, content_type, model, model.metadata.get_input_schema())
    assert answer.status == 200, answer.response
    return json.loads(answer.response)
