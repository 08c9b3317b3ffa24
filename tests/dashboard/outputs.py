"""Project outputs the dashboard tests show: a night's scoring output and a weekly clustering
run, written as the pipeline writes them (ScoredRow rows, the clusters' files and state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from meterid.clustering.state import ClusterState
from meterid.config import Params
from meterid.core import ERROR, OK, UNKNOWN, ScoredRow


def photo(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(40, 220, (60, 40, 3), dtype=np.uint8)).save(path)
    return path


def night(project: Params, folder: Path) -> pd.DataFrame:
    """A scoring output: an auto-accepted photo, one to review, a new type, an error."""
    photos = [photo(folder / f"field-{i}.png", i) for i in range(3)]
    rows = [ScoredRow(0, str(photos[0]), OK, label="alpha", top1_label="alpha", top1_conf=0.97,
                      auto_accepted=True, prediction_set=["alpha"], sha256="a" * 64,
                      model_version=1),
            ScoredRow(1, str(photos[1]), OK, label="beta", top1_label="beta", top1_conf=0.55,
                      auto_accepted=False, prediction_set=["beta", "alpha"], sha256="b" * 64,
                      model_version=1),
            ScoredRow(2, str(photos[2]), OK, label=UNKNOWN, top1_label="alpha", top1_conf=0.31,
                      auto_accepted=False, prediction_set=["alpha", "beta"], sha256="c" * 64,
                      model_version=1),
            ScoredRow(3, "http://127.0.0.1:9/gone.jpg", ERROR, error="HTTP 404 Not Found")]
    table = pd.DataFrame([row.to_dict() for row in rows])
    project.paths.scoring_reports.mkdir(parents=True, exist_ok=True)
    table.to_parquet(project.paths.scoring_reports / "night-1.parquet")
    return table


def clustering_run(project: Params, small_demo: Path) -> Path:
    """A weekly run's outputs: two clusters of held-out brands' photos, both candidates."""
    unknown = sorted(small_demo.joinpath("unknown").rglob("*.jpg"))
    brands = sorted({p.parent.name for p in unknown})[:2]
    run = project.paths.cluster_reports / "2026-11-30"
    (run / "sheets").mkdir(parents=True)
    members = [(cluster, path) for cluster, brand in enumerate(brands)
               for path in unknown if path.parent.name == brand]
    pd.DataFrame({"cluster_id": [c for c, _ in members], "path": [str(p) for _, p in members],
                  "probability": 1.0, "top1_label": "x"}).to_parquet(run / "clusters.parquet")
    state = ClusterState()
    rows = []
    for cluster in range(2):
        state.record(cluster, "test-model", np.zeros(4), 4, "2026-11-30")
        sheet = run / "sheets" / f"cluster_{cluster:03d}.png"
        Image.new("RGB", (64, 32), "white").save(sheet)
        rows.append({"cluster_id": cluster, "size": 4, "status": "candidate",
                     "close_to": "x (4)", "sheet": str(sheet)})
    state.save(project.paths.cluster_state)
    pd.DataFrame(rows).to_csv(run / "summary.csv", index=False)
    return run
