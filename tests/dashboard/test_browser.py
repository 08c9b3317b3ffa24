"""`meterid dashboard` in Debian's headless Chromium, as reviewers use it: every page opens, three
photos of the queue are labelled, a photo uploaded on Identify gets a label, a version is
promoted and the registry's champion moves; a screenshot of each page."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from meterid.config import Params, load_params
from meterid.review.queue import review_queue
from meterid.review.store import open_store
from tests.conftest import REPO_ROOT
from tests.dashboard.outputs import clustering_run, night, photo
from tests.integration.production import register_versions

pytestmark = pytest.mark.slow


@pytest.fixture
def project(project_dir: Path) -> Params:
    shutil.copy(REPO_ROOT / "params.yaml", project_dir / "params.yaml")
    return load_params(project_dir / "params.yaml")


@pytest.fixture
def dashboard(project: Params, project_dir: Path) -> Iterator[str]:
    """`meterid dashboard` on a free port of 127.0.0.1, the project's folder as its own."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (project_dir / "dashboard.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "meterid.cli", "dashboard", "--port",
                               str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):  # at most ~60 s, one request each half second
            try:
                requests.get(f"{url}/_stcore/health", timeout=2).raise_for_status()
                break
            except requests.RequestException:
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_a_reviewer_works_through_every_page_in_chromium(
        project: Params, project_dir: Path, tiny_model, small_demo: Path, dashboard: str):

    from meterid import registry
    from meterid.serve.screenshots import ensure_chromium, tour_dashboard

    versions = register_versions(tiny_model, 2)
    for name in ("alpha", "beta"):
        (project.paths.raw_dir / name).mkdir(parents=True)
    table = night(project, project_dir).assign(model_version=versions[0])
    store = open_store(project)
    store.enqueue("night-1", review_queue(table, "night-1", 1.0, 0))  # the three scored
    clustering_run(project, small_demo)

    ensure_chromium()
    shots = project_dir / "shots"
    tour = tour_dashboard(dashboard, photo(project_dir / "upload.png", 7), shots,
                          reviewer="ana", labels=3, promote=True)

    assert tour.labelled == 3
    said = {sha: store.verdicts(sha).get("ana") for sha in table["sha256"].dropna()}
    assert all(verdict in {"alpha", "beta"} for verdict in said.values()), said
    assert tour.identified in {"alpha", "beta", "gamma", "UNKNOWN"}
    assert tour.promoted == versions[1]
    champion = {row["version"]: row for row in registry.list_versions()}[versions[1]]
    assert "champion" in champion["aliases"] and champion["promoted_by"] == "ana"
    assert sorted(p.name for p in tour.shots) == sorted(
        f"dashboard-{page}.png" for page in ("review", "results", "identify", "clusters",
                                             "data", "retrain", "model"))
    assert all(p.stat().st_size > 10_000 for p in tour.shots)  # not a blank page
