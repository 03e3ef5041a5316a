"""What a bundle is built with: :class:`BuildOptions`, checked once with errors naming the option.

Everything the templates need that is not in the package itself lives here, so rendering is a
pure function of (package, options, sizing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from modelport.errors import ConfigError

__all__ = ["CUDA_IMAGE", "TARGETS", "BuildOptions", "Target", "dns_name"]

Target = Literal["kubernetes", "knative", "azure-containerapps", "cloud-run"]
TARGETS: tuple[Target, ...] = ("kubernetes", "knative", "azure-containerapps", "cloud-run")

_IMAGE = re.compile(r"^[a-z0-9]([a-z0-9._/:-]*[a-z0-9])?$")
_DNS = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
CUDA_IMAGE = "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04"
"""Base image of ``--gpu`` bundles: the CUDA runtime and cuDNN, with Ubuntu's Python 3."""


@dataclass(frozen=True)
class BuildOptions:
    """How ``modelport build`` shapes the bundle (every field has a sensible default)."""

    image: str = ""
    """Image repository without tag (``ghcr.io/acme/heart``); default: the model's name."""
    base_image: str = ""
    """Base image of both stages; default ``python:<model's python minor>-slim``."""
    python: str = ""
    """Python minor version (``3.11``) when the base image is derived; default: the model's."""
    port: int = 8000
    """Port the server listens on inside the container."""
    grpc_port: int = 8081
    """Port of the Open Inference Protocol over gRPC inside the container (0: none)."""
    targets: tuple[Target, ...] = ("kubernetes",)
    """Deployment targets to render besides the Dockerfile and compose."""
    replicas: int = 2
    """Replicas of the Deployment (and HPA minimum)."""
    max_replicas: int = 10
    """HPA maximum."""
    canary_weight: int = 10
    """Percent of replicas (so of traffic) the canary overlay gives the new version."""
    active_slot: Literal["blue", "green"] = "blue"
    """Which Deployment the blue-green overlay's Service selects."""
    model_url: bool = False
    """Download the model at image build time (build ARGs ``MODEL_URL`` + ``MODEL_SHA256``)
    instead of copying it from the bundle."""
    model_sha256: str = ""
    """Default of ``MODEL_SHA256`` when ``model_url`` is on (the archive's sha256)."""
    wheel: str = ""
    """File name of the modelport wheel under ``wheels/``; empty: install modelport by pin."""
    ci_workdir: str = "."
    """Where the bundle sits in the repository the CI workflow runs in."""
    validate_args: tuple[str, ...] = field(default_factory=tuple)
    """Extra arguments of ``modelport validate`` in the CI gate (``--data``, thresholds)."""
    gpu: bool = False
    """An image for NVIDIA GPUs: the CUDA runtime base image (:data:`CUDA_IMAGE` unless
    ``base_image`` is given), onnxruntime-gpu, and ``MODELPORT_DEVICE=cuda`` (a container
    started without a GPU stops with an error instead of running slowly on the CPU)."""

    def __post_init__(self) -> None:
        _check(bool(self.image) and not _IMAGE.match(self.image), "image",
               f"'{self.image}' is not an image name (lowercase, no tag)")
        _check(not 1 <= self.port <= 65535, "port", f"{self.port} is not a TCP port")
        _check(not 0 <= self.grpc_port <= 65535, "grpc-port",
               f"{self.grpc_port} is not a TCP port (0: no gRPC)")
        _check(self.grpc_port == self.port, "grpc-port", "must differ from --port")
        _check(self.replicas < 1, "replicas", "must be at least 1")
        _check(self.max_replicas < self.replicas, "max-replicas",
               f"{self.max_replicas} is less than --replicas {self.replicas}")
        _check(not 1 <= self.canary_weight <= 50, "canary-weight",
               f"{self.canary_weight} is not a percentage between 1 and 50")
        _check(bool(self.python) and not re.match(r"^3\.\d{1,2}$", self.python), "python",
               f"'{self.python}' is not a Python minor version like 3.11")
        _check(bool(self.model_sha256) and not _SHA256.match(self.model_sha256),
               "model-sha256", "expected 64 lowercase hex digits")
        unknown = [t for t in self.targets if t not in TARGETS]
        _check(bool(unknown), "target", f"unknown {unknown} (known: {', '.join(TARGETS)})")

    def image_name(self, model: str) -> str:
        """The image repository: the option, else the model's name made DNS-safe."""
        return self.image or dns_name(model)

    def base(self, model_python: str) -> str:
        """Base image of both stages."""
        if self.base_image:
            return self.base_image
        if self.gpu:
            return CUDA_IMAGE
        minor = self.python or ".".join(model_python.split(".")[:2])
        return f"python:{minor}-slim"


def dns_name(name: str) -> str:
    """``name`` as a Kubernetes object name (lowercase letters, digits, dashes)."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    if not _DNS.match(cleaned):
        raise ConfigError(f"model name '{name}' has no usable characters for a Kubernetes name")
    return cleaned


def _check(bad: bool, option: str, problem: str) -> None:
    if bad:
        raise ConfigError(f"--{option}: {problem}")
