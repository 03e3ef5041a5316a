"""``import modelport`` is cheap and silent, and its public list is honest."""

from __future__ import annotations

import json
import subprocess
import sys

import modelport

HEAVY = ["fastapi", "starlette", "uvicorn", "sklearn", "onnxruntime", "xgboost", "lightgbm",
         "pandas", "scipy", "prometheus_client", "sqlalchemy", "torch", "dask", "shap",
         "opentelemetry"]


def test_import_modelport_imports_no_framework_or_backend() -> None:
    code = ("import sys, json, modelport; "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout) == []
    assert out.stderr == ""


def test_public_names_are_exactly_all() -> None:
    public = {n for n in dir(modelport) if not n.startswith("_")} - {
        "errors", "types", "signature", "config", "runtimes", "package", "golden", "batching",
        "server", "monitoring", "registry", "traffic", "deploy", "tools", "cli", "cache",
        "explain", "annotations", "mlflow_model"}
    assert public == set(modelport.__all__) - {"__version__"}
    assert modelport.__all__ == sorted(modelport.__all__, key=lambda n: (n.startswith("_"), n))
