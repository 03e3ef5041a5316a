"""What the rendered bundle says, read structurally (the real tools run in test_tools.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelport.deploy import BuildOptions, MemoryProfile, monitoring_assets, resources_for
from modelport.deploy.render import canary_split, registry_of
from modelport.deploy.requirements import requirements_txt, serving_pins
from modelport.errors import ConfigError
from modelport.package import open_package

Render = Callable[..., Path]


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", dockerfile)
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest))
    return out


def _stages(dockerfile: str) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in _instructions(dockerfile):
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def test_dockerfile_is_multi_stage_with_builder_and_runtime(bundle: Path) -> None:
    stages = _stages((bundle / "Dockerfile").read_text())
    assert len(stages) == 2
    assert stages[0][0][1].endswith("AS builder")
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in stages[1]


def test_dockerfile_final_user_is_numeric_and_not_root(bundle: Path) -> None:
    final = _stages((bundle / "Dockerfile").read_text())[-1]
    users = [args for word, args in final if word == "USER"]
    assert users[-1] == "10001:10001"


def test_dockerfile_has_healthcheck_on_health_and_exec_form_cmd(bundle: Path) -> None:
    final = dict(_stages((bundle / "Dockerfile").read_text())[-1])
    assert "/health" in final["HEALTHCHECK"]
    cmd = json.loads(final["CMD"])
    assert cmd == ["modelport", "serve", "/models/heart"]
    assert "MODELPORT_PORT=8000" in final["ENV"] and "MODELPORT_HOST=0.0.0.0" in final["ENV"]
    assert final["EXPOSE"] == "8000 8081"  # REST, and gRPC on the server's default port


def test_dockerfile_bakes_model_at_the_path_in_modelport_model(bundle: Path) -> None:
    final = _stages((bundle / "Dockerfile").read_text())[-1]
    assert ("COPY", "model/ /models/heart/") in final
    env = dict(final)["ENV"]
    assert "MODELPORT_MODEL=/models/heart" in env


def test_dockerfile_base_follows_the_models_python_minor(bundle: Path) -> None:
    assert "ARG BASE_IMAGE=python:3.11-slim" in (bundle / "Dockerfile").read_text()


@pytest.mark.parametrize(("options", "base"), [
    ({"python": "3.12"}, "python:3.12-slim"),
    ({"base_image": "registry.example.com/py:3.11"}, "registry.example.com/py:3.11"),
], ids=["python-minor", "base-image"])
def test_base_image_can_be_overridden(render_to: Render, tmp_path: Path,
                                      options: dict[str, Any], base: str) -> None:
    text = (render_to(tmp_path, **options) / "Dockerfile").read_text()
    assert f"ARG BASE_IMAGE={base}" in text


def test_model_url_mode_downloads_with_checksum_instead_of_copying(render_to: Render,
                                                                   tmp_path: Path) -> None:
    root = render_to(tmp_path, model_url=True, wheel="modelport-0.1.0-py3-none-any.whl")
    builder, final = _stages((root / "Dockerfile").read_text())
    assert ("ARG", "MODEL_URL") in builder
    assert any(w == "RUN" and "fetch_model.py" in a and "MODEL_SHA256" in a for w, a in builder)
    assert ("COPY", "--from=builder /models/heart /models/heart") in final
    assert "!fetch_model.py" in (root / ".dockerignore").read_text()
    assert (root / "fetch_model.py").is_file()


def test_dockerignore_lets_in_only_what_the_image_needs(bundle: Path) -> None:
    lines = (bundle / ".dockerignore").read_text().split()
    allowed = {ln[1:] for ln in lines if ln.startswith("!")}
    assert lines[lines.index("*")] == "*"
    assert allowed == {"requirements.txt", "wheels/", "model/"}


def test_requirements_pin_the_models_library_versions(bundle: Path,
                                                      heart_package: Path) -> None:
    libraries = open_package(heart_package).manifest.libraries
    lines = (bundle / "requirements.txt").read_text().splitlines()
    for dist, version in libraries.items():
        assert f"{dist}=={version}" in lines


def test_requirements_pin_every_line() -> None:
    text = requirements_txt({"scikit-learn": "1.5.0", "numpy": "2.0.0"},
                            {"numpy": "2.1.0", "uvicorn[standard]": "0.30.0"},
                            modelport_pin="0.1.0")
    reqs = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert reqs == ["numpy==2.0.0", "scikit-learn==1.5.0", "uvicorn[standard]==0.30.0",
                    "modelport==0.1.0"]


def test_serving_pins_cover_modelports_runtime_dependencies() -> None:
    pins = serving_pins()
    assert {"fastapi", "pydantic", "jinja2"} <= set(pins)
    assert not any(name.startswith("onnxruntime") for name in pins)  # extras left out


def test_resources_grow_with_the_measured_model() -> None:
    small = resources_for(MemoryProfile(150 * 2**20, 160 * 2**20))
    large = resources_for(MemoryProfile(150 * 2**20, 950 * 2**20))
    assert small.memory_request == "320Mi"
    assert large.memory_request == "2688Mi"
    assert large.memory_limit == "5376Mi"


def test_bundle_uses_measured_resources(bundle: Path) -> None:
    doc = yaml.safe_load((bundle / "k8s/base/deployment.yaml").read_text())
    limits = doc["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["memory"] != "1Gi"  # the unmeasured default
    assert re.fullmatch(r"\d+Mi", limits["memory"])


@pytest.mark.parametrize(("replicas", "weight", "split"), [
    (2, 10, (1, 9)), (2, 25, (1, 3)), (2, 30, (3, 7)), (2, 50, (1, 1)), (12, 25, (3, 9)),
], ids=["10%", "25%", "30%", "50%", "25%-of-12"])
def test_canary_split_is_exactly_the_weight(replicas: int, weight: int,
                                            split: tuple[int, int]) -> None:
    assert canary_split(replicas, weight) == split


@pytest.mark.parametrize(("image", "registry"), [
    ("heart", ""), ("acme/heart", ""), ("registry.example.com/acme/heart", "registry.example.com"),
    ("localhost:5000/heart", "localhost:5000"),
], ids=["bare", "namespace", "host", "host-port"])
def test_registry_of_image(image: str, registry: str) -> None:
    assert registry_of(image) == registry


@pytest.mark.parametrize(("options", "field"), [
    ({"port": 0}, "--port"), ({"replicas": 0}, "--replicas"),
    ({"canary_weight": 70}, "--canary-weight"), ({"image": "Heart:1"}, "--image"),
    ({"python": "3"}, "--python"), ({"targets": ("swarm",)}, "--target"),
    ({"replicas": 5, "max_replicas": 3}, "--max-replicas"), ({"model_sha256": "abc"},
                                                              "--model-sha256"),
], ids=["port", "replicas", "weight", "image", "python", "target", "max-replicas", "sha256"])
def test_bad_options_name_the_option(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(field)):
        BuildOptions(**options)


def test_compose_without_monitoring_assets_mounts_no_rules(render_to: Render,
                                                           tmp_path: Path) -> None:
    root = render_to(tmp_path, assets={})
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())
    volumes = compose["services"]["prometheus"]["volumes"]
    assert not any("alerts" in v for v in volumes)
    assert "rule_files" not in yaml.safe_load((root / "monitoring/prometheus.yml").read_text())
    assert not (root / "monitoring/alerts.yml").exists()


def test_compose_with_assets_provisions_rules_and_dashboard(render_to: Render,
                                                            tmp_path: Path) -> None:
    root = render_to(tmp_path)
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())
    assert "./monitoring/alerts.yml:/etc/prometheus/alerts.yml:ro" in \
        compose["services"]["prometheus"]["volumes"]
    assert yaml.safe_load((root / "monitoring/prometheus.yml").read_text())["rule_files"] == \
        ["alerts.yml"]
    assert (root / "monitoring/grafana/dashboards/modelport.json").is_file()
    provider = yaml.safe_load(
        (root / "monitoring/grafana/provisioning/dashboards/modelport.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_compose_prometheus_scrapes_every_replica(bundle: Path) -> None:
    prom = yaml.safe_load((bundle / "monitoring/prometheus.yml").read_text())
    statics = prom["scrape_configs"][0]["static_configs"]
    assert [(s["targets"], s["labels"]["replica"]) for s in statics] == [
        (["model-1:8000"], "model-1"), (["model-2:8000"], "model-2")]


def test_smoke_request_is_a_native_predict_body(bundle: Path,
                                                heart_package: Path) -> None:
    body = json.loads((bundle / "smoke-request.json").read_text())
    assert set(body["features"]) == set(open_package(heart_package).signature.names)


def test_workflow_gates_on_validate_before_building(bundle: Path) -> None:
    wf = yaml.safe_load((bundle / ".github/workflows/deploy-heart.yml").read_text())
    gate_runs = " ".join(s.get("run", "") for s in wf["jobs"]["gate"]["steps"])
    assert "modelport validate model --data data/heart.csv --target condition " \
           "--min-accuracy 0.8" in gate_runs
    assert wf["jobs"]["image"]["needs"] == "gate"
    image_runs = " ".join(s.get("run", "") for s in wf["jobs"]["image"]["steps"])
    assert "/ready" in image_runs and "/predict" in image_runs and "docker push" in image_runs


def test_readme_says_how_to_roll_back(bundle: Path) -> None:
    readme = (bundle / "README.md").read_text()
    assert "kubectl rollout undo deployment/heart" in readme
    assert "modelport registry rollback heart production" in readme
    assert "az containerapp create" in readme and "gcloud run services replace" in readme


def test_serverless_targets_have_probes(bundle: Path) -> None:
    knative = yaml.safe_load((bundle / "knative/service.yaml").read_text())
    container = knative["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    aca = yaml.safe_load((bundle / "azure/containerapp.yaml").read_text())
    probes = {p["type"]: p["httpGet"]["path"] for p in
              aca["properties"]["template"]["containers"][0]["probes"]}
    assert probes == {"Startup": "/ready", "Readiness": "/ready", "Liveness": "/health"}
    assert aca["properties"]["configuration"]["ingress"]["targetPort"] == 8000
    assert aca["properties"]["template"]["scale"]["rules"][0]["http"]
    run = yaml.safe_load((bundle / "cloudrun/service.yaml").read_text())
    assert run["spec"]["template"]["spec"]["containers"][0]["startupProbe"]["httpGet"][
        "path"] == "/ready"


def test_bundle_ships_the_monitoring_assets_that_exist(bundle: Path) -> None:
    shipped = monitoring_assets()
    if "alerts.yml" in shipped:
        assert (bundle / "monitoring/alerts.yml").read_text() == shipped["alerts.yml"]
    if "dashboard.json" in shipped:
        dashboard = bundle / "monitoring/grafana/dashboards/modelport.json"
        assert json.loads(dashboard.read_text()) == json.loads(shipped["dashboard.json"])
