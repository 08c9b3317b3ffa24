"""`meterid serve` as users run it: real Prefect server, worker and MLflow server on 127.0.0.1,
the nightly deployment triggered through the API, a promotion in MLflow seen by the next run,
and nothing left running after SIGTERM; once on SQLite (with a restart), once on PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from meterid.config import Params, ServeConfig, load_params
from meterid.scoring.demo import serve_folder
from meterid.serve.stack import is_alive
from tests.conftest import REPO_ROOT
from tests.integration.production import (
    PrefectApi,
    make_project,
    register_versions,
    write_night_list,
)
from tests.postgres import throwaway_postgres

pytestmark = pytest.mark.slow

DEPLOYMENTS = {"batch_scoring/nightly": "0 2 * * *", "unknown_clustering/weekly": "0 3 * * 1",
               "training/on-demand": None}
READY_LINE = "Ctrl-C stops the stack"


class Serve:
    """One `meterid serve` process and every process it spawned."""

    def __init__(self, project: Path, *args: str):
        env = {k: v for k, v in os.environ.items()
               if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "PREFECT_HOME")}
        env["PREFECT_WORKER_QUERY_SECONDS"] = "2"  # the worker polls every 2 s, not 10
        self.output = project / f"serve-{time.monotonic_ns()}.log"
        with open(self.output, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "meterid.cli", "serve", *args], cwd=project, env=env,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.seen: dict[int, psutil.Process] = {}

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while READY_LINE not in self.text():
            assert self.process.poll() is None, f"serve exited early:\n{self.text()[-4000:]}"
            assert time.monotonic() < deadline, f"serve not ready:\n{self.text()[-4000:]}"
            time.sleep(0.5)
        self.record_tree()

    def record_tree(self) -> None:
        root = psutil.Process(self.process.pid)
        for member in [root, *root.children(recursive=True)]:
            self.seen.setdefault(member.pid, member)

    def stop(self) -> list[str]:
        """SIGTERM as a service manager sends it; returns the processes still alive after."""
        self.record_tree()
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(180) == 0, self.text()[-4000:]
        alive = [p for p in self.seen.values() if is_alive(p)]
        return [" ".join(p.cmdline()[:4]) for p in alive]

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        for member in self.seen.values():
            if is_alive(member):
                member.kill()


def _served(project: Path) -> ServeConfig:
    """The ports make_project chose, as written in the project's params.yaml."""
    return load_params(project / "params.yaml").serve


def _night(api: PrefectApi, stack: Serve, project: Path, deployment: dict, base: str,
           name: str) -> tuple[pd.DataFrame, dict]:
    night_list = write_night_list(project, base, name)
    output = project / "reports" / "scoring" / f"{name}.parquet"
    run_id = api.run(deployment, {"input": str(night_list), "output": str(output)})
    stack.record_tree()
    run = api.wait(run_id)
    assert run["state_type"] == "COMPLETED", api.logs(run_id)
    scored = pd.read_parquet(output)
    # meterid's own INFO lines reach the run's log in the UI, though the worker's process
    # passes only warnings to its console
    api.wait_for_log(run_id, f"wrote {len(scored)} rows to {output}")
    return scored, api.artifacts(run_id)


def _check_cli_follows(project: Path, mlflow_url: str) -> None:
    """The CLI, given the server in MLFLOW_TRACKING_URI, reads the registry the runs used."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_url}
    listed = subprocess.run([sys.executable, "-m", "meterid.cli", "models", "--json"],
                            cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr[-3000:]
    versions = {v["version"]: v["aliases"] for v in json.loads(listed.stdout)}
    assert versions == {2: ["champion"], 1: []}


def _check_deployments(api: PrefectApi) -> dict[str, dict]:
    deployments = api.deployments()
    assert set(DEPLOYMENTS) <= set(deployments)
    for name, cron in DEPLOYMENTS.items():
        expected = [(cron, True)] if cron else []
        assert api.crons(deployments[name]) == expected, name
        assert not deployments[name]["paused"], name
    return deployments


def _exercise(project: Path, params: Params, tiny_model, monkeypatch: pytest.MonkeyPatch,
              *serve_args: str, screenshots: Path | None = None) -> None:
    from mlflow.tracking import MlflowClient

    served = _served(project)
    api = PrefectApi(f"http://127.0.0.1:{served.prefect_port}/api")
    mlflow_url = f"http://127.0.0.1:{served.mlflow_port}"
    stack = Serve(project, *serve_args)
    try:
        stack.wait_ready()
        assert f"Prefect UI: http://127.0.0.1:{served.prefect_port}" in stack.text()
        assert f"MLflow UI:  {mlflow_url}" in stack.text()
        deployments = _check_deployments(api)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_url)
        register_versions(tiny_model)  # through the server: registry and artifacts

        with serve_folder(project / "photos") as base:
            first, artifacts = _night(api, stack, project, deployments["batch_scoring/nightly"],
                                      base, "night-1")
            assert list(first["status"]) == ["ok", "ok", "ok", "error"]
            assert set(first.loc[first["status"] == "ok", "model_version"]) == {1}
            assert "scoring-summary" in artifacts

            client = MlflowClient(mlflow_url)
            experiment = client.get_experiment_by_name(params.score.monitor.experiment)
            assert experiment.artifact_location.startswith("mlflow-artifacts:")
            runs = client.search_runs([experiment.experiment_id])
            assert [r.data.params["model"] for r in runs] == ["models:/meterid/1"]

            client.set_registered_model_alias("meterid", "champion", "2")  # as in the MLflow UI
            second, _ = _night(api, stack, project, deployments["batch_scoring/nightly"], base,
                               "night-2")
            assert set(second.loc[second["status"] == "ok", "model_version"]) == {2}
        _check_cli_follows(project, mlflow_url)
        _check_retrain_page(api, deployments["training/on-demand"], project, monkeypatch)
        if screenshots is not None:  # the README's pictures, taken by a real browser
            from meterid.serve.screenshots import ensure_chromium, take_screenshots

            ensure_chromium()
            shots = take_screenshots(f"http://127.0.0.1:{served.prefect_port}", mlflow_url,
                                     screenshots)
            assert [p.name for p in shots] == ["prefect-deployments.png",
                                               "prefect-nightly-run.png", "mlflow-model.png"]
            assert all(p.stat().st_size > 20_000 for p in shots)  # not a blank page
        assert not (project / "mlruns").exists() and not (project / "mlflow.db").exists()
        assert stack.stop() == []
    finally:
        stack.kill()


def _check_retrain_page(api: PrefectApi, training: dict, project: Path,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The dashboard's Retrain button starts the on-demand deployment on the server (its pool
    paused first: the run is created, not trained, in this test)."""
    from streamlit.testing.v1 import AppTest

    api.pause_pool("meterid-local")
    monkeypatch.chdir(project)  # the page reads the project's params.yaml
    monkeypatch.setenv("PREFECT_API_URL", api.url)
    app = AppTest.from_file(str(REPO_ROOT / "meterid/dashboard/views/retrain.py"),
                            default_timeout=60).run()
    app.button(key="retrain-start").click().run()
    assert not app.exception and not app.error, (app.exception, [e.value for e in app.error])
    [run] = api.flow_runs(training)
    assert any(f"flow run {run['name']}: Scheduled" in info.value for info in app.info)


def test_serve_on_sqlite_runs_the_nightly_deployment_and_keeps_schedules_across_a_restart(
        tmp_path: Path, params: Params, tiny_model, monkeypatch: pytest.MonkeyPatch):
    project = make_project(tmp_path, params)
    _exercise(project, params, tiny_model, monkeypatch, screenshots=tmp_path / "shots")
    assert (project / ".serve" / "prefect.db").is_file()

    again = Serve(project)
    try:
        again.wait_ready()
        _check_deployments(PrefectApi(f"http://127.0.0.1:{_served(project).prefect_port}/api"))
        assert again.stop() == []
    finally:
        again.kill()


def test_serve_on_postgres_keeps_prefect_and_mlflow_state_there(
        tmp_path: Path, params: Params, tiny_model, monkeypatch: pytest.MonkeyPatch):
    project = make_project(tmp_path, params)
    with throwaway_postgres() as server:
        _exercise(project, params, tiny_model, monkeypatch, "--postgres", server.url("meterid"))
        with server.connect("meterid_prefect") as prefect_db, prefect_db.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM flow_run WHERE state_type = 'COMPLETED'")
            assert cursor.fetchone()[0] >= 2
        with server.connect("meterid_mlflow") as mlflow_db, mlflow_db.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM model_versions")
            assert cursor.fetchone()[0] == 2
        with server.connect("meterid_review") as review_db, review_db.cursor() as cursor:
            cursor.execute("SELECT count(DISTINCT run_id) FROM review_queue")
            assert cursor.fetchone()[0] == 2  # each night's queue, filled by the worker
    assert not (project / ".serve" / "prefect.db").exists()
    assert not (project / "mlflow" / "mlflow.db").exists()
