"""What ``meterid serve`` starts, as data: commands, environments, health URLs and logs.

Planning is pure (no process starts), so the commands are unit-tested and the port check runs
before anything starts. The stack on one machine:

- a Prefect server with its UI (state: SQLite under ``serve.state_dir``, or PostgreSQL);
- an MLflow tracking server (backend: the project's ``stores.mlflow_tracking_uri`` database, so
  the CLI's registry is the one served, or PostgreSQL), serving artifacts from
  ``stores.mlflow_artifact_root``;
- the process work pool of ``prefect.yaml``, its deployments applied, and a worker whose flow
  runs inherit ``PREFECT_API_URL`` and ``MLFLOW_TRACKING_URI`` pointing at both servers.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from meterid.config import Params
from meterid.stores import REVIEW_STORE_ENV, TELEMETRY_OFF, absolute_tracking_uri

PREFECT_DB_SUFFIX = "_prefect"
MLFLOW_DB_SUFFIX = "_mlflow"
REVIEW_DB_SUFFIX = "_review"
# Variables of the caller's environment that would point a server or the worker elsewhere.
_INHERITED_POINTERS = ("PREFECT_API_URL", "PREFECT_API_DATABASE_CONNECTION_URL",
                       "MLFLOW_TRACKING_URI", "PREFECT_HOME", "PREFECT_PROFILES_PATH")


class ServeError(RuntimeError):
    """The stack cannot start as configured; the message names the cause."""


@dataclass(frozen=True)
class Service:
    """One long-running process of the stack."""

    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    health_url: str | None = None  # polled until it answers 200; None: no endpoint (worker)


@dataclass(frozen=True)
class StackPlan:
    root: Path
    host: str
    ports: dict[str, int]  # what each port is for -> port
    prefect: Service
    mlflow: Service
    worker: Service
    work_pool: str
    client_env: dict[str, str]  # what the CLI, the dashboard and the worker need to use it
    databases: dict[str, str] = field(default_factory=dict)  # PostgreSQL databases to create
    startup_timeout_s: float = 180.0

    @property
    def prefect_ui(self) -> str:
        return f"http://{self.host}:{self.ports['Prefect server']}"

    @property
    def mlflow_ui(self) -> str:
        return f"http://{self.host}:{self.ports['MLflow server']}"


def _bin(tool: str) -> str:
    """The tool installed beside this interpreter (the venv's), else the one on PATH."""
    local = Path(sys.executable).parent / tool
    return str(local) if local.exists() else tool


def _base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _INHERITED_POINTERS}
    return {**env, **TELEMETRY_OFF, "PREFECT_HOME": str(home)}


def postgres_urls(url: str) -> dict[str, str]:
    """The databases on one PostgreSQL server: ``<db>_prefect`` (asyncpg, Prefect's driver),
    ``<db>_mlflow`` (psycopg2, MLflow's) and ``<db>_review`` (the label store); one each,
    because Prefect and MLflow both keep an ``alembic_version``."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception as error:  # sqlalchemy's ArgumentError: name the input
        raise ServeError(f"--postgres {url!r} is not a database URL: {error}") from error
    if parsed.get_backend_name() != "postgresql" or not parsed.database:
        raise ServeError(f"--postgres {parsed.render_as_string()!r}: expected "
                         "postgresql://user:password@host:port/database")

    def render(driver: str, suffix: str) -> str:
        return parsed.set(drivername=f"postgresql+{driver}",
                          database=f"{parsed.database}{suffix}").render_as_string(
                              hide_password=False)
    return {"prefect": render("asyncpg", PREFECT_DB_SUFFIX),
            "mlflow": render("psycopg2", MLFLOW_DB_SUFFIX),
            "review": render("psycopg2", REVIEW_DB_SUFFIX)}



def _mlflow_backend(params: Params, root: Path) -> str:
    uri = absolute_tracking_uri(params.stores.mlflow_tracking_uri, root)
    if uri.startswith(("http://", "https://")):
        raise ServeError(f"params.yaml stores.mlflow_tracking_uri is a server ({uri}): serve "
                         "needs the database it should serve (e.g. sqlite:///mlflow/mlflow.db) "
                         "or --postgres")
    return uri


def _check_work_pool(root: Path, pool: str) -> None:
    """prefect.yaml names its pool: a different ``serve.work_pool`` would start a worker that
    never sees the deployments."""
    spec = root / "prefect.yaml"
    if not spec.is_file():
        raise ServeError(f"{spec}: no such file; serve applies the deployments it defines")
    deployments = (yaml.safe_load(spec.read_text()) or {}).get("deployments") or []
    pools = {(d.get("work_pool") or {}).get("name") for d in deployments}
    if pools != {pool}:
        raise ServeError(f"{spec} deploys to work pool(s) {sorted(map(str, pools))} but "
                         f"params.yaml serve.work_pool is {pool!r}: make them the same")


def plan_stack(params: Params, root: Path, postgres_url: str | None = None) -> StackPlan:
    """The stack for the project at ``root``; ``postgres_url`` overrides
    ``serve.postgres_url``."""
    cfg, root = params.serve, root.resolve()
    state = cfg.state_dir if cfg.state_dir.is_absolute() else root / cfg.state_dir
    artifacts = params.stores.mlflow_artifact_root
    artifacts = artifacts if artifacts.is_absolute() else root / artifacts
    _check_work_pool(root, cfg.work_pool)
    postgres_url = postgres_url or cfg.postgres_url
    databases = postgres_urls(postgres_url) if postgres_url else {}
    prefect_db = databases.get("prefect", f"sqlite+aiosqlite:///{state / 'prefect.db'}")
    mlflow_db = databases.get("mlflow") or _mlflow_backend(params, root)
    api_url = f"http://{cfg.host}:{cfg.prefect_port}/api"
    tracking_url = f"http://{cfg.host}:{cfg.mlflow_port}"
    client_env = {"PREFECT_API_URL": api_url, "MLFLOW_TRACKING_URI": tracking_url}
    if "review" in databases:  # scoring runs and the dashboard share the reviewers' labels
        client_env[REVIEW_STORE_ENV] = databases["review"]
    prefect = Service(
        "Prefect server",
        [_bin("prefect"), "server", "start", "--host", cfg.host, "--port", str(cfg.prefect_port),
         "--analytics-off"],
        {**_base_env(state / "prefect-server"), "PREFECT_API_DATABASE_CONNECTION_URL": prefect_db,
         "PREFECT_SERVER_API_HOST": cfg.host, "PREFECT_SERVER_API_PORT": str(cfg.prefect_port)},
        state / "logs" / "prefect-server.log", f"{api_url}/health")
    mlflow = Service(
        "MLflow server",
        [_bin("mlflow"), "server", "--backend-store-uri", mlflow_db, "--serve-artifacts",
         "--artifacts-destination", artifacts.as_uri(), "--host", cfg.host,
         "--port", str(cfg.mlflow_port), "--workers", "1"],
        _base_env(state / "mlflow-server"), state / "logs" / "mlflow-server.log",
        f"{tracking_url}/health")
    worker = Service(
        "Prefect worker",
        [_bin("prefect"), "worker", "start", "--pool", cfg.work_pool, "--type", "process",
         "--name", f"meterid-{socket.gethostname()}"],
        {**_base_env(state / "prefect-client"), **client_env},
        state / "logs" / "prefect-worker.log")
    return StackPlan(root=root, host=cfg.host,
                     ports={"Prefect server": cfg.prefect_port, "MLflow server": cfg.mlflow_port},
                     prefect=prefect, mlflow=mlflow, worker=worker, work_pool=cfg.work_pool,
                     client_env=client_env, databases=databases,
                     startup_timeout_s=cfg.startup_timeout_s)


def check_ports_free(host: str, ports: dict[str, int]) -> None:
    """Bind each port once (and let go): a taken port is an error naming it and its use."""
    if len(set(ports.values())) != len(ports):
        raise ServeError(f"two services on one port: {ports}")
    for purpose, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # As the servers do: a port left in TIME_WAIT is free, one with a listener is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as error:
                cause = "already in use" if error.errno == errno.EADDRINUSE else error.strerror
                raise ServeError(f"port {port} on {host} (for the {purpose}) is {cause}: stop "
                                 "what holds it or choose another port in params.yaml serve / "
                                 "the --prefect-port / --mlflow-port options") from error
