"""Weekly clustering of UNKNOWN photos: collect -> embed (cached) + cluster -> publish."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import flow

from meterid.clustering.steps import default_out_dir
from meterid.flows.run_logs import show_meterid_logs_in_runs
from meterid.stores import open_project
from meterid.tasks.clustering import collect_photos, embed_and_cluster, publish


@flow(name="unknown_clustering")
def unknown_clustering(
    since_days: int | None = None,
    images_dir: str | None = None,
    out_dir: str | None = None,
    params_file: str = "params.yaml",
) -> dict:
    """Cluster the UNKNOWN photos of the last ``since_days`` days (params' cluster.since_days
    when None; or every image under ``images_dir``) into candidate new meter types, with
    contact sheets for review."""
    show_meterid_logs_in_runs()
    params = open_project(params_file)
    days = params.cluster.since_days if since_days is None else since_days
    # Typed: without it Prefect's overloads read a task returning a DataFrame as async.
    photos: pd.DataFrame = collect_photos(params, days, images_dir)
    if photos.empty:
        return {"photos": 0, "clusters": 0, "out_dir": None}
    outcome = embed_and_cluster(params, photos, Path(out_dir) if out_dir
                                else default_out_dir(params))
    run_id = publish(outcome, params.cluster.experiment)
    clustered = outcome.clusters["cluster_id"] >= 0
    return {"photos": len(outcome.clusters), "clusters": int(outcome.clusters.loc[
        clustered, "cluster_id"].nunique()), "noise_share": float((~clustered).mean()),
        "out_dir": str(outcome.out_dir), "mlflow_run_id": run_id}
