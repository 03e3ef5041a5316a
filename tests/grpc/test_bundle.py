"""The bundle of ``modelport build`` carries gRPC: the port in the image, the pod, the Service
and compose (through nginx), probes as they were, and a README whose gRPC call works."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from modelport.deploy import BuildOptions, render_bundle, resources_for
from modelport.deploy.fleet import Balancer, nginx_conf
from modelport.package import open_package
from tests.grpc.conftest import Served, serving


def bundle(heart_package: Path, **options: object) -> dict[str, str]:
    opts = BuildOptions(**options)  # type: ignore[arg-type]
    return render_bundle(open_package(heart_package), opts, resources_for(None), assets={},
                         serving={"numpy": "2.0.0"}, modelport_version="0.1.0").files


def test_the_pod_and_the_service_carry_grpc_and_probes_stay_on_http(
        heart_package: Path) -> None:
    files = bundle(heart_package)
    deployment = yaml.safe_load(files["k8s/base/deployment.yaml"])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8000,
                                                                         "grpc": 8081}
    assert {"name": "MODELPORT_GRPC_PORT", "value": "8081"} in container["env"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
    service = yaml.safe_load(files["k8s/base/service.yaml"])
    grpc_port = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert (grpc_port["port"], grpc_port["targetPort"], grpc_port["appProtocol"]) == (
        8081, "grpc", "grpc")
    assert re.search(r"^EXPOSE 8000 8081$", files["Dockerfile"], re.M)


def test_grpc_port_zero_builds_a_bundle_without_grpc(heart_package: Path) -> None:
    files = bundle(heart_package, grpc_port=0)
    assert re.search(r"^EXPOSE 8000$", files["Dockerfile"], re.M)
    assert "MODELPORT_GRPC_PORT=0" in files["Dockerfile"]
    assert "grpc" not in files["k8s/base/service.yaml"]
    assert "8081" not in files["docker-compose.yml"]
    assert "grpc_pass" not in files["nginx/nginx.conf"]
    assert "grpcurl" not in files["README.md"]


@pytest.mark.parametrize(("options", "field"), [({"grpc_port": 8000}, "grpc-port"),
                                                ({"grpc_port": 70000}, "grpc-port")])
def test_a_bad_grpc_port_names_the_option(heart_package: Path, options: dict[str, int],
                                          field: str) -> None:
    from modelport.errors import ConfigError

    with pytest.raises(ConfigError, match=field):
        BuildOptions(**options)  # type: ignore[arg-type]


def test_nginx_accepts_the_grpc_server_block(tmp_path: Path) -> None:
    from tests.fleet.topology import find_nginx

    nginx = find_nginx()
    if nginx is None:
        pytest.skip("nginx is not installed: run scripts/install-verify-tools")
    conf = nginx_conf(Balancer(("127.0.0.1:18001",), listen="127.0.0.1:18080",
                               runtime_dir=str(tmp_path), error_log=str(tmp_path / "e.log"),
                               access_log="off", grpc_servers=("127.0.0.1:18002",),
                               grpc_listen="127.0.0.1:18081"))
    assert "grpc_pass grpc://modelport_grpc;" in conf
    (tmp_path / "nginx.conf").write_text(conf)
    proc = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
                           "-e", str(tmp_path / "e.log")], capture_output=True, text=True,
                          check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def open_server(heart_package: Path) -> Iterator[Served]:
    served = serving(str(heart_package))
    yield served
    assert served.stop() == 0


@pytest.mark.e2e
def test_the_readme_grpc_call_answers_the_smoke_request(
        heart_package: Path, open_server: Served, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import joblib
    import pandas as pd

    files = bundle(heart_package)
    readme = files["README.md"]
    assert "grpcurl -plaintext 127.0.0.1:8081 grpc.health.v1.Health/Check" in readme
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.S)
                   if "tritonclient" in block)
    (tmp_path / "smoke-request.json").write_text(files["smoke-request.json"])
    out = io.StringIO()
    monkeypatch.chdir(tmp_path)  # the snippet reads smoke-request.json from where it runs
    with contextlib.redirect_stdout(out):
        exec(snippet.replace("127.0.0.1:8081", open_server.target), {})
    row = yaml.safe_load(files["smoke-request.json"])["features"]
    model = joblib.load(heart_package / "model.joblib")
    assert out.getvalue().strip() == str(model.predict(pd.DataFrame([row])))


@pytest.mark.e2e
def test_the_project_readme_grpc_call_gets_the_in_process_answer(
        heart_package: Path, open_server: Served) -> None:
    import joblib
    import numpy as np
    import pandas as pd

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.S)
                   if "tritonclient.grpc" in block)
    scope: dict[str, object] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(snippet.replace("127.0.0.1:8081", open_server.target), scope)
    result, row = scope["result"], scope["row"]
    model = joblib.load(heart_package / "model.joblib")
    frame = pd.DataFrame([row])
    assert result.as_numpy("predict").tolist() == model.predict(frame).tolist()  # type: ignore[attr-defined]
    np.testing.assert_allclose(result.as_numpy("predict_proba"),  # type: ignore[attr-defined]
                               model.predict_proba(frame), atol=1e-12)
