"""Prefect tasks for the weekly clustering: thin wrappers adding logging and artifacts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from meterid.clustering import steps
from meterid.config import Params
from meterid.scoring.steps import load_predictor


@task(name="collect-unknown-photos", cache_policy=NO_CACHE)
def collect_photos(params: Params, since_days: int, images_dir: str | None) -> pd.DataFrame:
    photos = (steps.folder_photos(Path(images_dir)) if images_dir
              else steps.store_photos(params, since_days))
    get_run_logger().info("%d photos to cluster", len(photos))
    return photos


@task(name="embed-and-cluster", cache_policy=NO_CACHE)
def embed_and_cluster(params: Params, photos: pd.DataFrame, out_dir: Path) -> steps.ClusterOutcome:
    predictor = load_predictor(params, params.score.model, None)
    return steps.cluster_photos(params, predictor, photos, out_dir)


@task(name="publish-clusters", cache_policy=NO_CACHE)
def publish(outcome: steps.ClusterOutcome, experiment: str) -> str:
    run_id = steps.record_clustering(outcome, experiment)
    summary = outcome.summary
    create_table_artifact(key="unknown-clusters", table=summary.to_dict("records"),
                          description=f"clusters of {outcome.out_dir}")
    create_markdown_artifact(key="unknown-clusters-report",
                             markdown=steps.review_markdown(outcome))
    get_run_logger().info("clusters published (MLflow run %s)", run_id)
    return run_id
