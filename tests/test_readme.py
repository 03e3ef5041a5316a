"""The README's quickstart works verbatim against a real server."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.server.test_e2e import start_server, stop

README = Path(__file__).resolve().parents[1] / "README.md"


def _curl_lines() -> list[str]:
    block = re.search(r"## Quickstart.*?```bash\n(.*?)```", README.read_text(), re.S)
    assert block is not None
    return [line for line in block.group(1).splitlines() if line.startswith("curl ")]


@pytest.mark.e2e
def test_quickstart_curl_commands_answer_as_documented(heart_package: Path) -> None:
    proc, url = start_server(str(heart_package))
    try:
        answers = []
        for line in _curl_lines():
            argv = shlex.split(line.replace("http://127.0.0.1:8000", url))
            out = subprocess.run([*argv, "-w", "\n%{http_code}"], capture_output=True,
                                 text=True, timeout=30, check=True).stdout
            body, status = out.rsplit("\n", 1)
            answers.append((int(status), json.loads(body)))
    finally:
        stop(proc)
    ready, native, v1, v2, bad = answers
    assert ready == (200, {"status": "ready", "models": {"heart:1.0.0": True}, "in_flight": 0})
    assert native[0] == 200 and native[1]["classes"] == [0, 1]
    assert v1 == (200, {"predictions": native[1]["predictions"]})
    assert v2[0] == 200 and v2[1]["outputs"][0]["data"] == native[1]["predictions"]
    assert bad[0] == 422 and bad[1]["field"] == "sex"
    assert "row 0, field 'sex': missing required feature" in bad[1]["error"]
