"""What the dashboard shows, read from the project's own outputs; no Streamlit here, so each
view's data is testable on its own. Every reader returns None/empty when its step has not run
yet, and the page says which command produces it."""

from __future__ import annotations

import base64
import io
import json
import math
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from mlflow.exceptions import MlflowException
from PIL import Image

from meterid.catalog import EvaluationReports
from meterid.clustering.state import ClusterState
from meterid.clustering.steps import latest_run
from meterid.config import Params
from meterid.core import OK, POOR_QUALITY, TOP_K, UNKNOWN, ScoredRow
from meterid.data.split import read_splits, split_table
from meterid.registry import download_evaluation
from meterid.review.photos import ReviewPhotos
from meterid.scoring.monitoring import summarize
from meterid.scoring.pipeline import BatchScorer
from meterid.stores import describe_tracking_store


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


SUMMARY_COLUMNS = ("status", "error", "label", "top1_conf", "auto_accepted", "sha256")
COUNTS = ("ok", "errors", "unknown", "poor_quality", "auto_accepted", "reviewed")


def scoring_history(params: Params, reviewed: frozenset[str] = frozenset(),
                    limit: int = 30) -> pd.DataFrame:
    """One row per scoring output (newest first): its counts (ok, errors, UNKNOWN,
    POOR_QUALITY, auto-accepted, reviewed: a reviewer labelled the photo), the same rows by
    decision in a reviewer's words (``DECISIONS``: they add up to the rows), the UNKNOWN and
    POOR_QUALITY shares and the mean top-1 confidence, as the scoring run summarised them
    (``monitoring.summarize``). Only the columns summarised are read from each Parquet."""
    files = sorted(params.paths.scoring_reports.glob("*.parquet"),
                   key=lambda path: path.stat().st_mtime, reverse=True)[:limit]
    rows = [_scoring_summary(path, reviewed) for path in files]
    return pd.DataFrame(rows, columns=["output", "scored", "rows", *COUNTS, *DECISIONS,
                                       "unknown_share", "poor_quality_share", "mean_confidence"])


def _scoring_summary(path: Path, reviewed: frozenset[str]) -> dict:
    present = set(pq.read_schema(path).names)
    frame = pd.read_parquet(path, columns=[c for c in SUMMARY_COLUMNS if c in present])
    summary = summarize(frame)
    shas = frame["sha256"] if "sha256" in frame else pd.Series(dtype=object)

    def shown(value: object) -> object:  # NaN (nothing scored) as an empty cell
        return None if isinstance(value, float) and math.isnan(value) else value

    return {"output": path.name,
            "scored": pd.Timestamp(path.stat().st_mtime, unit="s").floor("s"),
            "rows": summary["rows"], **{key: summary[key] for key in COUNTS[:-1]},
            "reviewed": int(shas.isin(reviewed).sum()), **_decision_counts(frame),
            "unknown_share": shown(summary["unknown_share"]),
            "poor_quality_share": shown(summary["poor_quality_share"]),
            "mean_confidence": shown(summary["mean_top1_conf"])}


def _decision_counts(frame: pd.DataFrame) -> dict[str, int]:
    accepted = frame["auto_accepted"] if "auto_accepted" in frame else [False] * len(frame)
    words = pd.Series([decision_in_words(status, label, auto) for status, label, auto in
                       zip(frame["status"], frame["label"], accepted, strict=True)], dtype=object)
    counts = words.value_counts()
    return {decision: int(counts.get(decision, 0)) for decision in DECISIONS}


def label_counts(params: Params, output: str) -> pd.Series:
    """Predicted labels of one scoring output, most frequent first (errors as ERROR)."""
    frame = pd.read_parquet(params.paths.scoring_reports / output, columns=["status", "label"])
    return frame["label"].where(frame["status"] == OK, "ERROR").value_counts()


# What the product decided, in a reviewer's words (the Nightly results filter).
DECISIONS = ("auto-accepted", "needs a person", "new type?", "unreadable?", "error")


def decision_in_words(status: str, label: str | None, auto_accepted: object) -> str:
    if status != OK:
        return "error"
    if label == UNKNOWN:
        return "new type?"
    if label == POOR_QUALITY:
        return "unreadable?"
    return "auto-accepted" if auto_accepted is True else "needs a person"


@dataclass(frozen=True)
class ResultsFilter:
    decisions: tuple[str, ...] = ()   # none: all
    labels: tuple[str, ...] = ()      # none: all
    text: str = ""                    # in the URL or the error
    min_confidence: float = 0.0


def scoring_results(params: Params, output: str, verdicts: dict[str, str],
                    keep: ResultsFilter) -> pd.DataFrame:
    """One scoring output's rows in words, filtered: the decision, the label and top-1
    confidence, the candidates, what reviewers said (a verdict, or "conflict"), the error."""
    frame = pd.read_parquet(params.paths.scoring_reports / output)
    table = pd.DataFrame({
        "url": frame["url"],
        "decision": [decision_in_words(s, lab, acc) for s, lab, acc in
                     zip(frame["status"], frame["label"], frame["auto_accepted"], strict=True)],
        "label": frame["label"],
        "confidence": frame["top1_conf"],
        "candidates": frame["prediction_set"].map(
            lambda labels: " | ".join(labels) if labels is not None else None),
        "reviewers": frame["sha256"].map(verdicts),
        "error": frame["error"],
        "sha256": frame["sha256"]})
    chosen = pd.Series(True, index=table.index)
    if keep.decisions:
        chosen &= table["decision"].isin(keep.decisions)
    if keep.labels:
        chosen &= table["label"].isin(keep.labels)
    if keep.text:
        needle = keep.text.lower()
        chosen &= (table["url"].str.lower().str.contains(needle, regex=False)
                   | table["error"].fillna("").str.lower().str.contains(needle, regex=False))
    if keep.min_confidence > 0:
        chosen &= table["confidence"].fillna(0.0) >= keep.min_confidence
    return table[chosen].reset_index(drop=True)


def photo_source(params: Params, url: str, sha256: str | None) -> str | None:
    """Where the page reads a scored photo from: its local path, the copy scoring kept for
    review, else its URL (the browser fetches it; None when nothing is left to show)."""
    if Path(url).is_file():
        return url
    kept = (ReviewPhotos(params.paths.review_photos).find(sha256)
            if isinstance(sha256, str) and sha256 else None)  # an error row has none
    if kept is not None:
        return str(kept)
    return url if url.startswith(("http://", "https://")) else None


def thumbnail(url: str | None, size: int = 96) -> str | None:
    """What the table shows for a photo: a local file as a small inline PNG (the browser
    cannot read the server's files), a web photo by its URL, None when it cannot be read."""
    if url is None or url.startswith(("http://", "https://")):
        return url
    try:
        with Image.open(url) as image:
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="PNG")
    except (OSError, ValueError):
        return None
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


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
    return ClusterView(folder, _current_status(pd.read_csv(summary), params)
                       if summary.is_file() else None,
                       _existing(folder / "clusters.png"),
                       {p.stem: p for p in sorted((folder / "sheets").glob("*.png"))})


def _current_status(summary: pd.DataFrame, params: Params) -> pd.DataFrame:
    """The run's summary with each cluster's review status as it is now (added or rejected
    since the run), not as it was when the run wrote it."""
    if "status" not in summary:
        return summary
    state = ClusterState.load(params.paths.cluster_state).clusters
    now = summary["cluster_id"].map(lambda c: state[c].status if c in state else None)
    return summary.assign(status=now.fillna(summary["status"]))


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


@dataclass
class DatasetView:
    split_table: pd.DataFrame | None = None   # photos per class and split
    class_balance: Path | None = None
    validation: dict | None = None            # the last `meterid validate` (summary.json)
    data_docs: Path | None = None


def dataset(params: Params) -> DatasetView:
    """The dataset as the last validate and split left it."""
    paths = params.paths
    summary = paths.validation_reports / "summary.json"
    validation = json.loads(summary.read_text()) if summary.is_file() else None
    docs = Path(validation["data_docs"]) if validation and validation.get("data_docs") else None
    return DatasetView(
        split_table(read_splits(paths.splits)) if paths.splits.is_file() else None,
        _existing(paths.split_reports / "class_balance.png"), validation,
        docs if docs is not None and docs.is_file() else None)


def failed_rules(validation: dict) -> pd.DataFrame:
    """Every offending file of the failed rules, errors first: rule, severity, file, why."""
    rows = [{"rule": rule["name"], "severity": rule["severity"], "file": item["path"],
             "why": item["why"]}
            for rule in validation["rules"] if not rule["success"]
            for item in rule["offending"]]
    frame = pd.DataFrame(rows, columns=["rule", "severity", "file", "why"])
    return frame.sort_values("severity", key=lambda s: s != "error", kind="stable")


@dataclass(frozen=True)
class VersionReports:
    """The evaluation reports logged with a registered version."""

    confusion_matrix: bytes | None = None  # PNG
    open_set: bytes | None = None          # PNG
    per_class: pd.DataFrame | None = None
    unreadable: str | None = None  # why the store could not give them (None: read, or none)


def version_reports(version: int) -> VersionReports:
    """``version``'s reports, read from the registry (empty when logged without them). A run
    logged through ``meterid serve`` keeps them on the MLflow server, which a dashboard reading
    the SQLite file cannot reach: ``unreadable`` then says so, in MLflow's words."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder = download_evaluation(version, Path(tmp))
        except MlflowException as error:
            return VersionReports(unreadable=f"{describe_tracking_store()}: {error.message}")
        if folder is None:
            return VersionReports()
        files = EvaluationReports(folder)

        def png(path: Path) -> bytes | None:
            return path.read_bytes() if path.is_file() else None

        return VersionReports(png(files.confusion_matrix), png(files.open_set_plot),
                              pd.read_csv(files.per_class) if files.per_class.is_file()
                              else None)
