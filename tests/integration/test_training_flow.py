"""The whole training flow on a tiny generated dataset with the real Prefect and MLflow:
data preparation -> train -> evaluate -> register -> champion exported."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from meterid.config import DemoConfig, Params
from meterid.evaluation.metrics import HEADLINE_METRICS
from tests.conftest import tiny_training, write_params

pytestmark = pytest.mark.slow


@pytest.fixture
def project(project_dir: Path, params: Params,
            small_demo_cfg: DemoConfig) -> Path:
    """A project folder with tiny training settings and its own MLflow store."""
    write_params(project_dir, tiny_training(params), small_demo_cfg)
    return project_dir


def test_training_flow_registers_an_evaluated_champion(project: Path, prefect_harness):
    from flows.training import training
    from meterid.registry import list_versions, load_classifier

    outcome = training(params_file="params.yaml")

    assert outcome["version"] == 1 and set(outcome["aliases"]) == {"champion", "challenger"}
    metrics = json.loads((project / "reports/evaluation/metrics.json").read_text())
    assert set(HEADLINE_METRICS) <= set(metrics)
    splits = pd.read_csv(project / "data/splits.csv")
    audit = pd.read_csv(project / "reports/evaluation/audit.csv")
    assert sorted(audit["path"]) == sorted(splits.loc[splits["split"] == "test", "path"])
    assert {"true_label", "label", "top3_label", "top3_conf", "is_unknown", "correct"} <= set(
        audit.columns)
    per_class = pd.read_csv(project / "reports/evaluation/per_class.csv")
    assert len(per_class) == splits["label"].nunique()  # every class measured, test or CV
    assert per_class["cv_recall"].notna().all()
    assert (project / "reports/evaluation/confusion_matrix.png").stat().st_size > 0

    versions = list_versions()
    assert versions[0]["version"] == 1 and "champion" in versions[0]["aliases"]
    exported = load_classifier(str(project / "models/champion"))
    assert exported.classes == sorted(splits["label"].unique())
    assert exported.version == 1

    second = training(params_file="params.yaml")  # no auto-promotion: stays challenger
    assert second["version"] == 2 and second["aliases"] == ["challenger"]
