"""``--device`` / ``--providers``: ``auto`` falls back to the CPU and says so; an explicit
accelerator that is not there stops the start with an error naming what is missing.

This machine has no GPU and the CPU build of onnxruntime; a GPU machine would take the other
branch of ``auto`` (what the fallback tests check is the CPU answer and the log line).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from modelport.config import Settings
from modelport.errors import ConfigError
from modelport.package import load_model
from modelport.runtimes import device_of, load_runtime
from modelport.runtimes.devices import Placement, cuda_device_count
from modelport.server.factory import build_app
from tests.runtimes.conftest import Saved

ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.skipif(
    cuda_device_count() > 0 or "CUDAExecutionProvider" in ort.get_available_providers(),
    reason="these tests describe a machine without a GPU")


def test_onnx_auto_runs_on_the_cpu_and_logs_its_choice(onnx_numeric: Saved,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="modelport"):
        runtime = load_runtime(onnx_numeric.path, "onnx", placement=Placement("auto"))
    assert device_of(runtime) == "cpu"
    assert runtime.session.get_providers() == ["CPUExecutionProvider"]  # type: ignore[attr-defined]
    assert "runs on cpu (--device auto; providers CPUExecutionProvider)" in caplog.text


def test_onnx_cuda_without_a_gpu_build_names_what_to_install(onnx_numeric: Saved) -> None:
    with pytest.raises(ConfigError, match=r"no CUDA or TensorRT provider.*onnxruntime-gpu"):
        load_runtime(onnx_numeric.path, "onnx", placement=Placement("cuda"))


@pytest.mark.parametrize("provider", ["TensorrtExecutionProvider", "OpenVINOExecutionProvider",
                                      "CUDAExecutionProvider"])
def test_a_provider_that_is_not_installed_is_a_start_up_error(onnx_numeric: Saved,
                                                              provider: str) -> None:
    placement = Placement("auto", (provider, "CPUExecutionProvider"))
    with pytest.raises(ConfigError, match=f"--providers: {provider} is not installed.*it has "
                                          ".*CPUExecutionProvider"):
        load_runtime(onnx_numeric.path, "onnx", placement=placement)


def test_an_installed_provider_list_is_used_as_given(onnx_numeric: Saved) -> None:
    runtime = load_runtime(onnx_numeric.path, "onnx",
                           placement=Placement("auto", ("CPUExecutionProvider",)))
    assert runtime.session.get_providers() == ["CPUExecutionProvider"]  # type: ignore[attr-defined]


def test_xgboost_auto_falls_back_and_cuda_is_refused(xgb_binary: Saved) -> None:
    assert device_of(load_runtime(xgb_binary.path, "xgboost",
                                  placement=Placement("auto"))) == "cpu"
    with pytest.raises(ConfigError, match=r"--device cuda: 'xgb_binary.json' \(xgboost\)"):
        load_runtime(xgb_binary.path, "xgboost", placement=Placement("cuda"))


def test_a_cpu_only_flavor_refuses_an_explicit_gpu(heart_package: Path) -> None:
    with pytest.raises(ConfigError, match="sklearn model, which runs on the CPU only"):
        load_model(heart_package, placement=Placement("cuda"))
    assert device_of(load_model(heart_package, placement=Placement("auto")).runtime) == "cpu"


def test_unknown_device_is_refused() -> None:
    with pytest.raises(ConfigError, match="--device: 'tpu'"):
        Placement("tpu")  # type: ignore[arg-type]


def test_v2_metadata_reports_the_device(onnx_numeric: Saved) -> None:
    app = build_app(Settings(model=[str(onnx_numeric.path)], device="auto"))
    with TestClient(app) as client:
        meta = client.get("/v2/models/numeric").json()
    assert meta["parameters"]["device"] == "cpu" and meta["platform"] == "onnx"


def test_serve_with_a_missing_gpu_exits_with_the_reason(onnx_numeric: Saved) -> None:
    proc = subprocess.run([sys.executable, "-m", "modelport", "serve", str(onnx_numeric.path),
                           "--device", "cuda", "--port", "1"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == ConfigError.exit_code
    assert "error: --device cuda: 'numeric.onnx' (onnx) cannot run on a GPU here" in proc.stderr


def test_serve_with_a_missing_provider_exits_with_the_reason(onnx_numeric: Saved) -> None:
    proc = subprocess.run([sys.executable, "-m", "modelport", "serve", str(onnx_numeric.path),
                           "--providers", "TensorrtExecutionProvider,CPUExecutionProvider",
                           "--port", "1"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == ConfigError.exit_code
    assert "error: --providers: TensorrtExecutionProvider is not installed" in proc.stderr
