"""The generated CI workflow is the receiving side of the retraining trigger."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from modelport.config import Settings

from .conftest import run_ok

Tool = Callable[[str], str]


def workflow(bundle: Path) -> dict[object, object]:
    data: dict[object, object] = yaml.safe_load(
        (bundle / ".github/workflows/deploy-heart.yml").read_text())
    return data


def test_workflow_receives_the_repository_dispatch_modelport_sends(bundle: Path) -> None:
    wf = workflow(bundle)
    on = wf[True] if True in wf else wf["on"]  # YAML 1.1 reads the key `on` as true
    assert isinstance(on, dict)
    assert on["repository_dispatch"] == {"types": [Settings().retrain_event_type]}
    jobs = wf["jobs"]
    assert isinstance(jobs, dict)
    retrain = jobs["retrain"]
    assert retrain["if"] == "github.event_name == 'repository_dispatch'"
    assert "client_payload" in retrain["env"]["EVIDENCE"]
    runs = " ".join(s.get("run", "") for s in retrain["steps"])
    assert "retrain-evidence.json" in runs and "retrain.sh" in runs
    # a dispatch retrains; it does not rebuild and push the image
    assert jobs["gate"]["if"] == "github.event_name != 'repository_dispatch'"
    assert jobs["image"]["needs"] == "gate"


def test_workflow_with_the_retrain_job_passes_actionlint(tool: Tool, bundle: Path) -> None:
    run_ok([tool("actionlint"), str(bundle / ".github/workflows/deploy-heart.yml")])
