"""The Prefect data flow end to end on a small generated dataset, with the real Prefect and GX."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from meterid.config import DemoConfig, Params
from tests.conftest import write_params

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, params: Params,
            small_demo_cfg: DemoConfig) -> Path:
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, params, small_demo_cfg)
    return tmp_path


def _artifact_keys() -> set[str]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {artifact.key for artifact in client.read_artifacts()}


def test_flow_generates_validates_and_splits(project: Path, prefect_harness, small_demo_cfg):
    from meterid.flows.data_preparation import data_preparation

    summary = data_preparation(params_file="params.yaml", demo_if_missing=True)

    assert summary["images"] == small_demo_cfg.total_images
    assert summary["classes"] == small_demo_cfg.n_classes
    splits = pd.read_csv(project / "data" / "splits.csv")
    assert len(splits) == small_demo_cfg.total_images
    assert set(splits["split"]) == {"train", "val", "test"}
    assert sum(summary["splits"].values()) == small_demo_cfg.total_images
    assert (project / "reports" / "validation" / "data_docs" / "index.html").is_file()
    assert (project / "reports" / "split" / "class_balance.png").stat().st_size > 0
    assert {"data-validation", "dataset-split"} <= _artifact_keys()


def test_flow_fails_and_names_the_planted_files(
    project: Path, prefect_harness, small_demo: Path
):
    from meterid.flows.data_preparation import data_preparation

    shutil.copytree(small_demo / "raw", project / "data" / "raw")
    first_class = sorted((project / "data" / "raw").iterdir())[0]
    (first_class / "broken.jpg").write_bytes(b"<html>not a photo</html>")
    victim = sorted(sorted((project / "data" / "raw").iterdir())[1].glob("*.jpg"))[0]
    shutil.copy(victim, first_class / "copied.jpg")  # a mislabelled exact duplicate

    state = data_preparation(params_file="params.yaml", return_state=True)

    assert state.is_failed()
    summary = (project / "reports" / "validation" / "summary.json").read_text()
    assert "broken.jpg" in summary and "copied.jpg" in summary
    assert not (project / "data" / "splits.csv").exists()
