"""Deploy bundles rendered as text: Dockerfile, Kubernetes (Kustomize), serverless targets,
docker-compose with Prometheus and Grafana, a CI workflow and a README.

Only strings come out of here (templates are files under ``templates/``); the CLI writes them,
copies the model package and the modelport wheel, and measures the model's memory.
"""

from __future__ import annotations

from modelport.deploy.options import TARGETS, BuildOptions, Target
from modelport.deploy.render import MODEL_DIR, Bundle, monitoring_assets, render_bundle
from modelport.deploy.sizing import MemoryProfile, Resources, resources_for

__all__ = [
    "MODEL_DIR",
    "TARGETS",
    "BuildOptions",
    "Bundle",
    "MemoryProfile",
    "Resources",
    "Target",
    "monitoring_assets",
    "render_bundle",
    "resources_for",
]
