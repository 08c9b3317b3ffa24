"""The whole training flow on a tiny generated dataset with the real Prefect and MLflow:
data preparation -> train -> evaluate -> register -> champion exported."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from meterid.config import DemoConfig, Params
from meterid.evaluation.metrics import HEADLINE_METRICS
from tests.conftest import write_params

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, params: Params,
            small_demo_cfg: DemoConfig) -> Path:
    """A project folder with tiny training settings and its own MLflow store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow/mlflow.db")
    (tmp_path / "mlflow").mkdir()
    train = params.train.model_copy(update=dict(
        image_size=64, batch_size=16, workers=0, feature_views=1, channels_last=False,
        phase1=params.train.phase1.model_copy(update=dict(epochs=3)),
        phase2=params.train.phase2.model_copy(update=dict(epochs=1))))
    write_params(tmp_path, params.model_copy(update={"train": train}), small_demo_cfg)
    return tmp_path


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
