"""What the production-mode tests share: a user's project folder, two registered models, and the
Prefect REST API as the UI uses it (deployments, flow runs, artifacts, logs), bounded waits."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
from PIL import Image
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from meterid.config import Params
from meterid.inference.bundle import ModelBundle
from tests.conftest import REPO_ROOT, write_params
from tests.postgres import free_port

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _prefect_session() -> requests.Session:
    """Requests that retry a 503 as Prefect's own client does: the server answers 503 for an
    error it calls retryable (a database briefly busy, such as SQLite locked while the worker
    writes), and its client retries those, POSTs included. Bounded: 5 retries over ~8 s. (CI
    once got one on create_flow_run, which the worker and the UI's user would have retried.)"""
    session = requests.Session()
    retry = Retry(total=5, status_forcelist=(503,), allowed_methods=None, backoff_factor=0.5,
                  raise_on_status=False)
    session.mount("http://", HTTPAdapter(max_retries=retry))
    return session


_PREFECT = _prefect_session()


def make_project(folder: Path, params: Params, **serve: object) -> Path:
    """A project as a user has it: params.yaml, prefect.yaml and a few photos to score."""
    settings = {"prefect_port": free_port(), "mlflow_port": free_port(),
                "startup_timeout_s": 240.0, **serve}
    write_params(folder, params.model_copy(
        update={"serve": params.serve.model_copy(update=settings)}))
    shutil.copy(REPO_ROOT / "prefect.yaml", folder / "prefect.yaml")
    photos = folder / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for index in range(3):  # textured, mid-grey: they pass the quality gate
        pixels = rng.integers(40, 215, size=(25, 20, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((160, 200), Image.Resampling.NEAREST).save(
            photos / f"meter-{index}.jpg", quality=90)
    return folder


def write_night_list(project: Path, base_url: str, name: str) -> Path:
    urls = [f"{base_url}/meter-{i}.jpg" for i in range(3)] + [f"{base_url}/missing.jpg"]
    path = project / "data" / "scoring" / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("url\n" + "\n".join(urls) + "\n")
    return path


def register_versions(tiny_model: ModelBundle, count: int = 2,
                      metrics: dict[str, float] | None = None) -> list[int]:
    """``count`` versions of meterid in the current MLFLOW_TRACKING_URI, the first champion;
    each registered with ``metrics`` (evaluate's figures; accuracy 0.5 unless given)."""
    import mlflow

    from meterid import registry
    from meterid.tracking import use_experiment

    use_experiment("tiny-models")  # artifacts under the store's root, not ./mlruns
    versions = []
    for _ in range(count):
        with mlflow.start_run() as run:
            info = registry.log_model(tiny_model)
        versions.append(registry.register(info.model_uri, run.info.run_id,
                                          metrics or {"accuracy": 0.5}))
    registry.promote(versions[0])
    return versions


@dataclass(frozen=True)
class PrefectApi:
    """The Prefect server's REST API (what the UI calls)."""

    url: str  # http://127.0.0.1:PORT/api

    def _post(self, path: str, body: dict) -> object:
        response = _PREFECT.post(f"{self.url}{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def deployments(self) -> dict[str, dict]:
        """By ``flow/deployment`` name, as the UI lists them."""
        flows = {f["id"]: f["name"] for f in self._post("/flows/filter", {})}
        return {f"{flows[d['flow_id']]}/{d['name']}": d
                for d in self._post("/deployments/filter", {})}

    def pause_pool(self, pool: str) -> None:
        """As the UI's pause toggle: the worker takes no new run from it."""
        _PREFECT.patch(f"{self.url}/work_pools/{pool}", json={"is_paused": True},
                       timeout=30).raise_for_status()

    def flow_runs(self, deployment: dict) -> list[dict]:
        return list(self._post("/flow_runs/filter", {  # type: ignore[arg-type]
            "deployments": {"id": {"any_": [deployment["id"]]}}}))

    def crons(self, deployment: dict) -> list[tuple[str, bool]]:
        return [(s["schedule"]["cron"], s["active"]) for s in deployment["schedules"]]

    def run(self, deployment: dict, parameters: dict) -> str:
        run = self._post(f"/deployments/{deployment['id']}/create_flow_run",
                         {"parameters": parameters})
        return run["id"]

    def wait(self, run_id: str, timeout_s: float = 300) -> dict:
        """The flow run once it is final; fails after ``timeout_s`` with its logs."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = _PREFECT.get(f"{self.url}/flow_runs/{run_id}", timeout=30).json()
            if run["state_type"] in TERMINAL:
                return run
            time.sleep(1.0)
        raise AssertionError(f"flow run {run_id} not final after {timeout_s} s "
                             f"(state {run['state_name']}):\n{self.logs(run_id)}")

    def artifacts(self, run_id: str) -> dict[str, dict]:
        found = self._post("/artifacts/filter",
                           {"artifacts": {"flow_run_id": {"any_": [run_id]}}})
        return {a["key"]: a for a in found if a.get("key")}

    def wait_for_log(self, run_id: str, text: str, timeout_s: float = 60) -> str:
        """The run's log once it holds ``text`` (a run's log lines reach the server in
        batches, after its final state); fails after ``timeout_s`` with the log."""
        deadline = time.monotonic() + timeout_s
        while text not in (logs := self.logs(run_id)) and time.monotonic() < deadline:
            time.sleep(1.0)
        assert text in logs, logs
        return logs

    def logs(self, run_id: str) -> str:
        logs = self._post("/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}},
                                           "limit": 200, "sort": "TIMESTAMP_ASC"})
        return "\n".join(entry["message"] for entry in logs)[-6000:]


def wait_healthy(url: str, timeout_s: float, process=None) -> None:  # noqa: ANN001 (a Popen)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{process.args} exited with {process.returncode}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout_s} s")
