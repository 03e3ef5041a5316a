"""The compose topology as plain processes on one machine: N replicas behind nginx, the
machine's PostgreSQL (registry and prediction log) and Redis (prediction cache), and optionally
Prometheus scraping every replica with the shipped alert rules.

Shared by the fleet tests (``tests/fleet``), the fleet benchmark (``benchmarks/fleet.py``) and
``scripts/fleet up|down``. nginx's configuration is rendered by ``modelport.deploy.fleet`` —
the same template as the compose bundle's, with replicas on ``127.0.0.1`` ports instead of
container names. Every process is started here, its PID written to ``ROOT/fleet.json``, and
stopped by that PID (SIGTERM, then SIGKILL after a grace period); PostgreSQL state lives in two
schemas of its own, dropped by :meth:`Fleet.down`. Everything listens on 127.0.0.1 only.

    python -m tests.fleet.topology up --dir /tmp/fleet [--package PKG] [--replicas 3]
    python -m tests.fleet.topology down --dir /tmp/fleet
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from modelport.deploy.fleet import Balancer, nginx_conf, prometheus_config
from modelport.deploy.render import monitoring_assets

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PG_URL = os.environ.get("MODELPORT_TEST_PG_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
"""The machine's PostgreSQL (``MODELPORT_TEST_PG_URL``); a fleet reads it when created."""
REDIS_URL = os.environ.get("MODELPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ADMIN_KEY = "fleet-admin-key"


def free_port() -> int:
    """A port nobody listens on now (on 127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_nginx() -> str | None:
    """nginx from PATH or the distribution's sbin (root's PATH may lack /usr/sbin)."""
    found = shutil.which("nginx")
    if found is None and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"
    return found


def schema_url(database: str, schema: str) -> str:
    """The database URL with ``schema`` as its search path."""
    return f"{database}?options=-csearch_path%3D{schema}"


@dataclass
class FleetSpec:
    """What to start. ``model`` is the registry name (unique per run: PostgreSQL and Redis
    are shared with other tests)."""

    package: str
    model: str
    replicas: int = 3
    prometheus: bool = False
    poll_s: float = 0.5
    """How often each replica checks the alias (the compose bundle uses 1 s)."""
    workers: int = 1
    nginx_workers: int = 1
    log_level: str = "warning"
    env: dict[str, str] = field(default_factory=dict)
    """More ``MODELPORT_*`` settings for every replica."""


@dataclass
class FleetState:
    """Ports, PIDs and schemas of a running fleet (``ROOT/fleet.json``)."""

    spec: FleetSpec
    run_id: str
    ports: list[int]
    lb_port: int
    prom_port: int = 0
    pids: dict[str, int] = field(default_factory=dict)
    pg_url: str = ""
    """The database whose two schemas the fleet uses (``MODELPORT_TEST_PG_URL`` at creation)."""
    redis_url: str = ""


class Fleet:
    """A fleet rooted at a directory: start, stop, kill and restart its processes."""

    def __init__(self, root: Path, state: FleetState) -> None:
        self.root, self.state = root, state
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def create(cls, root: Path, spec: FleetSpec) -> Fleet:
        """A fleet not started yet, with free ports chosen."""
        root.mkdir(parents=True, exist_ok=True)
        ports = [free_port() for _ in range(spec.replicas)]
        state = FleetState(spec, uuid.uuid4().hex[:10], ports, free_port(),
                           free_port() if spec.prometheus else 0,
                           pg_url=os.environ.get("MODELPORT_TEST_PG_URL", PG_URL),
                           redis_url=os.environ.get("MODELPORT_TEST_REDIS_URL", REDIS_URL))
        return cls(root, state)

    @classmethod
    def load(cls, root: Path) -> Fleet:
        """The fleet whose state ``root/fleet.json`` holds."""
        data = json.loads((root / "fleet.json").read_text())
        spec = FleetSpec(**data.pop("spec"))
        return cls(root, FleetState(spec=spec, **data))

    def save(self) -> None:
        """Write ``fleet.json`` (after every start/stop, so ``down`` can always clean up)."""
        tmp = self.root / "fleet.json.tmp"
        tmp.write_text(json.dumps(asdict(self.state), indent=1))
        tmp.replace(self.root / "fleet.json")

    # -- addresses --------------------------------------------------------------------------

    @property
    def spec(self) -> FleetSpec:
        """What was asked for."""
        return self.state.spec

    @property
    def lb_url(self) -> str:
        """nginx."""
        return f"http://127.0.0.1:{self.state.lb_port}"

    @property
    def prom_url(self) -> str:
        """Prometheus (when started)."""
        return f"http://127.0.0.1:{self.state.prom_port}"

    def replica_url(self, i: int) -> str:
        """Replica ``i`` (0-based), directly."""
        return f"http://127.0.0.1:{self.state.ports[i]}"

    @property
    def registry_url(self) -> str:
        """The registry catalog (PostgreSQL schema of its own)."""
        return schema_url(self.state.pg_url, f"fleet_{self.state.run_id}_reg")

    @property
    def log_url(self) -> str:
        """The prediction log (PostgreSQL schema of its own)."""
        return schema_url(self.state.pg_url, f"fleet_{self.state.run_id}_log")

    @property
    def store(self) -> Path:
        """The shared artifact store (a shared volume in the compose bundle)."""
        return self.root / "store"

    # -- lifecycle --------------------------------------------------------------------------

    def up(self, timeout_s: float = 120) -> None:
        """Schemas, the registry (``MODEL:1.0.0``, production -> 1.0.0), the replicas, nginx
        and Prometheus; returns once every one of them answers."""
        self.save()
        self._create_schemas()
        self.push("1.0.0", Path(self.spec.package))
        self.move_alias("1.0.0")
        for i in range(self.spec.replicas):
            self.start_replica(i)
        self._start_nginx()
        if self.spec.prometheus:
            self._start_prometheus()
        deadline = time.monotonic() + timeout_s
        for i in range(self.spec.replicas):
            self.wait_ready(i, deadline - time.monotonic())
        wait_http(f"{self.lb_url}/ready", deadline - time.monotonic())
        if self.spec.prometheus:
            self.wait_scraped(deadline - time.monotonic())

    def down(self) -> None:
        """Stop every process this fleet started (by PID; all at once, then each waited for)
        and drop its schemas."""
        for name in list(self.state.pids):
            with contextlib.suppress(ProcessLookupError):
                self.signal(name, signal.SIGTERM)
        for name in list(self.state.pids):
            self._reap(name, grace_s=15)
        self._drop_schemas()

    # -- the registry -----------------------------------------------------------------------

    def push(self, version: str, package: Path) -> None:
        """Register ``package`` as ``MODEL:version``."""
        from modelport.registry import Registry

        with Registry.open(self.registry_url, self.store) as reg:
            reg.push(package, self.spec.model, version)

    def move_alias(self, version: str, *, check: bool = False) -> None:
        """Point ``MODEL@production`` at ``version`` (``check=False``: as a script writing the
        catalog directly would, so each replica's own check is what refuses a bad one)."""
        from modelport.registry import Registry

        with Registry.open(self.registry_url, self.store) as reg:
            reg.set_alias(self.spec.model, "production", version, check=check)

    # -- processes --------------------------------------------------------------------------

    def start_replica(self, i: int) -> None:
        """Start replica ``i`` on its port (again, after it stopped)."""
        home = self.root / f"replica-{i}"
        home.mkdir(exist_ok=True)
        argv = [str(BIN / "modelport"), "serve", f"{self.spec.model}@production",
                "--host", "127.0.0.1", "--port", str(self.state.ports[i]),
                "--db", self.registry_url, "--store", str(self.store)]
        if self.spec.workers > 1:
            argv += ["--workers", str(self.spec.workers)]
        env = dict(os.environ, **self._replica_env(home), **self.spec.env)
        self._spawn(f"replica-{i}", argv, cwd=home, env=env)

    def _replica_env(self, home: Path) -> dict[str, str]:
        return {
            "MODELPORT_LOG_DB": self.log_url, "MODELPORT_LOG_SPOOL_DIR": str(home / "spool"),
            "MODELPORT_PREDICTION_CACHE": "redis",
            "MODELPORT_CACHE_REDIS_URL": self.state.redis_url,
            "MODELPORT_ADMIN_KEYS": ADMIN_KEY, "MODELPORT_PUBLIC_METRICS": "true",
            "MODELPORT_REGISTRY_POLL_S": str(self.spec.poll_s),
            "MODELPORT_LOG_LEVEL": self.spec.log_level, "MODELPORT_GRACEFUL_TIMEOUT_S": "10",
        }

    def _start_nginx(self) -> None:
        nginx = find_nginx()
        if nginx is None:
            raise RuntimeError("nginx is not installed: run scripts/install-verify-tools")
        prefix = self.root / "nginx"
        prefix.mkdir(exist_ok=True)
        conf = nginx_conf(Balancer(
            tuple(f"127.0.0.1:{p}" for p in self.state.ports),
            listen=f"127.0.0.1:{self.state.lb_port}", runtime_dir=str(prefix),
            error_log=str(prefix / "error.log"), access_log="off",
            worker_processes=str(self.spec.nginx_workers),
            user="root" if os.geteuid() == 0 else ""))
        (prefix / "nginx.conf").write_text(conf)
        self._spawn("nginx", [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                              "-e", str(prefix / "error.log"), "-g", "daemon off;"], cwd=prefix)

    def _start_prometheus(self) -> None:
        home = self.root / "prometheus"
        home.mkdir(exist_ok=True)
        rules = monitoring_assets().get("alerts.yml")
        if rules is not None:
            (home / "alerts.yml").write_text(rules)
        targets = {f"replica-{i}": f"127.0.0.1:{p}" for i, p in enumerate(self.state.ports)}
        (home / "prometheus.yml").write_text(prometheus_config(
            targets, service=self.spec.model, alerts=rules is not None, interval="1s"))
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed: run scripts/install-verify-tools")
        self._spawn("prometheus", [
            binary, f"--config.file={home / 'prometheus.yml'}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.state.prom_port}", "--log.level=warn"],
            cwd=home)

    def _spawn(self, name: str, argv: list[str], *, cwd: Path,
               env: dict[str, str] | None = None) -> None:
        with open(self.root / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self._procs[name] = proc
        self.state.pids[name] = proc.pid
        self.save()

    def signal(self, name: str, sig: signal.Signals) -> None:
        """Send ``sig`` to one process of this fleet (``replica-0``, ``nginx`` …)."""
        os.kill(self.state.pids[name], sig)

    def wait_exit(self, name: str, timeout_s: float) -> int | None:
        """Wait for a process this fleet started to exit; its exit status (None: still alive
        after ``timeout_s``)."""
        proc = self._procs.get(name)
        if proc is not None:
            try:
                return proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                return None
        deadline = time.monotonic() + timeout_s  # started by another process (scripts/fleet)
        while time.monotonic() < deadline:
            if not _alive(self.state.pids[name]):
                return 0
            time.sleep(0.05)
        return None

    def stop(self, name: str, grace_s: float = 15) -> int | None:
        """SIGTERM, then SIGKILL after ``grace_s``; forget the PID. The exit status."""
        if name not in self.state.pids:
            return None
        with contextlib.suppress(ProcessLookupError):
            self.signal(name, signal.SIGTERM)
        return self._reap(name, grace_s)

    def _reap(self, name: str, grace_s: float) -> int | None:
        """Wait for ``name`` to exit, SIGKILL it after ``grace_s``; forget its PID."""
        code = self.wait_exit(name, grace_s)
        if code is None:
            with contextlib.suppress(ProcessLookupError):
                self.signal(name, signal.SIGKILL)
            code = self.wait_exit(name, 5)
        del self.state.pids[name]
        self._procs.pop(name, None)
        self.save()
        return code

    def wait_ready(self, i: int, timeout_s: float = 60) -> None:
        """Until replica ``i`` answers ``/ready`` with 200."""
        wait_http(f"{self.replica_url(i)}/ready", timeout_s,
                   log=self.root / f"replica-{i}.log")

    def wait_scraped(self, timeout_s: float = 30) -> None:
        """Until Prometheus has scraped every replica successfully."""
        query = 'count(up{job="modelport"} == 1)'
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if prom_value(self.prom_url, query) == self.spec.replicas:
                return
            time.sleep(0.5)
        raise TimeoutError(f"Prometheus did not scrape all {self.spec.replicas} replicas")

    # -- PostgreSQL -------------------------------------------------------------------------

    def _schemas(self) -> list[str]:
        return [f"fleet_{self.state.run_id}_reg", f"fleet_{self.state.run_id}_log"]

    def _create_schemas(self) -> None:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.state.pg_url)
        try:
            with engine.begin() as conn:
                for schema in self._schemas():
                    conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        finally:
            engine.dispose()

    def _drop_schemas(self) -> None:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.state.pg_url)
        try:
            with engine.begin() as conn:
                for schema in self._schemas():
                    conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        finally:
            engine.dispose()


def prom_value(prom_url: str, query: str) -> float | None:
    """The single value of an instant query (None when empty or unreachable)."""
    try:
        body = httpx.get(f"{prom_url}/api/v1/query", params={"query": query}, timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return None
    result = body.get("data", {}).get("result", [])
    return float(result[0]["value"][1]) if result else None


def wait_http(url: str, timeout_s: float, *, log: Path | None = None) -> None:
    deadline = time.monotonic() + max(timeout_s, 1)
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
    raise TimeoutError(f"{url} did not answer 200 in {timeout_s:.0f} s\n{tail}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def example_package(out: Path) -> Path:
    """The bundled example model trained and packed under ``out`` (for ``scripts/fleet``)."""
    import importlib.util

    from modelport.package import pack

    if (out / "heart" / "modelport.yaml").is_file():
        return out / "heart"
    spec = importlib.util.spec_from_file_location("heart_train",
                                                  ROOT / "examples" / "heart" / "train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.train(out)
    pack(out / "model.joblib", out / "heart", name="heart", version="1.0.0",
         reference=out / "heart.csv", target="condition")
    return out / "heart"


def main(argv: list[str] | None = None) -> int:
    """``up`` (prints the addresses as JSON) or ``down``."""
    parser = argparse.ArgumentParser(prog="scripts/fleet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get(
        "TMPDIR", "/tmp")) / "modelport-fleet")
    parser.add_argument("--package", type=Path, help="default: the bundled example, trained")
    parser.add_argument("--model", default="", help="registry name (default: fleet_<random>)")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--prometheus", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "down":
        if not (args.dir / "fleet.json").is_file():
            print(f"no fleet in {args.dir}")
            return 0
        Fleet.load(args.dir).down()
        print(f"stopped the fleet in {args.dir}")
        return 0
    if (args.dir / "fleet.json").is_file() and Fleet.load(args.dir).state.pids:
        print(f"a fleet already runs in {args.dir}: scripts/fleet down --dir {args.dir}")
        return 1
    package = args.package or example_package(args.dir / "example")
    fleet = Fleet.create(args.dir, FleetSpec(
        str(package), args.model or f"fleet_{uuid.uuid4().hex[:8]}", args.replicas,
        prometheus=args.prometheus))
    try:
        fleet.up()
    except BaseException:
        fleet.down()
        raise
    print(json.dumps({"lb": fleet.lb_url, "model": fleet.spec.model,
                      "replicas": [fleet.replica_url(i) for i in range(args.replicas)],
                      "prometheus": fleet.prom_url if args.prometheus else None,
                      "admin_key": ADMIN_KEY, "dir": str(args.dir)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
