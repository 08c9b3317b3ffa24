"""What the dashboard shows, read from the project's own outputs; no Streamlit here, so each
view's data is testable on its own. Every reader returns None/empty when its step has not run
yet, and the page says which command produces it."""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from meterid.catalog import EvaluationReports
from meterid.clustering.steps import latest_run
from meterid.config import Params
from meterid.core import OK, TOP_K, ScoredRow
from meterid.scoring.monitoring import summarize
from meterid.scoring.pipeline import BatchScorer


def identify_upload(scorer: BatchScorer, name: str, data: bytes) -> ScoredRow:
    """An uploaded photo, scored like a listed one (written to a temporary file first, so it
    takes the scorer's own path: fetch checks, decode, quality gate, UNKNOWN rule)."""
    with tempfile.TemporaryDirectory(prefix="meterid-upload-") as folder:
        path = Path(folder) / Path(name).name
        path.write_bytes(data)
        row = scorer.score_in_order([str(path)])[0]
    return replace(row, url=name)


def top3(row: ScoredRow) -> pd.DataFrame:
    """The top-3 labels and calibrated confidences of one scored row (empty on an error)."""
    labels = [(getattr(row, f"top{k}_label"), getattr(row, f"top{k}_conf"))
              for k in range(1, TOP_K + 1)]
    return pd.DataFrame([(label, float(conf)) for label, conf in labels
                         if label is not None and conf is not None],
                        columns=["label", "confidence"])


@dataclass
class EvaluationView:
    metrics: dict | None = None
    per_class: pd.DataFrame | None = None
    confusion_matrix: Path | None = None
    class_balance: Path | None = None
    open_set: Path | None = None


def evaluation(params: Params) -> EvaluationView:
    """The latest `meterid evaluate` report and the split's class balance picture."""
    files = EvaluationReports(params.paths.evaluation_reports)
    balance = params.paths.split_reports / "class_balance.png"
    return EvaluationView(
        json.loads(files.metrics.read_text()) if files.metrics.is_file() else None,
        pd.read_csv(files.per_class) if files.per_class.is_file() else None,
        _existing(files.confusion_matrix), _existing(balance), _existing(files.open_set_plot))


SCORING_COLUMNS = ["status", "error", "label", "top1_conf"]  # what summarize needs


def scoring_history(params: Params, limit: int = 30) -> pd.DataFrame:
    """One row per scoring output (newest first): rows, errors, UNKNOWN and POOR_QUALITY
    shares, mean top-1 confidence, as the scoring run summarised them (``monitoring.summarize``).
    Only four columns are read from each Parquet."""
    files = sorted(params.paths.scoring_reports.glob("*.parquet"),
                   key=lambda path: path.stat().st_mtime, reverse=True)[:limit]
    rows = [_scoring_summary(path) for path in files]
    return pd.DataFrame(rows, columns=["output", "scored", "rows", "errors", "unknown_share",
                                       "poor_quality_share", "mean_confidence"])


def _scoring_summary(path: Path) -> dict:
    summary = summarize(pd.read_parquet(path, columns=SCORING_COLUMNS))

    def shown(value: object) -> object:  # NaN (nothing scored) as an empty cell
        return None if isinstance(value, float) and math.isnan(value) else value

    return {"output": path.name,
            "scored": pd.Timestamp(path.stat().st_mtime, unit="s").floor("s"),
            "rows": summary["rows"], "errors": summary["errors"],
            "unknown_share": shown(summary["unknown_share"]),
            "poor_quality_share": shown(summary["poor_quality_share"]),
            "mean_confidence": shown(summary["mean_top1_conf"])}


def label_counts(params: Params, output: str) -> pd.Series:
    """Predicted labels of one scoring output, most frequent first (errors as ERROR)."""
    frame = pd.read_parquet(params.paths.scoring_reports / output, columns=["status", "label"])
    return frame["label"].where(frame["status"] == OK, "ERROR").value_counts()


@dataclass
class ClusterView:
    folder: Path | None = None
    summary: pd.DataFrame | None = None
    cluster_map: Path | None = None
    sheets: dict[str, Path] = field(default_factory=dict)


def latest_clusters(params: Params) -> ClusterView:
    """The newest weekly clustering run: its summary, map and contact sheets."""
    try:
        folder = latest_run(params)
    except FileNotFoundError:
        return ClusterView()
    summary = folder / "summary.csv"
    return ClusterView(folder, pd.read_csv(summary) if summary.is_file() else None,
                       _existing(folder / "clusters.png"),
                       {p.stem: p for p in sorted((folder / "sheets").glob("*.png"))})


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None
