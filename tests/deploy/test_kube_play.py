"""The bundle's Kubernetes base manifests run for real: ``podman kube play`` of the rendered
``k8s/base`` starts the pod from the image built from the bundle, its probes pass and it
answers a prediction. (No cluster here: Service routing, the HPA and the PDB stay validated
only — see the bundle README.)

Run alone with ``pytest tests/deploy/test_kube_play.py -m container``. The overlay sets what a
user sets with ``kustomize edit`` (the image), and, because the pod shares the host's network
here, the port and interface and no ``ports`` list (podman 4 would publish it, which host
networking refuses). The probes are checked as the kubelet runs them, an HTTP GET from outside
the container: podman turns a liveness probe into ``curl`` inside the container, and the slim
image has no curl.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from modelport.package import load_model

from .conftest import run_ok
from .test_container import _free_port, _podman, _wait_ready, image, podman_env

__all__ = ["image", "podman_env"]  # module fixtures reused from the container tier

pytestmark = pytest.mark.container
Tool = Callable[[str], str]


def _overlay(root: Path, base: Path, image_ref: str, port: int) -> Path:
    repository, _, tag = image_ref.rpartition(":")
    overlay = root / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [str(Path("..") / base.name)],
        "images": [{"name": "heart", "newName": repository, "newTag": tag}],
        "patches": [
            {"patch": yaml.safe_dump({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "heart"},
                "spec": {"replicas": 1, "template": {"spec": {"containers": [{
                    "name": "model", "env": [
                        {"name": "MODELPORT_PORT", "value": str(port)},
                        {"name": "MODELPORT_HOST", "value": "127.0.0.1"}]}]}}}})},
            # podman 4 publishes every containerPort, which host networking refuses
            {"target": {"kind": "Deployment", "name": "heart"}, "patch": yaml.safe_dump([
                {"op": "remove", "path": "/spec/template/spec/containers/0/ports"}])},
        ]}))
    return overlay


@pytest.fixture(scope="module")
def kube_pod(tool: Tool, podman_env: dict[str, str], image: str, bundle: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """``podman kube play`` of the rendered base: (pod's container name, base URL)."""
    root = tmp_path_factory.mktemp("kube")
    base = root / "base"
    subprocess.run(["cp", "-r", str(bundle / "k8s/base"), str(base)], check=True)
    port = _free_port()
    out = run_ok([tool("kubectl"), "kustomize", str(_overlay(root, base, image, port))])
    docs = [d for d in yaml.safe_load_all(out) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == image  # the patches landed (a missed target is silent)
    assert "ports" not in container
    assert {"name": "MODELPORT_PORT", "value": str(port)} in container["env"]
    played = root / "played.yaml"
    played.write_text(yaml.safe_dump_all([d for d in docs if d["kind"] in _PLAYABLE]))
    _podman(podman_env, "kube", "play", "--network", "host", str(played), timeout=180)
    name = f"{deployment['metadata']['name']}-pod-0-{container['name']}"
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, podman_env, name)
        yield name, url
    finally:
        _podman(podman_env, "kube", "down", str(played), timeout=120, check=False)


_PLAYABLE = ("Deployment", "Service")
"""What podman plays; the HorizontalPodAutoscaler and PodDisruptionBudget need a cluster."""


def test_the_pod_runs_the_rendered_deployment_as_uid_10001(
        podman_env: dict[str, str], kube_pod: tuple[str, str]) -> None:
    name, _ = kube_pod
    out = _podman(podman_env, "exec", name, "python", "-c",
                  "import os; print(os.getuid(), os.getgid())").stdout
    assert out.split() == ["10001", "10001"]
    state = json.loads(_podman(podman_env, "inspect", name).stdout)[0]
    assert state["HostConfig"]["ReadonlyRootfs"] is True


def test_the_probes_of_the_manifest_pass(bundle: Path, kube_pod: tuple[str, str]) -> None:
    """Startup and readiness probe ``/ready``, liveness ``/health``, on the server's port."""
    _, url = kube_pod
    deployment = yaml.safe_load((bundle / "k8s/base/deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e["value"] for e in container["env"]}
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container[kind]["httpGet"]
        assert str(ports[probe["port"]]) == env["MODELPORT_PORT"], kind  # the server's port
        assert 200 <= httpx.get(url + probe["path"], timeout=5).status_code < 400, kind


def test_the_pod_answers_a_prediction(kube_pod: tuple[str, str], bundle: Path,
                                      heart_package: Path) -> None:
    _, url = kube_pod
    body = json.loads((bundle / "smoke-request.json").read_text())
    got = httpx.post(f"{url}/predict", json=body, timeout=10).json()
    loaded = load_model(heart_package)
    expected = loaded.runtime.predict(loaded.signature.from_records([body["features"]]))
    assert got["predictions"] == np.asarray(expected.predictions).tolist()
    np.testing.assert_allclose(got["probabilities"], expected.probabilities, rtol=1e-9)
