"""The throwaway PostgreSQL cluster (tests/postgres.py), and MLflow and Prefect on it."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import postgres
from tests.postgres import PostgresError, PostgresServer, throwaway_postgres

log = logging.getLogger(__name__)


def _refused(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _spy_mkdtemp(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    made: list[Path] = []
    real = postgres.tempfile.mkdtemp

    def mkdtemp(*args, **kwargs):
        made.append(Path(real(*args, **kwargs)))
        return str(made[-1])

    monkeypatch.setattr(postgres.tempfile, "mkdtemp", mkdtemp)
    return made


def test_url_quotes_credentials_and_names_the_driver():
    server = PostgresServer(host="127.0.0.1", port=5999, user="u@x", password="p:/w",
                            data_dir=Path("/nowhere"), socket_dir=Path("/nowhere"), pid=1)
    assert server.url("db") == "postgresql://u%40x:p%3A%2Fw@127.0.0.1:5999/db"
    assert server.url("db", driver="asyncpg").startswith("postgresql+asyncpg://u%40x:")
    assert "p:/w" not in repr(server)


def test_missing_binaries_and_not_root_is_a_clear_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(postgres, "find_bindir", lambda: None)
    monkeypatch.setattr(postgres.os, "geteuid", lambda: 1000)
    with pytest.raises(PostgresError, match="not root.*apt-get install -y postgresql"):
        postgres.ensure_installed()


def test_database_names_are_checked():
    server = PostgresServer(host="127.0.0.1", port=5999, user="u", password="p",
                            data_dir=Path("/nowhere"), socket_dir=Path("/nowhere"), pid=1)
    with pytest.raises(ValueError, match="letters, digits"):
        server.create_database('x"; DROP DATABASE postgres; --')


@pytest.mark.slow
def test_cluster_serves_psycopg2_asyncpg_and_pg_trgm_then_goes(monkeypatch: pytest.MonkeyPatch):
    import asyncpg
    import psycopg2

    made = _spy_mkdtemp(monkeypatch)
    started = time.monotonic()
    with throwaway_postgres() as pg:
        log.info("cluster up in %.2f s (port %d)", time.monotonic() - started, pg.port)
        assert made and made[0].parent == Path("/tmp")
        assert pg.url("mlflow") == (
            f"postgresql://{pg.user}:{pg.password}@127.0.0.1:{pg.port}/mlflow")
        assert pg.create_database("mlflow") == pg.url("mlflow")
        pg.create_database("prefect")

        conn = psycopg2.connect(pg.url("mlflow"))
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT current_user, current_database(), rolsuper, rolcreatedb, "
                            "inet_server_addr()::text FROM pg_roles WHERE rolname = current_user")
                assert cur.fetchone() == (pg.user, "mlflow", False, True, "127.0.0.1/32")
        finally:
            conn.close()

        async def trgm() -> tuple[str, str, float]:
            conn = await asyncpg.connect(pg.url("prefect"))
            try:
                await conn.execute("CREATE EXTENSION pg_trgm")  # as the owner, no superuser
                owner = await conn.fetchval(
                    "SELECT pg_get_userbyid(datdba) FROM pg_database "
                    "WHERE datname = current_database()")
                version = await conn.fetchval("SHOW server_version")
                score = await conn.fetchval("SELECT similarity('meter-flow', 'meter-flows')")
                return owner, version, score
            finally:
                await conn.close()

        owner, version, score = asyncio.run(trgm())
        assert owner == pg.user
        assert int(version.split(".")[0]) >= postgres.MIN_MAJOR
        assert score > 0.5

        # Passwords are checked over TCP: a wrong one is refused.
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            psycopg2.connect(host=pg.host, port=pg.port, user=pg.user, password="wrong",
                             dbname="mlflow")
        assert postgres._alive(pg.pid)
        stopping = time.monotonic()
    log.info("cluster stopped and removed in %.2f s", time.monotonic() - stopping)

    assert _refused(pg.port)
    assert not postgres._alive(pg.pid)
    assert not made[0].exists()


@pytest.mark.slow
def test_failed_start_reports_the_log_and_cleans_up(monkeypatch: pytest.MonkeyPatch):
    made = _spy_mkdtemp(monkeypatch)
    with pytest.raises(PostgresError, match="(?s)starting PostgreSQL.*"
                       "unrecognized configuration parameter \"no_such_parameter\""):
        with throwaway_postgres(settings={"no_such_parameter": "1"}):
            pytest.fail("started with a bad setting")
    assert made and not made[0].exists()


@pytest.mark.slow
def test_a_port_taken_before_the_start_is_retried_on_another(monkeypatch: pytest.MonkeyPatch):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = iter([busy])
        real = postgres.free_port
        monkeypatch.setattr(postgres, "free_port", lambda: next(ports, None) or real())
        with throwaway_postgres() as pg:
            assert pg.port != busy
            conn = pg.connect()
            conn.close()


@pytest.fixture(scope="module")
def pg():
    with throwaway_postgres() as server:
        yield server


@pytest.mark.slow
def test_mlflow_backend_store_on_postgres(pg: PostgresServer, tmp_path: Path):
    from mlflow.tracking import MlflowClient

    pg.create_database("mlflow_store")
    uri = pg.url("mlflow_store", driver="psycopg2")
    started = time.monotonic()
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("meterid-pg",
                                             artifact_location=(tmp_path / "art").as_uri())
    log.info("MLflow migrations + first experiment in %.2f s", time.monotonic() - started)

    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "accuracy", 0.75)
    client.set_terminated(run.info.run_id)

    again = MlflowClient(tracking_uri=uri)  # a second client: the schema is already there
    experiment = again.get_experiment_by_name("meterid-pg")
    assert experiment is not None and experiment.experiment_id == experiment_id
    assert again.get_run(run.info.run_id).data.metrics == {"accuracy": 0.75}
    log.info("MLflow store total %.2f s", time.monotonic() - started)

    conn = pg.connect("mlflow_store")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT name FROM experiments WHERE experiment_id = %s",
                        (int(experiment_id),))
            assert cur.fetchone() == ("meterid-pg",)
    finally:
        conn.close()


def _prefect_command() -> list[str]:
    beside = Path(sys.executable).with_name("prefect")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("prefect")
    return [found] if found else [sys.executable, "-m", "prefect"]


@pytest.mark.slow
def test_prefect_server_on_postgres(pg: PostgresServer, tmp_path: Path):
    import requests

    pg.create_database("prefect_api")  # pg_trgm is left to Prefect's migrations (as the owner)
    port = postgres.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_API_DATABASE_CONNECTION_URL=pg.url("prefect_api", driver="asyncpg"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        DO_NOT_TRACK="1",
    )
    server_log = tmp_path / "prefect-server.log"
    started = time.monotonic()
    with open(server_log, "wb") as out:
        # cwd: a folder without the repo's prefect.yaml / pyproject.toml settings
        proc = subprocess.Popen([*_prefect_command(), "server", "start", "--host", "127.0.0.1",
                                 "--port", str(port), "--no-ui", "--analytics-off"],
                                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"prefect server exited {proc.returncode}:\n"
                            f"{server_log.read_text(errors='replace')[-6000:]}")
            try:
                if requests.get(f"{base}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail("prefect server not healthy within 120 s:\n"
                            f"{server_log.read_text(errors='replace')[-6000:]}")
            time.sleep(0.5)
        log.info("Prefect server healthy on PostgreSQL in %.2f s", time.monotonic() - started)

        response = requests.post(f"{base}/flows/", json={"name": "meterid-pg-flow"}, timeout=10)
        assert response.status_code in (200, 201), response.text
        flow_id = response.json()["id"]
        assert requests.get(f"{base}/flows/{flow_id}", timeout=10).json()["name"] == (
            "meterid-pg-flow")
    finally:
        stopping = time.monotonic()
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.info("Prefect server stopped in %.2f s", time.monotonic() - stopping)

    conn = pg.connect("prefect_api")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT name FROM flow")
            assert cur.fetchall() == [("meterid-pg-flow",)]
            cur.execute("SELECT extname FROM pg_extension WHERE extname = 'pg_trgm'")
            assert cur.fetchone() == ("pg_trgm",)
    finally:
        conn.close()
