"""`meterid serve`'s plan: commands, databases and the checks made before anything starts."""

from __future__ import annotations

import shutil
import socket

import pytest

from meterid.config import Params
from meterid.serve.plan import ServeError, check_ports_free, plan_stack, postgres_urls
from tests.conftest import REPO_ROOT


@pytest.fixture
def project(tmp_path):
    shutil.copy(REPO_ROOT / "prefect.yaml", tmp_path / "prefect.yaml")
    return tmp_path


def test_the_plan_serves_the_projects_store_and_points_the_worker_at_both_servers(
        params: Params, project):
    plan = plan_stack(params, project)
    mlflow = plan.mlflow.command
    assert mlflow[mlflow.index("--backend-store-uri") + 1] == \
        f"sqlite:///{project}/mlflow/mlflow.db"
    assert mlflow[mlflow.index("--artifacts-destination") + 1] == \
        (project / "mlflow" / "artifacts").as_uri()
    assert plan.prefect.env["PREFECT_API_DATABASE_CONNECTION_URL"] == \
        f"sqlite+aiosqlite:///{project}/.serve/prefect.db"
    assert plan.worker.env["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"
    assert plan.worker.env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
    assert plan.worker.command[-4:-2] == ["--type", "process"]
    assert "MLFLOW_TRACKING_URI" not in plan.prefect.env  # a server is not pointed elsewhere


def test_postgres_puts_each_server_in_a_database_of_its_own(params: Params, project):
    plan = plan_stack(params, project, "postgresql://u:p%40ss@127.0.0.1:5433/meterid")
    assert plan.prefect.env["PREFECT_API_DATABASE_CONNECTION_URL"] == \
        "postgresql+asyncpg://u:p%40ss@127.0.0.1:5433/meterid_prefect"
    mlflow = plan.mlflow.command
    assert mlflow[mlflow.index("--backend-store-uri") + 1] == \
        "postgresql+psycopg2://u:p%40ss@127.0.0.1:5433/meterid_mlflow"
    assert plan.worker.env["METERID_REVIEW_STORE"] == \
        "postgresql+psycopg2://u:p%40ss@127.0.0.1:5433/meterid_review"  # the label store
    assert "METERID_REVIEW_STORE" not in plan_stack(params, project).worker.env  # SQLite


@pytest.mark.parametrize("url", ["mysql://u:p@h/db", "postgresql://u:p@h", "not a url"])
def test_a_bad_postgres_url_is_named(url: str):
    with pytest.raises(ServeError, match="--postgres"):
        postgres_urls(url)


def test_a_taken_port_is_named_before_anything_starts():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ServeError, match=rf"port {port} on 127.0.0.1 \(for the MLflow "
                           r"server\) is already in use"):
            check_ports_free("127.0.0.1", {"Prefect server": 0, "MLflow server": port})


def test_a_work_pool_prefect_yaml_does_not_deploy_to_is_refused(params: Params, project):
    other = params.model_copy(update={"serve": params.serve.model_copy(
        update={"work_pool": "elsewhere"})})
    with pytest.raises(ServeError, match="work pool.*'meterid-local'.*'elsewhere'"):
        plan_stack(other, project)


def test_serving_a_tracking_server_is_refused(params: Params, project):
    remote = params.model_copy(update={"stores": params.stores.model_copy(
        update={"mlflow_tracking_uri": "http://127.0.0.1:5000"})})
    with pytest.raises(ServeError, match="is a server"):
        plan_stack(remote, project)
