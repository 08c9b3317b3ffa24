"""Weekly clustering steps, shared by ``meterid embed`` / ``meterid cluster`` and the
``unknown_clustering`` flow: collect photos -> embed (cached) -> cluster with stable ids ->
clusters.parquet, contact sheets, a map and a summary."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from meterid.clustering.cluster import (
    NOISE,
    assign_ids,
    centroids,
    class_cohesion_floor,
    cluster_embeddings,
    stable_ids,
)
from meterid.clustering.embeddings import embed_photos, model_key
from meterid.clustering.report import cluster_map
from meterid.clustering.state import ClusterState
from meterid.config import ClusterConfig, Params
from meterid.core import UNKNOWN
from meterid.data.manifest import list_files
from meterid.inference.predictor import Predictor
from meterid.photos.images import file_sha256
from meterid.photos.sheets import contact_sheet
from meterid.scoring.store import TOP_COLUMNS, UnknownStore

log = logging.getLogger(__name__)

PHOTO_COLUMNS = ("sha256", "path", "url", *TOP_COLUMNS)


@dataclass(frozen=True)
class ClusterOutcome:
    out_dir: Path
    clusters: pd.DataFrame   # one row per photo
    summary: pd.DataFrame    # one row per cluster (noise included, id -1)
    model_key: str


# --- which photos ----------------------------------------------------------------------------

def store_photos(params: Params, since_days: int | None) -> pd.DataFrame:
    """The UNKNOWN store's photos last seen in the last ``since_days`` days (all when None)."""
    since = datetime.now(UTC) - timedelta(days=since_days) if since_days else None
    records = UnknownStore(params.paths.unknown_store).records(since)
    return records[list(PHOTO_COLUMNS)]


def folder_photos(folder: Path) -> pd.DataFrame:
    """Every image file under ``folder`` (for a person with a pile of unlabelled photos)."""
    paths = [Path(folder) / rel for rel in list_files(Path(folder))]
    frame = pd.DataFrame({"sha256": [file_sha256(p) for p in paths],
                          "path": [str(p) for p in paths], "url": [str(p) for p in paths]})
    for column in TOP_COLUMNS:
        frame[column] = None
    return frame.drop_duplicates("sha256").reset_index(drop=True)


def scored_photos(params: Params, scoring_parquet: Path) -> pd.DataFrame:
    """The UNKNOWN rows of a scoring output, found in the store by their sha256."""
    scored = pd.read_parquet(scoring_parquet)
    unknown = scored[scored["label"] == UNKNOWN].drop_duplicates("sha256")
    stored = UnknownStore(params.paths.unknown_store).records()
    missing = set(unknown["sha256"]) - set(stored["sha256"])
    if missing:
        log.warning("%d UNKNOWN photos of %s are not in the store (scored with "
                    "store_unknown off?)", len(missing), scoring_parquet)
    return stored[stored["sha256"].isin(set(unknown["sha256"]))][list(PHOTO_COLUMNS)]


# --- clustering ----------------------------------------------------------------------------

def _close_to(members: pd.DataFrame) -> str:
    """The known classes a cluster's photos were nearest to (their top-1 labels), by count."""
    counts = members["top1_label"].dropna().value_counts()
    return ", ".join(f"{label} ({count})" for label, count in counts.head(3).items())


def _sheets(clusters: pd.DataFrame, out_dir: Path, params: Params) -> dict[int, Path]:
    sheets = {}
    cfg = params.cluster
    for cluster_id, members in clusters.groupby("cluster_id"):
        members = members.sort_values("probability", ascending=False)
        name = "noise" if cluster_id == NOISE else f"cluster_{cluster_id:03d}"
        title = (f"noise: {len(members)} photos" if cluster_id == NOISE else
                 f"cluster {cluster_id}: {len(members)} photos; close to {_close_to(members)}")
        captions = [f"{sha[:8]} {label or ''}" for sha, label in
                    zip(members["sha256"], members["top1_label"], strict=True)]
        sheets[int(cluster_id)] = contact_sheet(
            [Path(p) for p in members["path"]], captions, title, out_dir / "sheets" / f"{name}.png",
            cfg.sheet_images, cfg.thumb_px)
    return sheets


def _summary(clusters: pd.DataFrame, sheets: dict[int, Path], state: ClusterState) -> pd.DataFrame:
    rows = []
    for cluster_id, members in clusters.groupby("cluster_id"):
        known = state.clusters.get(int(cluster_id))
        if cluster_id == NOISE:
            status = "noise"
        elif known is None:
            raise KeyError(f"cluster {cluster_id} was assigned but is not in the cluster state")
        else:
            status = known.status
        rows.append({"cluster_id": int(cluster_id), "size": len(members), "status": status,
                     "first_seen": known.first_seen if known else None,
                     "mean_probability": float(members["probability"].mean()),
                     "close_to": _close_to(members), "sheet": str(sheets[int(cluster_id)])})
    return pd.DataFrame(rows).sort_values(["cluster_id"]).reset_index(drop=True)


def _single_group_cohesion(predictor: Predictor, cfg: ClusterConfig) -> float | None:
    model = predictor.bundle.model
    if not cfg.single_group or len(model.reference_embeddings) == 0:
        return None
    return class_cohesion_floor(model.reference_embeddings.numpy(),
                                model.reference_labels.numpy())


def cluster_photos(params: Params, predictor: Predictor, photos: pd.DataFrame,
                   out_dir: Path) -> ClusterOutcome:
    """Embed, cluster with stable ids, and write the run's reports under ``out_dir``."""
    cfg = params.cluster
    key = model_key(predictor)
    embeddings = embed_photos(photos, predictor, params.paths.embeddings, cfg.batch_size,
                              params.validate_.max_pixels)
    readable = ~np.isnan(embeddings).any(axis=1)
    photos, embeddings = photos[readable].reset_index(drop=True), embeddings[readable]
    result = cluster_embeddings(embeddings, cfg, _single_group_cohesion(predictor, cfg))
    state = ClusterState.load(params.paths.cluster_state)
    found = centroids(embeddings, result.labels)
    mapping = stable_ids(found, state.centroids_for(key), cfg.match_min_similarity,
                         state.next_id)
    ids = assign_ids(result.labels, mapping)
    today = datetime.now(UTC).date().isoformat()
    for label, cluster_id in mapping.items():
        state.record(cluster_id, key, found[label], int((result.labels == label).sum()), today)
    clusters = photos.assign(cluster_id=ids, probability=result.probabilities,
                             outlier_score=result.outlier_scores, model_key=key)
    clusters["rejected"] = [state.clusters[i].status == "rejected" if i != NOISE else False
                            for i in ids]
    out_dir.mkdir(parents=True, exist_ok=True)
    clusters.to_parquet(out_dir / "clusters.parquet", index=False)
    summary = _summary(clusters, _sheets(clusters, out_dir, params), state)
    summary.to_csv(out_dir / "summary.csv", index=False)
    cluster_map(result.reduced, ids, out_dir / "clusters.png")
    (out_dir / "run.json").write_text(json.dumps(
        {"model_key": key, "model_source": predictor.bundle.source, "photos": len(clusters),
         "clusters": int((summary["cluster_id"] != NOISE).sum()),
         "noise_share": float((ids == NOISE).mean()) if len(ids) else 0.0}, indent=2))
    state.save(params.paths.cluster_state)
    log.info("%d photos: %d clusters, %d noise; reports in %s", len(clusters),
             len(found), int((ids == NOISE).sum()), out_dir)
    return ClusterOutcome(out_dir, clusters, summary, key)


def record_clustering(outcome: ClusterOutcome, experiment: str) -> str:
    """Log the run's figures and pictures to MLflow; returns the MLflow run id."""
    import mlflow

    from meterid.tracking import use_experiment

    run = json.loads((outcome.out_dir / "run.json").read_text())
    use_experiment(experiment)
    with mlflow.start_run(run_name=f"clusters-{outcome.out_dir.name}") as active:
        mlflow.log_params({"model_key": outcome.model_key, "out_dir": str(outcome.out_dir)})
        mlflow.log_metrics({"photos": run["photos"], "clusters": run["clusters"],
                            "noise_share": run["noise_share"]})
        for name in ("summary.csv", "clusters.png", "run.json"):
            mlflow.log_artifact(str(outcome.out_dir / name))
        mlflow.log_artifacts(str(outcome.out_dir / "sheets"), artifact_path="sheets")
        return active.info.run_id


def review_markdown(outcome: ClusterOutcome) -> str:
    """The reviewer's page: a row per proposed cluster with its sheet; rejected ones summed up."""
    summary = outcome.summary
    lines = [f"# UNKNOWN clusters, {outcome.out_dir.name}", "",
             f"Map: [clusters.png]({(outcome.out_dir / 'clusters.png').resolve().as_uri()})",
             "", "| cluster | size | status | close to | sheet |", "|---|---|---|---|---|"]
    rejected = summary[summary["status"] == "rejected"]
    for row in summary[summary["status"] != "rejected"].itertuples():
        sheet = Path(row.sheet).resolve()
        lines.append(f"| {row.cluster_id} | {row.size} | {row.status} | {row.close_to} | "
                     f"[{sheet.name}]({sheet.as_uri()}) |")
    if len(rejected):
        lines += ["", f"{int(rejected['size'].sum())} photos matched clusters rejected earlier "
                  f"(ids {', '.join(map(str, rejected['cluster_id']))}): not proposed again."]
    lines += ["", "Review a cluster: `meterid candidates export ID`, then "
              "`meterid candidates add DIR --label NAME` or `meterid candidates reject ID`."]
    return "\n".join(lines)


def default_out_dir(params: Params) -> Path:
    return params.paths.cluster_reports / datetime.now(UTC).date().isoformat()


def latest_run(params: Params) -> Path:
    runs = sorted(p.parent for p in params.paths.cluster_reports.glob("*/clusters.parquet"))
    if not runs:
        raise FileNotFoundError(f"no clustering run under {params.paths.cluster_reports}: run "
                                "`meterid cluster` first")
    return runs[-1]
