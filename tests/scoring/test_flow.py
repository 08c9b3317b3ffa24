"""The batch_scoring flow with the real Prefect and MLflow, its drift alert, and prefect.yaml."""

from __future__ import annotations

import importlib
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from meterid.config import Params
from tests.conftest import REPO_ROOT, write_params

pytestmark = pytest.mark.slow


@pytest.fixture
def project(project_dir: Path, params: Params, fast_fetch,
            exported_model: Path) -> Path:
    score = params.score.model_copy(update=dict(model=str(exported_model), fetch=fast_fetch))
    write_params(project_dir, params.model_copy(update={"score": score}))
    return project_dir


def _steady_history(experiment: str, runs: int) -> None:
    """Earlier nights at 0% UNKNOWN and 90% confidence."""
    mlflow.set_experiment(experiment)
    for _ in range(runs):
        with mlflow.start_run():
            mlflow.log_metrics({"unknown_share": 0.0, "mean_top1_conf": 0.9})


def test_batch_scoring_flow_scores_records_and_raises_a_drift_alert(
        project: Path, params: Params, hostile_server: str, prefect_harness):
    from meterid.flows.batch_scoring import batch_scoring

    _steady_history(params.score.monitor.experiment, params.score.monitor.min_trailing_runs)
    urls = [f"{hostile_server}/ok.jpg", f"{hostile_server}/rotated.jpg", f"{hostile_server}/500"]
    (project / "night.txt").write_text("\n".join(urls))

    result = batch_scoring(input="night.txt", threshold=0.99)  # everything UNKNOWN tonight

    out = pd.read_parquet(result["output"])
    assert len(out) == 3 and list(out["status"]) == ["ok", "ok", "error"]
    assert result["summary"]["unknown_share"] == 1.0
    assert len(result["alerts"]) >= 1 and result["alerts"][0].startswith("UNKNOWN share 100.0%")
    runs = mlflow.search_runs(experiment_names=[params.score.monitor.experiment],
                              order_by=["attributes.start_time DESC"], output_format="list")
    assert runs[0].data.tags["drift_alert"].startswith("UNKNOWN share")


def test_model_field_takes_an_alias_or_a_uri():
    from meterid.registry import model_uri

    assert model_uri(None, "models:/meterid@champion") == "models:/meterid@champion"
    assert model_uri("challenger", "x") == "models:/meterid@challenger"
    assert model_uri("models:/meterid/3", "x") == "models:/meterid/3"


def test_prefect_yaml_deployments_point_at_flows_with_valid_parameters():
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.flows import Flow

    config = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in config["deployments"]}
    assert deployments["nightly"]["schedules"][0]["cron"] == "0 2 * * *"
    assert deployments["weekly"]["schedules"][0]["cron"] == "0 3 * * 1"
    for deployment in deployments.values():
        module, name = deployment["entrypoint"].split(":")
        flow = getattr(importlib.import_module(module), name)
        assert isinstance(flow, Flow)
        flow.validate_parameters(deployment.get("parameters") or {})
        for schedule in deployment.get("schedules") or []:
            CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone"))


def test_prefect_deploy_registers_the_scheduled_deployments(prefect_harness, tmp_path):
    """`prefect deploy --all` with prefect.yaml against the test server, as a user would."""
    import os
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(),
           "PREFECT_HOME": str(tmp_path / "prefect-home")}
    prefect = [sys.executable, "-m", "prefect"]

    def run(*args: str) -> str:
        done = subprocess.run([*prefect, *args], cwd=REPO_ROOT, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout

    run("work-pool", "create", "meterid-local", "--type", "process", "--overwrite")
    run("--no-prompt", "deploy", "--all")
    listing = run("deployment", "ls")
    for name in ("batch_scoring/nightly", "unknown_clustering/weekly", "training/on-demand"):
        assert name in listing
    assert "'cron': '0 2 * * *'" in run("deployment", "inspect", "batch_scoring/nightly")
