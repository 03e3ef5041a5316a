"""``modelport build --replicas N``: a compose fleet of N replicas behind nginx, with
PostgreSQL, Redis, Prometheus and Grafana — rendered, and checked by nginx, promtool and the
Compose binary. (The same nginx template runs for real in ``tests/fleet``.)"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelport.deploy.fleet import PREDICTION_PATHS, Balancer, nginx_conf
from modelport.errors import ConfigError

from .conftest import run_ok

Tool = Callable[[str], str]
Render = Callable[..., Path]
ROUTES = {
    "/predict": True, "/predict/batch": True, "/models/heart/predict": True,
    "/models/heart/versions/1.2.0/predict": True, "/v2/models/heart/infer": True,
    "/v2/models/heart/versions/1/infer": True, "/v1/models/heart:predict": True,
    "/feedback": False, "/admin/models/heart/aliases/production": False,
    "/v2/repository/models/heart/load": False, "/v2/models/heart/ready": False,
}


def _compose(root: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((root / "docker-compose.yml").read_text())
    return data


@pytest.mark.parametrize("replicas", [1, 3, 5])
def test_compose_runs_n_replicas_behind_nginx(render_to: Render, tmp_path: Path,
                                              replicas: int) -> None:
    services = _compose(render_to(tmp_path, replicas=replicas))["services"]
    names = [f"model-{i}" for i in range(1, replicas + 1)]
    assert set(services) == {*names, "registry-init", "lb", "postgres", "redis", "prometheus",
                             "grafana"}
    assert "ports" not in services["model-1"]  # only the balancer is published
    assert services["lb"]["ports"] == ["8000:8080", "8081:8081"]  # REST and gRPC
    assert set(services["lb"]["depends_on"]) == set(names)
    nginx = (tmp_path / "nginx/nginx.conf").read_text()
    assert re.findall(r"server (model-\d+):8000 ", nginx) == names
    assert re.findall(r"server (model-\d+):8081 ", nginx) == names


def test_replicas_share_the_registry_log_and_cache(render_to: Render, tmp_path: Path) -> None:
    services = _compose(render_to(tmp_path, replicas=2))["services"]
    for name in ("model-1", "model-2"):
        replica = services[name]
        env = replica["environment"]
        assert replica["command"] == ["modelport", "serve", "heart@production"]
        assert env["MODELPORT_REGISTRY_DB"] == env["MODELPORT_LOG_DB"]
        assert "@postgres:5432/" in env["MODELPORT_REGISTRY_DB"]
        assert env["MODELPORT_PREDICTION_CACHE"] == "redis"
        assert env["MODELPORT_CACHE_REDIS_URL"] == "redis://redis:6379/0"
        assert "registry:/var/lib/modelport/registry" in replica["volumes"]
        assert replica["depends_on"]["registry-init"]["condition"] == \
            "service_completed_successfully"
        assert "/ready" in " ".join(replica["healthcheck"]["test"])
    assert services["model-1"]["volumes"] != services["model-2"]["volumes"]  # own spools
    init = " ".join(services["registry-init"]["command"])
    assert 'registry push /models/heart --name "heart" --version "1.0.0"' in init
    assert 'registry alias "heart" production "1.0.0"' in init


def test_the_image_can_reach_postgresql_and_redis(bundle: Path) -> None:
    requirements = (bundle / "requirements.txt").read_text()
    assert re.search(r"^psycopg\[binary\]==", requirements, re.M)
    assert re.search(r"^redis==", requirements, re.M)
    dockerfile = (bundle / "Dockerfile").read_text()
    assert "install -d -o 10001 -g 10001 /var/lib/modelport/registry" in dockerfile


@pytest.mark.parametrize("replicas", [1, 4])
def test_fleet_compose_passes_compose_config(tool: Tool, render_to: Render, tmp_path: Path,
                                             replicas: int) -> None:
    root = render_to(tmp_path, replicas=replicas)
    run_ok([tool("compose"), "-f", str(root / "docker-compose.yml"), "config", "-q"])


def test_compose_config_catches_a_missing_service(tool: Tool, render_to: Render,
                                                  tmp_path: Path) -> None:
    """The check is real: the balancer waiting on a replica that does not exist fails."""
    root = render_to(tmp_path, replicas=2)
    text = (root / "docker-compose.yml").read_text()
    (root / "docker-compose.yml").write_text(text.replace("      model-2:\n",
                                                          "      model-9:\n"))
    proc = subprocess.run([tool("compose"), "-f", str(root / "docker-compose.yml"), "config",
                           "-q"], capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "model-9" in proc.stderr


def test_fleet_prometheus_config_passes_promtool(tool: Tool, render_to: Render,
                                                 tmp_path: Path) -> None:
    root = render_to(tmp_path, replicas=3)
    run_ok([tool("promtool"), "check", "config", str(root / "monitoring/prometheus.yml")])


def _nginx_or_skip() -> str:
    from tests.fleet.topology import find_nginx

    path = find_nginx()
    if path is None:
        pytest.skip("nginx is not installed: run scripts/install-verify-tools")
    return path


def _process_conf(tmp_path: Path, **options: Any) -> Path:
    conf = nginx_conf(Balancer(("127.0.0.1:18001", "127.0.0.1:18002"),
                               listen="127.0.0.1:18000", runtime_dir=str(tmp_path),
                               error_log=str(tmp_path / "error.log"), access_log="off",
                               **options))
    path = tmp_path / "nginx.conf"
    path.write_text(conf)
    return path


def test_nginx_accepts_the_rendered_configuration(tmp_path: Path) -> None:
    nginx = _nginx_or_skip()
    conf = _process_conf(tmp_path)
    run_ok([nginx, "-t", "-p", str(tmp_path), "-c", str(conf), "-e",
            str(tmp_path / "error.log")])


def test_nginx_t_catches_a_broken_configuration(tmp_path: Path) -> None:
    nginx = _nginx_or_skip()
    conf = _process_conf(tmp_path)
    conf.write_text(conf.read_text().replace("proxy_next_upstream_tries", "proxy_next_tries"))
    proc = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(conf), "-e",
                           str(tmp_path / "error.log")], capture_output=True, text=True,
                          check=False)
    assert proc.returncode != 0 and "proxy_next_tries" in proc.stderr


@pytest.mark.parametrize("route", sorted(ROUTES), ids=sorted(ROUTES))
def test_only_predictions_are_resent_to_another_replica(route: str) -> None:
    """A POST reaches a retrying location exactly when its route is a prediction."""
    retried = any(re.match(p, route) for p in PREDICTION_PATHS)
    assert retried is ROUTES[route]


def test_nginx_retries_predictions_on_errors_and_keeps_upstreams_alive() -> None:
    conf = nginx_conf(Balancer(("a:1", "b:2")))
    assert conf.count("non_idempotent") == len(PREDICTION_PATHS)
    assert "proxy_next_upstream error timeout http_502 http_503;" in conf
    assert "keepalive 64;" in conf and 'proxy_set_header Connection "";' in conf
    assert "keepalive_timeout 4s;" in conf  # below the servers' 5 s: nginx closes first
    assert "max_fails=3 fail_timeout=2s" in conf
    assert "resolve" not in conf
    assert " resolve;" in nginx_conf(Balancer(("a:1",), resolver="127.0.0.11"))


@pytest.mark.parametrize(("servers", "problem"), [((), "at least one"),
                                                  (("model-1",), "host:port")],
                         ids=["none", "no-port"])
def test_a_balancer_without_usable_replicas_is_refused(servers: tuple[str, ...],
                                                       problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        Balancer(servers)
