"""``--workers N``: processes sharing one multiprocess directory add up exactly on a scrape.

Each process is a real ``python`` subprocess (multiprocess mode is process-wide in
prometheus_client, so it never runs inside the test process).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from modelport.monitoring.metrics import reset_multiprocess_dir

WRITER = """
import sys
from pathlib import Path
from modelport.monitoring.metrics import Metrics

metrics = Metrics(multiprocess_dir=Path(sys.argv[1]))
metrics.set_model_info("heart", "1", flavor="sklearn", reference_hash="h")
for _ in range(int(sys.argv[2])):
    metrics.observe_request("heart", "1", "/predict", 200, 0.002)
metrics.count_predlog("written", int(sys.argv[2]))
"""

READER = """
import sys
from pathlib import Path
from modelport.monitoring.metrics import Metrics

sys.stdout.write(Metrics(multiprocess_dir=Path(sys.argv[1])).render()[0].decode())
"""


def _python(code: str, *args: object) -> subprocess.Popen[str]:
    argv = [sys.executable, "-W", "error", "-c", code, *map(str, args)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return out


def _scrape(directory: Path) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = _finish(_python(READER, directory))
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counters_of_two_worker_processes_add_up(tmp_path: Path) -> None:
    reset_multiprocess_dir(tmp_path)
    writers = [_python(WRITER, tmp_path, n) for n in (300, 450)]
    for proc in writers:
        _finish(proc)
    scraped = _scrape(tmp_path)
    labels = {"model": "heart", "version": "1", "route": "/predict", "status": "200",
              "protocol": "rest"}
    assert scraped[("modelport_requests_total", frozenset(labels.items()))] == 750
    del labels["status"]
    assert scraped[("modelport_request_duration_seconds_count", frozenset(labels.items()))] == 750
    assert scraped[("modelport_predlog_records_total", frozenset({("outcome", "written")}))] == 750


def test_model_info_is_one_however_many_workers_report_it(tmp_path: Path) -> None:
    reset_multiprocess_dir(tmp_path)
    for proc in [_python(WRITER, tmp_path, 1) for _ in range(2)]:
        _finish(proc)
    info = {"model": "heart", "version": "1", "flavor": "sklearn", "reference_hash": "h"}
    assert _scrape(tmp_path)[("modelport_model_info", frozenset(info.items()))] == 1


def test_reset_removes_the_values_of_a_previous_run(tmp_path: Path) -> None:
    _finish(_python(WRITER, tmp_path, 5))
    reset_multiprocess_dir(tmp_path)
    assert list(tmp_path.glob("*.db")) == []
