"""The committed stubs are what scripts/gen-grpc-stubs makes of oip.proto, and they live in a
descriptor pool of their own (a process may hold tritonclient's copy of the same names)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STUBS = ("oip_pb2.py", "oip_pb2.pyi", "oip_pb2_grpc.py")


def test_the_committed_stubs_are_what_the_script_generates(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools is a dev dependency")
    subprocess.run([str(ROOT / "scripts" / "gen-grpc-stubs"), str(tmp_path)], check=True,
                   timeout=120, capture_output=True,
                   env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})
    committed = ROOT / "src" / "modelport" / "server" / "grpc"
    for name in STUBS:
        made = tmp_path / "modelport" / "server" / "grpc" / name
        assert made.read_bytes() == (committed / name).read_bytes(), (
            f"{name} is stale: run scripts/gen-grpc-stubs")


@pytest.mark.parametrize("order", [("ours", "tritonclient"), ("tritonclient", "ours")])
def test_the_stubs_and_tritonclient_load_in_one_process(order: tuple[str, str]) -> None:
    imports = {"ours": "import modelport.server.grpc.oip_pb2_grpc",
               "tritonclient": "import tritonclient.grpc"}
    code = "; ".join(imports[o] for o in order)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
