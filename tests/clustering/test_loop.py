"""The whole loop with the real Prefect, MLflow, DVC and Great Expectations on generated data:
train -> score held-out brands (UNKNOWN kept) -> weekly clustering flow -> export a cluster ->
add it as a new class (validated, dvc add) -> the next training run learns it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from meterid.config import DemoConfig, Params, load_params
from tests.conftest import tiny_training, write_params

pytestmark = pytest.mark.slow


@pytest.fixture
def project(project_dir: Path, params: Params, small_demo_cfg: DemoConfig) -> Path:
    from meterid.data.demo.generate import generate_demo

    cluster = params.cluster.model_copy(update=dict(min_cluster_size=3, min_samples=2,
                                                    pca_components=8))
    # The tiny 160x200 test photos are soft: no quality gate here (it has its own tests).
    quality = params.score.quality.model_copy(update=dict(min_sharpness=0.0, min_contrast=0.0))
    score = params.score.model_copy(update={"quality": quality})
    write_params(project_dir, tiny_training(params).model_copy(
        update={"cluster": cluster, "score": score}), small_demo_cfg)
    demo = small_demo_cfg.model_copy(update=dict(unknown_images_per_brand=12))
    generate_demo(demo, project_dir / "data" / "raw", project_dir / "data" / "unknown")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "--quiet"], check=True,
                   env=env)
    return project_dir


def test_unknown_photos_become_a_class_the_next_model_learns(project: Path, prefect_harness):
    from meterid.clustering.candidates import add_candidates, export_cluster
    from meterid.flows.training import training
    from meterid.flows.unknown_clustering import unknown_clustering
    from meterid.scoring.steps import load_predictor, score_list

    training(params_file="params.yaml")
    params = load_params("params.yaml")
    photos = sorted((project / "data" / "unknown").rglob("*.jpg"))
    (project / "field.txt").write_text("\n".join(map(str, photos)))
    # Above 1 every photo is UNKNOWN, even where the tiny model's softmax saturates at 1.0.
    predictor = load_predictor(params, str(project / "models" / "champion"), threshold=1.01)
    scored = score_list(params, params.score, predictor, project / "field.txt")
    assert scored.summary["unknown"] == len(photos), scored.summary["label_counts"]

    result = unknown_clustering(since_days=7)

    run_dir = Path(result["out_dir"])
    clusters = pd.read_parquet(run_dir / "clusters.parquet")
    assert len(clusters) == len(photos) and result["clusters"] >= 1
    assert {"sha256", "url", "cluster_id", "probability", "outlier_score", "top1_label"} <= set(
        clusters.columns)
    summary = pd.read_csv(run_dir / "summary.csv")
    assert all(Path(sheet).is_file() for sheet in summary["sheet"])
    assert (run_dir / "clusters.png").stat().st_size > 0
    assert result["mlflow_run_id"]

    largest = int(clusters.loc[clusters["cluster_id"] >= 0, "cluster_id"].value_counts().idxmax())
    review = project / "data" / "candidates" / f"cluster_{largest}"
    exported = export_cluster(params, run_dir, largest, review)
    added, report = add_candidates(params, review, "newbrand-x1", cluster_id=largest)

    assert added == len(exported) >= 3 and report.success
    assert len(list((project / "data/raw/newbrand-x1").glob("*.jpg"))) == added
    assert (project / "data" / "raw.dvc").is_file()  # the new data version, dvc-added
    again = unknown_clustering(since_days=7)  # next week: the cluster keeps its id and status
    state = pd.read_csv(Path(again["out_dir"]) / "summary.csv").set_index("cluster_id")
    assert state.loc[largest, "status"] == "added"

    retrained = training(params_file="params.yaml")
    assert "newbrand-x1" in retrained["training"]["classes"]


def test_adding_photos_that_break_validation_adds_nothing(project: Path):
    from meterid.clustering.candidates import CandidateError, add_candidates

    params = load_params("params.yaml")
    review = project / "review"
    review.mkdir()
    # photos already in another class: the same image under two labels is an error
    known = sorted((project / "data" / "raw").rglob("*.jpg"))[:3]
    for i, photo in enumerate(known):
        shutil.copy(photo, review / f"again{i}.jpg")
    before = sorted(p.name for p in (project / "data" / "raw").iterdir())
    with pytest.raises(CandidateError, match=r"broke validation rules \(same_image_two_labels"):
        add_candidates(params, review, "tiny-meter")
    assert sorted(p.name for p in (project / "data" / "raw").iterdir()) == before
    with pytest.raises(CandidateError, match="label 'bad label!'"):
        add_candidates(params, review, "bad label!")
