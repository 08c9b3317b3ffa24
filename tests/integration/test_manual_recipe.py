"""docs/operations.md's manual recipe, run as written: a Prefect server, a work pool,
`prefect deploy --all` and a worker, with no MLflow server and no MLFLOW_TRACKING_URI. The
nightly run on the worker must find the project's own store (params.yaml), not open an empty
./mlflow.db."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from meterid.config import Params
from meterid.scoring.demo import serve_folder
from tests.conftest import REPO_ROOT
from tests.integration.production import (
    PrefectApi,
    make_project,
    register_versions,
    wait_healthy,
    write_night_list,
)
from tests.postgres import free_port

pytestmark = pytest.mark.slow


def readme_recipe() -> list[str]:
    """The shell lines of docs/operations.md's "By hand" block."""
    text = (REPO_ROOT / "docs" / "operations.md").read_text()
    block = re.search(r"### By hand\n.*?```bash\n(.*?)```", text, re.DOTALL)
    assert block, "docs/operations.md has no 'By hand' recipe"
    return [line.strip() for line in block[1].splitlines() if line.strip()]


def test_readme_recipe_has_the_five_steps():
    steps = readme_recipe()
    assert [s.split()[1] if s.startswith(".venv") else s.split()[0] for s in steps] == [
        "server", "export", "work-pool", "--no-prompt", "worker"]


def test_the_readme_recipe_runs_the_nightly_deployment_on_its_worker(
        tmp_path: Path, params: Params, tiny_model, monkeypatch: pytest.MonkeyPatch):
    project = make_project(tmp_path, params)
    store = f"sqlite:///{project}/mlflow/mlflow.db"  # what params.yaml's relative URI means
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    register_versions(tiny_model)  # as `make demo` leaves the project: a champion

    port, bin_dir = free_port(), Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI",
                                                            "PREFECT_API_URL")}
    # A free port instead of the recipe's 4200 (the server reads it from its setting), a home of
    # its own, and $PWD as a shell in the project folder has it (prefect.yaml's pull step).
    env.update(PREFECT_SERVER_API_PORT=str(port), PREFECT_HOME=str(tmp_path / "prefect-home"),
               PWD=str(project), PREFECT_WORKER_QUERY_SECONDS="2")
    background: list[subprocess.Popen] = []
    try:
        for line in readme_recipe():
            line = line.replace("4200", str(port)).replace(".venv/bin/", f"{bin_dir}/")
            if line.startswith("export "):
                key, value = line.removeprefix("export ").split("=", 1)
                env[key] = value
                continue
            command = shlex.split(line.removesuffix("&"))
            if line.endswith("&") or " worker start " in line:  # the long-running ones
                background.append(subprocess.Popen(
                    command, cwd=project, env=env, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, start_new_session=True))
                wait_healthy(f"http://127.0.0.1:{port}/api/health", 240, background[-1])
            else:
                done = subprocess.run(command, cwd=project, env=env, capture_output=True,
                                      text=True, timeout=300)
                assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

        api = PrefectApi(f"http://127.0.0.1:{port}/api")
        with serve_folder(project / "photos") as base:
            night = write_night_list(project, base, "night")
            run_id = api.run(api.deployments()["batch_scoring/nightly"], {"input": str(night)})
            run = api.wait(run_id)
        assert run["state_type"] == "COMPLETED", api.logs(run_id)
    finally:  # the worker first: without its server it would retry the API while stopping
        for process in reversed(background):
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(60)

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name(params.score.monitor.experiment)
    assert experiment.artifact_location == (project / "mlflow" / "artifacts").resolve().as_uri()
    assert len(client.search_runs([experiment.experiment_id])) == 1
    assert not (project / "mlflow.db").exists() and not (project / "mlruns").exists()
