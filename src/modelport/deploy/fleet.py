"""The fleet in front of and beside the replicas: the nginx load balancer and Prometheus.

Both are rendered from the same templates for the compose bundle (replicas reached by name,
nginx re-resolving them through Docker's DNS) and for plain processes on one machine (replicas
on ``127.0.0.1`` ports, nginx run with ``-p PREFIX``), so the configuration the tests drive is
the configuration the bundle ships.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from modelport.deploy.templating import render
from modelport.errors import ConfigError

__all__ = ["PREDICTION_PATHS", "Balancer", "nginx_conf", "prometheus_config"]

PREDICTION_PATHS = (
    r"^/predict(/batch)?$",
    r"^/models/[^/]+(/versions/[^/]+)?/predict(/batch)?$",
    r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$",
    r"^/v1/models/[^/]+:predict$",
)
"""Routes whose answer is a pure function of the request body: nginx may send a POST to them
again, to another replica, when the first one failed before answering."""

_SERVER = re.compile(r"^[A-Za-z0-9._-]+:\d{1,5}$")


@dataclass(frozen=True)
class Balancer:
    """nginx in front of the replicas. The defaults suit the official nginx image; a plain
    process on a development machine sets paths relative to its ``-p PREFIX``."""

    servers: tuple[str, ...]
    """``host:port`` of every replica."""
    listen: str = "8080"
    """What nginx listens on: a port, or ``127.0.0.1:PORT``."""
    resolver: str = ""
    """A DNS server that re-resolves replica names every 10 s (Docker's is ``127.0.0.11``; needs
    nginx >= 1.27.3). Empty: names are resolved once, at start."""
    runtime_dir: str = "/tmp"
    """Where the pid file and request/response buffers go (must be writable)."""
    error_log: str = "/dev/stderr"
    access_log: str = "/dev/stdout"
    """A file, or ``off``."""
    max_body: str = "32m"
    """Largest request body (keep it at the servers' ``MODELPORT_MAX_BODY_BYTES``)."""
    worker_processes: str = "auto"
    user: str = ""
    """Who the workers run as when nginx starts as root (empty: nginx's default)."""
    keepalive: int = 64
    """Idle connections kept open to each replica (per nginx worker)."""
    read_timeout_s: int = 35
    """Longest wait for a replica's answer: above the servers' request deadline (30 s)."""
    grpc_servers: tuple[str, ...] = ()
    """``host:port`` of every replica's gRPC server (empty: nginx proxies no gRPC)."""
    grpc_listen: str = "8081"
    """What nginx listens on for gRPC (HTTP/2 without TLS), when ``grpc_servers`` is set."""

    def __post_init__(self) -> None:
        if not self.servers:
            raise ConfigError("the load balancer needs at least one replica")
        bad = [s for s in (*self.servers, *self.grpc_servers) if not _SERVER.match(s)]
        if bad:
            raise ConfigError(f"replicas must be host:port, got {bad}")


def nginx_conf(balancer: Balancer) -> str:
    """``nginx.conf``: keep-alive upstreams, passive health checks (a replica that fails is
    left out for a few seconds), and predictions retried once per other replica when one
    fails or is unreachable before answering."""
    return render("nginx.conf.j2", {"lb": balancer, "prediction_paths": PREDICTION_PATHS})


def prometheus_config(targets: Mapping[str, str], *, service: str, alerts: bool,
                      interval: str = "15s") -> str:
    """``prometheus.yml`` scraping every replica (``{replica name: host:port}``), each series
    labelled with its ``replica``; ``alerts`` loads ``alerts.yml`` beside it."""
    if not targets:
        raise ConfigError("Prometheus needs at least one replica to scrape")
    return render("prometheus.yml.j2", {"targets": dict(targets), "app": service,
                                        "alerts": alerts, "interval": interval})
