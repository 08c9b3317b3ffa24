"""The whole training flow on a tiny generated dataset with the real Prefect and MLflow:
data preparation -> train -> evaluate -> register -> champion exported."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from meterid.config import DemoConfig, Params
from meterid.evaluation.metrics import HEADLINE_METRICS
from meterid.inference.predictor import Predictor
from tests.conftest import tiny_training, write_params

pytestmark = pytest.mark.slow


@pytest.fixture
def project(project_dir: Path, params: Params,
            small_demo_cfg: DemoConfig) -> Path:
    """A project folder with tiny training settings and its own MLflow store."""
    write_params(project_dir, tiny_training(params), small_demo_cfg)
    return project_dir


def params_share(project: Path) -> float:
    from meterid.config import load_params

    return load_params(project / "params.yaml").evaluate.known_accept_share


def test_training_flow_registers_an_evaluated_champion(project: Path, prefect_harness):
    from meterid.flows.training import training
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
    # the decision policy: chosen on one half of the held-out brands, reported on the other
    decision = json.loads((project / "reports/evaluation/decision.json").read_text())
    assert decision["selection_brands"] and decision["report_brands"]
    assert not set(decision["selection_brands"]) & set(decision["report_brands"])
    candidates = pd.read_csv(project / "reports/evaluation/open_set.csv")
    assert {"msp", "energy", "knn(k=5)", "mahalanobis", "msp_fixed"} <= set(candidates["candidate"])
    assert candidates["chosen"].sum() == 1
    assert metrics["known_flagged_share_val"] <= 1 - params_share(project) + 1e-9
    assert metrics["non_meter_flagged_share"] is not None and metrics["brand_sets_disjoint"] == 1
    assert (project / "reports/evaluation/open_set.png").stat().st_size > 0
    suspects = pd.read_csv(project / "reports/evaluation/suspect_labels.csv")
    assert {"path", "given_label", "suggested_label"} <= set(suspects.columns)
    assert set(suspects["path"]) <= set(splits["path"])  # photos of the split, by their paths
    assert metrics["suspect_labels"] == len(suspects)
    calibration = json.loads((project / "reports/evaluation/calibration.json").read_text())
    assert calibration["method"] and "ece_before" in calibration
    assert 0 <= calibration["ece_if_calibrated"] <= calibration["ece_if_calibrated_p95"]

    versions = list_versions()
    assert versions[0]["version"] == 1 and "champion" in versions[0]["aliases"]
    exported = load_classifier(str(project / "models/champion"))
    assert exported.policy.open_set.operating_point.startswith("accepts 97% of")
    assert exported.classes == sorted(splits["label"].unique())
    assert exported.version == 1
    int8 = json.loads((project / "reports/evaluation/int8.json").read_text())
    assert exported.int8 is not None and exported.int8.check.to_dict() == int8
    assert metrics["int8_top1_agreement"] == int8["top1_agreement"]  # in dvc's metrics too
    assert int8["calibration_photos"] > 0
    assert int8["check_photos"] == (splits["split"] == "test").sum()
    engine = Predictor(exported, engine="onnxruntime-int8", onnx_cache=project / "onnx").engine
    assert engine.name == ("onnxruntime-int8" if int8["passed"] else "onnxruntime")

    _review_two_field_photos(project)
    second = training(params_file="params.yaml")  # no auto-promotion: stays challenger
    assert second["version"] == 2 and second["aliases"] == ["challenger"]
    # the reviewed field photos, measured on both: the new version and the champion
    assert second["metrics"]["field_photos"] == 2
    assert 0 <= second["metrics"]["champion_field_accuracy"] <= 1
    assert (project / "reports/evaluation/field_per_class.csv").is_file()


def _review_two_field_photos(project: Path) -> None:
    """Two field photos of a known class (new crops of a training photo: bytes training
    never saw) scored, queued and labelled by a reviewer."""
    from PIL import Image

    from meterid.config import load_params
    from meterid.core import OK, ScoredRow
    from meterid.photos.images import file_sha256
    from meterid.review.queue import review_queue
    from meterid.review.store import known_classes, open_store

    params = load_params(project / "params.yaml")
    label = known_classes(params)[0]
    source = sorted((params.paths.raw_dir / label).glob("*.jpg"))[0]
    rows = []
    for i in range(2):
        field = project / f"field-{i}.jpg"
        with Image.open(source) as image:
            image.crop((i + 2, 2, image.width - 2, image.height - 2)).save(field)
        rows.append(ScoredRow(i, str(field), OK, label=label, auto_accepted=False,
                              sha256=file_sha256(field), model_version=1))
    store = open_store(params)
    store.enqueue("night", review_queue(pd.DataFrame([r.to_dict() for r in rows]), "night",
                                        0.0, 0))
    for row in rows:
        store.label(row.sha256, "ana", label, known_classes(params))
