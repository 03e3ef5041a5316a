"""Every rendered artifact passes the real tool that checks it (docs/architecture.md): hadolint,
kubernetes-validate --strict, kubectl kustomize, promtool, actionlint, the Compose v2 binary,
yamllint. Each test is skipped, saying how to install the tool, only when the tool is absent."""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelport.deploy import monitoring_assets

from .conftest import run_ok, write_files

Tool = Callable[[str], str]
Render = Callable[..., Path]
K8S_VERSION = "1.32.0"


def _kustomize(tool: Tool, root: Path) -> list[dict[str, Any]]:
    out = run_ok([tool("kubectl"), "kustomize", str(root)])
    return [d for d in yaml.safe_load_all(out) if d]


def _validate_k8s(tool: Tool, docs: list[dict[str, Any]], tmp_path: Path) -> None:
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    run_ok([tool("kubernetes-validate"), "--strict", "-k", K8S_VERSION, str(path)])


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _selects(selector: dict[str, str], deployment: dict[str, Any]) -> bool:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(k) == v for k, v in selector.items())


def test_dockerfile_is_hadolint_clean(tool: Tool, bundle: Path) -> None:
    run_ok([tool("hadolint"), "--failure-threshold", "info", str(bundle / "Dockerfile")])


def test_model_url_dockerfile_is_hadolint_clean(tool: Tool, render_to: Render,
                                                tmp_path: Path) -> None:
    root = render_to(tmp_path, model_url=True)
    run_ok([tool("hadolint"), "--failure-threshold", "info", str(root / "Dockerfile")])


def test_hadolint_catches_a_non_numeric_user(tool: Tool, bundle: Path, tmp_path: Path) -> None:
    """The check is real: a non-numeric ``USER`` (hadolint's DL3066) is reported."""
    bad = (bundle / "Dockerfile").read_text().replace("USER 10001:10001", "USER modelport")
    (tmp_path / "Dockerfile").write_text(bad)
    proc = subprocess.run([tool("hadolint"), "--failure-threshold", "info",
                           str(tmp_path / "Dockerfile")], capture_output=True, text=True,
                          check=False)
    assert proc.returncode != 0


def test_base_manifests_pass_strict_schema_validation(tool: Tool, bundle: Path) -> None:
    base = bundle / "k8s/base"
    files = [str(p) for p in sorted(base.glob("*.yaml")) if p.name != "kustomization.yaml"]
    run_ok([tool("kubernetes-validate"), "--strict", "-k", K8S_VERSION, *files])


def test_base_deployment_is_production_shaped(tool: Tool, bundle: Path) -> None:
    docs = _kustomize(tool, bundle / "k8s/base")
    dep = _by_kind(docs, "Deployment")["heart"]
    pod = dep["spec"]["template"]["spec"]
    ctr = pod["containers"][0]
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert ctr["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert ctr["livenessProbe"]["httpGet"]["path"] == "/health"
    assert ctr["startupProbe"]["httpGet"]["path"] == "/ready"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
    assert ctr["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert ctr["image"] == "heart:1.0.0"
    assert {"Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= \
        {d["kind"] for d in docs}
    assert _by_kind(docs, "HorizontalPodAutoscaler")["heart"]["apiVersion"] == "autoscaling/v2"


def test_canary_overlay_validates_and_splits_by_replicas(tool: Tool, bundle: Path,
                                                         tmp_path: Path) -> None:
    docs = _kustomize(tool, bundle / "k8s/overlays/canary")
    _validate_k8s(tool, docs, tmp_path)
    deps = _by_kind(docs, "Deployment")
    stable, canary = deps["heart"], deps["heart-canary"]
    assert (canary["spec"]["replicas"], stable["spec"]["replicas"]) == (1, 9)  # 10%
    selector = _by_kind(docs, "Service")["heart"]["spec"]["selector"]
    assert _selects(selector, stable) and _selects(selector, canary)
    assert not _selects(stable["spec"]["selector"]["matchLabels"], canary)
    assert "HorizontalPodAutoscaler" not in {d["kind"] for d in docs}


def test_blue_green_overlay_selects_only_the_active_slot(tool: Tool, bundle: Path,
                                                         tmp_path: Path) -> None:
    docs = _kustomize(tool, bundle / "k8s/overlays/blue-green")
    _validate_k8s(tool, docs, tmp_path)
    deps = _by_kind(docs, "Deployment")
    selector = _by_kind(docs, "Service")["heart"]["spec"]["selector"]
    assert selector["modelport.io/track"] == "blue"
    assert [name for name, d in deps.items() if _selects(selector, d)] == ["heart"]
    assert deps["heart-green"]["spec"]["template"]["metadata"]["labels"][
        "modelport.io/track"] == "green"


def test_blue_green_switch_to_green_selects_the_green_deployment(
        tool: Tool, render_to: Render, tmp_path: Path) -> None:
    root = render_to(tmp_path / "b", active_slot="green")
    docs = _kustomize(tool, root / "k8s/overlays/blue-green")
    selector = _by_kind(docs, "Service")["heart"]["spec"]["selector"]
    deps = _by_kind(docs, "Deployment")
    assert [name for name, d in deps.items() if _selects(selector, d)] == ["heart-green"]


def test_serverless_pod_specs_pass_strict_schema_validation(tool: Tool, bundle: Path,
                                                            tmp_path: Path) -> None:
    """Knative and Cloud Run are CRDs; their pod spec is a Kubernetes PodSpec, so it is checked
    strictly inside a Deployment."""
    docs = []
    for path in ("knative/service.yaml", "cloudrun/service.yaml"):
        ksvc = yaml.safe_load((bundle / path).read_text())
        pod = copy.deepcopy(ksvc["spec"]["template"]["spec"])
        pod.pop("containerConcurrency")
        pod.pop("timeoutSeconds")
        labels = {"app": "x"}
        docs.append({"apiVersion": "apps/v1", "kind": "Deployment",
                     "metadata": {"name": path.split("/")[0]},
                     "spec": {"selector": {"matchLabels": labels},
                              "template": {"metadata": {"labels": labels}, "spec": pod}}})
    _validate_k8s(tool, docs, tmp_path)


@pytest.mark.parametrize("assets", ["none", "test"], ids=["no-rules", "with-rules"])
def test_prometheus_config_passes_promtool(tool: Tool, render_to: Render, tmp_path: Path,
                                           assets: str) -> None:
    root = render_to(tmp_path, assets={} if assets == "none" else None)
    run_ok([tool("promtool"), "check", "config", str(root / "monitoring/prometheus.yml")])


def test_bundle_prometheus_config_with_shipped_rules_passes_promtool(tool: Tool,
                                                                    bundle: Path) -> None:
    if not (bundle / "monitoring/alerts.yml").is_file():
        pytest.skip("no shipped alert rules (src/modelport/monitoring/assets/alerts.yml)")
    run_ok([tool("promtool"), "check", "config", str(bundle / "monitoring/prometheus.yml")])


def test_shipped_alert_rules_pass_promtool(tool: Tool, tmp_path: Path) -> None:
    assets = monitoring_assets()
    if "alerts.yml" not in assets:
        pytest.skip("src/modelport/monitoring/assets/alerts.yml does not exist yet")
    rules = write_files(tmp_path, {"alerts.yml": assets["alerts.yml"]}) / "alerts.yml"
    run_ok([tool("promtool"), "check", "rules", str(rules)])


def test_workflow_passes_actionlint(tool: Tool, bundle: Path) -> None:
    run_ok([tool("actionlint"), str(bundle / ".github/workflows/deploy-heart.yml")])


def test_actionlint_catches_a_missing_job(tool: Tool, bundle: Path, tmp_path: Path) -> None:
    """The check is real: a ``needs:`` on a job that does not exist fails."""
    text = (bundle / ".github/workflows/deploy-heart.yml").read_text()
    bad = tmp_path / "bad.yml"
    bad.write_text(text.replace("needs: gate", "needs: nope"))
    proc = subprocess.run([tool("actionlint"), str(bad)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 1 and "nope" in proc.stdout


def test_bundle_compose_passes_compose_config(tool: Tool, bundle: Path) -> None:
    run_ok([tool("compose"), "-f", str(bundle / "docker-compose.yml"), "config", "-q"])


@pytest.mark.parametrize("assets", ["none", "test"], ids=["no-assets", "with-assets"])
def test_compose_passes_compose_config(tool: Tool, render_to: Render, tmp_path: Path,
                                       assets: str) -> None:
    root = render_to(tmp_path, assets={} if assets == "none" else None)
    run_ok([tool("compose"), "-f", str(root / "docker-compose.yml"), "config", "-q"])


def test_every_yaml_file_passes_yamllint(tool: Tool, bundle: Path, render_to: Render,
                                         tmp_path: Path) -> None:
    """Rendered YAML only: the package copy and the shipped alert rules are not ours."""
    config = ("{extends: default, rules: {line-length: {max: 120}, "
              "truthy: {check-keys: false}, document-start: disable}}")
    url_mode = render_to(tmp_path, model_url=True, assets={})
    for root in (bundle, url_mode):
        files = [str(p) for p in root.rglob("*.y*ml")
                 if p.relative_to(root).parts[0] != "model" and p.name != "alerts.yml"]
        run_ok([tool("yamllint"), "-s", "-d", config, *files])
