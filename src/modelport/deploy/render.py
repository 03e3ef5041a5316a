"""Render a deployable bundle as text: ``{relative path: file contents}``.

Templates are files under ``deploy/templates/`` (Jinja2, strict: a missing variable is an
error). Nothing here writes a file or runs a process; the CLI writes what this returns, copies
the model package to ``model/`` and the modelport wheel to ``wheels/``.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelport.config import Settings
from modelport.deploy.fleet import Balancer, nginx_conf, prometheus_config
from modelport.deploy.options import BuildOptions, dns_name
from modelport.deploy.requirements import requirements_txt, serving_pins
from modelport.deploy.sizing import MIB, Resources
from modelport.deploy.templating import TEMPLATES, render
from modelport.errors import ConfigError
from modelport.package import Package

__all__ = ["MODEL_DIR", "Bundle", "canary_split", "monitoring_assets", "render_bundle"]

ASSETS = Path(__file__).parents[1] / "monitoring" / "assets"
MODEL_DIR = "model"
FLEET_EXTRAS = ("postgres", "redis")
"""modelport's extras the image installs: the compose replicas share PostgreSQL and Redis."""
"""Where the CLI copies the package inside the bundle (the image bakes it in from there)."""

_K8S_BASE = ("kustomization.yaml", "deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml")
_K8S_OVERLAYS = {
    "canary": ("kustomization.yaml", "deployment-canary.yaml"),
    "blue-green": ("kustomization.yaml", "deployment-green.yaml"),
}
_SERVERLESS = {
    "knative": ("knative/service.yaml", "knative.yaml.j2"),
    "azure-containerapps": ("azure/containerapp.yaml", "azure-containerapp.yaml.j2"),
    "cloud-run": ("cloudrun/service.yaml", "cloudrun.yaml.j2"),
}
# Azure Container Apps consumption sizes: (vCPU, memory GiB)
_ACA_SIZES = tuple((0.25 * i, 0.5 * i) for i in range(1, 9))


@dataclass(frozen=True)
class Bundle:
    """The rendered text files of a bundle, by path relative to its root."""

    files: Mapping[str, str]
    image: str
    """Image reference the manifests use (``repository:version``)."""


def monitoring_assets(root: Path = ASSETS) -> dict[str, str]:
    """Prometheus alert rules and the Grafana dashboard shipped with modelport, when present:
    ``{"alerts.yml": text, "dashboard.json": text}``."""
    names = ("alerts.yml", "dashboard.json")
    return {n: (root / n).read_text(encoding="utf-8") for n in names if (root / n).is_file()}


def render_bundle(
    package: Package,
    options: BuildOptions,
    resources: Resources,
    *,
    assets: Mapping[str, str] | None = None,
    serving: Mapping[str, str] | None = None,
    modelport_version: str = "",
) -> Bundle:
    """Every text file of the bundle for ``package``. ``assets`` default to
    :func:`monitoring_assets`; ``serving`` (pinned serving stack) to :func:`serving_pins`;
    ``modelport_version`` pins modelport itself when ``options.wheel`` is empty."""
    assets = monitoring_assets() if assets is None else assets
    if options.gpu:
        _check_gpu(package)
    ctx = _context(package, options, resources, assets)
    pins = serving_pins(extras=FLEET_EXTRAS) if serving is None else serving
    files: dict[str, str] = {
        "Dockerfile": _render("Dockerfile.j2", ctx),
        ".dockerignore": _render("dockerignore.j2", ctx),
        "requirements.txt": requirements_txt(
            _libraries(package), pins,
            modelport_pin=None if options.wheel else (modelport_version or None),
            gpu=options.gpu),
        "docker-compose.yml": _render("docker-compose.yml.j2", ctx),
        "nginx/nginx.conf": nginx_conf(Balancer(
            tuple(f"{r}:{options.port}" for r in ctx["replica_names"]), listen="8080",
            resolver="127.0.0.11", grpc_servers=tuple(
                f"{r}:{options.grpc_port}" for r in ctx["replica_names"] if options.grpc_port),
            grpc_listen="8081")),
        "monitoring/prometheus.yml": prometheus_config(
            {r: f"{r}:{options.port}" for r in ctx["replica_names"]}, service=ctx["app"],
            alerts=ctx["alerts"]),
        "monitoring/grafana/provisioning/datasources/prometheus.yml":
            _render("grafana-datasource.yml.j2", ctx),
        f".github/workflows/deploy-{ctx['app']}.yml": _render("workflow.yml.j2", ctx),
        "smoke-request.json": json.dumps({"features": ctx["example"]}, indent=2) + "\n",
        "README.md": _render("README.md.j2", ctx),
    }
    files.update(_monitoring_files(assets, ctx))
    if options.model_url:
        files["fetch_model.py"] = (TEMPLATES / "fetch_model.py").read_text(encoding="utf-8")
    if "kubernetes" in options.targets:
        files.update(_kubernetes_files(ctx))
    for target, (path, template) in _SERVERLESS.items():
        if target in options.targets:
            files[path] = _render(template, ctx)
    return Bundle(files, ctx["image_ref"])


def _libraries(package: Package) -> dict[str, str]:
    """The libraries the served artifact needs: the model's, plus ONNX Runtime's when a
    converted ONNX artifact passed parity (``runtime=auto`` serves it)."""
    m = package.manifest
    libraries = dict(m.libraries)
    if m.onnx and m.onnx.get("parity", {}).get("passed"):
        libraries |= m.onnx.get("libraries") or {}
    return libraries


def _check_gpu(package: Package) -> None:
    """``--gpu`` for a model that can use one: torch, ONNX, XGBoost, or one served as ONNX."""
    m = package.manifest
    onnx_ok = bool(m.onnx and m.onnx.get("parity", {}).get("passed"))
    if m.flavor not in ("torch", "onnx", "xgboost") and not onnx_ok:
        raise ConfigError(f"--gpu: a {m.flavor} model runs on the CPU only; convert it first "
                          "(modelport optimize: it is then served by ONNX Runtime) or build "
                          "without --gpu")


def _monitoring_files(assets: Mapping[str, str], ctx: Mapping[str, Any]) -> dict[str, str]:
    files: dict[str, str] = {}
    if "alerts.yml" in assets:
        files["monitoring/alerts.yml"] = assets["alerts.yml"]
    if "dashboard.json" in assets:
        files["monitoring/grafana/dashboards/modelport.json"] = assets["dashboard.json"]
        files["monitoring/grafana/provisioning/dashboards/modelport.yml"] = _render(
            "grafana-dashboards.yml.j2", ctx)
    return files


def _kubernetes_files(ctx: Mapping[str, Any]) -> dict[str, str]:
    files = {f"k8s/base/{n}": _render(f"k8s/base/{n}.j2", ctx) for n in _K8S_BASE}
    for overlay, names in _K8S_OVERLAYS.items():
        for n in names:
            files[f"k8s/overlays/{overlay}/{n}"] = _render(f"k8s/{overlay}/{n}.j2", ctx)
    return files


def _context(package: Package, options: BuildOptions, resources: Resources,
             assets: Mapping[str, str]) -> dict[str, Any]:
    m = package.manifest
    app, image = dns_name(m.name), options.image_name(m.name)
    golden = package.golden()
    example = golden["inputs"][0] if golden and golden.get("inputs") else \
        package.signature.example_record()
    canary, stable = canary_split(options.replicas, options.canary_weight)
    model = {"name": m.name, "app": app, "version": m.version, "flavor": m.flavor,
             "task": package.signature.task, "python": ".".join(m.python.split(".")[:2]),
             "example": example, "model_path": f"/models/{app}", "model_dir": MODEL_DIR}
    image_ctx = {"image": image, "registry": registry_of(image),
                 "image_ref": f"{image}:{m.version}", "base_image": options.base(m.python),
                 "wheel": options.wheel, "port": options.port, "grpc_port": options.grpc_port,
                 "grpc_port_default": Settings.model_fields["grpc_port"].default}
    sizing = {"resources": resources, "aca": _aca_size(resources),
              "cloud_run": {"cpu": "1", "memory": _mi_at_least(resources.memory_limit, 512)}}
    rollout = {"replicas": options.replicas, "active": options.active_slot,
               "replica_names": [f"model-{i}" for i in range(1, options.replicas + 1)],
               "inactive": "green" if options.active_slot == "blue" else "blue",
               "canary": {"replicas": canary, "stable": stable,
                          "weight": options.canary_weight}}
    extras = {"options": options, "alerts": "alerts.yml" in assets,
              "dashboard": "dashboard.json" in assets, "workdir": options.ci_workdir,
              "validate_args": shlex.join([MODEL_DIR, *options.validate_args])}
    return model | image_ctx | sizing | rollout | extras


def registry_of(image: str) -> str:
    """The registry host of an image repository, or ``""`` for the default registry."""
    first, _, rest = image.partition("/")
    return first if rest and ("." in first or ":" in first or first == "localhost") else ""


def canary_split(replicas: int, weight: int) -> tuple[int, int]:
    """(canary, stable) replicas whose ratio is exactly ``weight`` percent, with at least
    ``replicas`` in all (traffic splits by replica count behind one Service)."""
    start = max(replicas, 2)
    total = next(n for n in range(start, start + 100) if n * weight % 100 == 0)
    return total * weight // 100, total - total * weight // 100


def _aca_size(resources: Resources) -> dict[str, Any]:
    need = _bytes(resources.memory_limit) / (1024 * MIB)
    cpu, mem = next((s for s in _ACA_SIZES if s[1] >= need), _ACA_SIZES[-1])
    return {"cpu": cpu, "memory": f"{mem}Gi"}


def _mi_at_least(quantity: str, floor_mi: int) -> str:
    return f"{max(_bytes(quantity) // MIB, floor_mi)}Mi"


def _bytes(quantity: str) -> int:
    units = {"Mi": MIB, "Gi": 1024 * MIB}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return math.ceil(float(quantity[: -len(suffix)]) * factor)
    return int(quantity)


def _render(template: str, ctx: Mapping[str, Any]) -> str:
    return render(template, ctx)
