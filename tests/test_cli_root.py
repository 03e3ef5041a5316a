"""The ``modelport`` command itself (not one of its sub-commands)."""

from __future__ import annotations

import subprocess
import sys

import modelport


def test_version_prints_the_installed_version_and_exits_zero() -> None:
    done = subprocess.run([sys.executable, "-m", "modelport", "--version"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"modelport {modelport.__version__}"
