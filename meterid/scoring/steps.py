"""Batch scoring steps, shared by ``meterid score`` and the ``batch_scoring`` Prefect flow:
score a list into a Parquet file (resumably), then record the run and check it for drift."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pandas as pd

from meterid.config import MonitorConfig, Params, ScoreConfig
from meterid.core import OK, ScoredRow
from meterid.decision.policy import DecisionPolicy
from meterid.inference.fetch import Fetcher
from meterid.inference.predictor import Predictor
from meterid.inference.quality import QualityLimits, gate_limits
from meterid.photos.images import file_sha256
from meterid.progress import progress
from meterid.registry import load_classifier
from meterid.review.audit import AuditVerdict
from meterid.review.field import field_report
from meterid.review.photos import ReviewPhotos
from meterid.review.queue import AUDIT, review_queue
from meterid.review.store import LabelStore, field_verdict, known_classes, open_store
from meterid.scoring.checkpoint import Checkpoint, atomic_write_parquet, run_key
from meterid.scoring.monitoring import FIELD_METRICS, SUMMARY_METRICS, drift_alerts, summarize
from meterid.scoring.pipeline import BatchScorer
from meterid.scoring.sources import ROW, SOURCE, read_sources
from meterid.scoring.store import UnknownStore
from meterid.tracking import use_experiment

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = ScoredRow.columns()


@dataclass(frozen=True)
class ScoringOutcome:
    output: Path
    run_id: str
    summary: dict
    rescored_rows: int  # rows scored by this call (fewer than all when a run was resumed)
    model_source: str


def with_overrides(cfg: ScoreConfig, **overrides: object) -> ScoreConfig:
    """The score section with the non-None overrides of a CLI call or flow run."""
    return cfg.model_copy(update={k: v for k, v in overrides.items() if v is not None})


def field_audit(params: Params, model_version: int | None) -> AuditVerdict:
    """Whether a run of ``model_version`` may auto-accept, by its field audits so far."""
    verdict = field_verdict(open_store(params), model_version, params)
    if not verdict.auto_accept:
        log.warning("auto-accept stopped for model version %s: %s", model_version,
                    verdict.reason)
    return verdict


def load_predictor(params: Params, model_uri: str, threshold: float | None) -> Predictor:
    return Predictor(load_classifier(model_uri), threshold, params.score.engine,
                     params.paths.onnx_cache)


def _default_output(params: Params, input_path: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return params.paths.scoring_reports / f"{input_path.stem}-{stamp}.parquet"


def _output_table(scored: pd.DataFrame, sources: pd.DataFrame) -> pd.DataFrame:
    """Our columns in a fixed order, then the input's carried columns, in input order."""
    for column in OUTPUT_COLUMNS:
        if column not in scored.columns:
            scored[column] = None
    carried = sources.drop(columns=[SOURCE])
    return scored[list(OUTPUT_COLUMNS)].merge(carried, on=ROW, how="left", validate="1:1")


def _progress(results: Iterator[ScoredRow], total: int, done_before: int
              ) -> Iterator[ScoredRow]:
    return progress(results, "scoring", "row", total=total, initial=done_before)


@dataclass(frozen=True)
class ScoringRun:
    """One run of a list: its sources, checkpoint folder (keyed by what decides the results, so
    a restart on either path, one process or shards, finds the same parts), id and output."""

    sources: pd.DataFrame
    checkpoint: Checkpoint
    run_id: str
    output: Path
    done: frozenset[int]  # rows already in checkpoint parts
    model_source: str
    quality: QualityLimits  # the gate's limits: the model's own, or the params' generic ones
    audit: AuditVerdict  # whether this run auto-accepts, by the field audit

    def todo(self) -> Iterator[tuple[int, str]]:
        """(row, url) of the rows still to score, in input order."""
        return ((row, url) for row, url in zip(self.sources[ROW], self.sources[SOURCE],
                                                strict=True) if row not in self.done)


def open_run(params: Params, cfg: ScoreConfig, model_source: str, policy: DecisionPolicy,
             input_path: Path, output: Path | None = None, column: str | None = None, *,
             quality: QualityLimits, audit: AuditVerdict) -> ScoringRun:
    """Read the list and find (or start) its run; ``model_source`` is pinned to a version,
    ``quality`` is the gate's limits the model scores with (``quality.gate_limits``),
    ``audit`` the field audit's verdict (``field_audit``) the run applies at its end."""
    input_path = Path(input_path)
    sources = read_sources(input_path, column, reserved=frozenset(OUTPUT_COLUMNS))
    key = run_key(input=file_sha256(input_path), column=column, model=model_source,
                  policy=policy.to_dict(), quality=quality.to_dict(),
                  auto_accept=audit.auto_accept)
    checkpoint = Checkpoint(params.paths.scoring_reports / ".work" / key)
    meta = checkpoint.run_meta({"input": str(input_path),
                                "output": str(output or _default_output(params, input_path)),
                                "quality_limits": quality.to_dict()})
    done = checkpoint.done_rows()
    if done:
        log.info("resuming run %s: %d of %d rows already scored", meta["run_id"], len(done),
                 len(sources))
    return ScoringRun(sources, checkpoint, meta["run_id"], Path(meta["output"]),
                      frozenset(done), model_source, quality, audit)


def finish_run(run: ScoringRun, params: Params, cfg: ScoreConfig, rescored: int
               ) -> ScoringOutcome:
    """Every checkpoint part into the output file (one row per input row, in input order),
    and the photos a person must see into the review queue. While the field audit stops
    auto-accept, every photo the rule would have accepted goes to a person, as an audit."""
    table = _output_table(run.checkpoint.assemble(len(run.sources)), run.sources)
    stopped = not run.audit.auto_accept
    queue = review_queue(table, run.run_id, 1.0 if stopped else params.review.audit_share,
                         params.review.audit_min)
    if stopped:
        table["auto_accepted"] = table["auto_accepted"].where(table["status"] != OK, False)
    out_path = atomic_write_parquet(table, run.output)
    if cfg.write_csv:  # a spreadsheet shows the candidate list as "a | b", not a Python list
        flat = table.assign(prediction_set=table["prediction_set"].map(
            lambda labels: " | ".join(labels) if labels is not None else None))
        flat.to_csv(out_path.with_suffix(".csv"), index=False)
    run.checkpoint.remove()
    log.info("wrote %d rows to %s; quality gate: %s", len(table), out_path,
             run.quality.describe())
    if not stopped:  # the audit sample's photos out of the run's pending auto-accepted ones
        kept = ReviewPhotos(params.paths.review_photos).keep_audited(
            run.run_id, queue.loc[queue["reason"] == AUDIT, "sha256"])
        log.info("audit sample: %d auto-accepted photos kept for review", kept)
    store = open_store(params)
    queued = store.enqueue(run.run_id, queue)
    summary = {**summarize(table), "quality_limits": run.quality.to_dict(),
               "review_queued": queued, "auto_accept_stopped": stopped,
               "auto_accept": run.audit.reason,
               **_field_figures(store, run.audit, _model_version(table), params)}
    return ScoringOutcome(out_path, run.run_id, summary, rescored, run.model_source)


def _model_version(table: pd.DataFrame) -> int | None:
    versions = table["model_version"].dropna()
    return None if versions.empty else int(versions.iloc[0])


def _field_figures(store: LabelStore, audit: AuditVerdict, version: int | None,
                   params: Params) -> dict[str, float | None]:
    """What reviewers have said of this model version so far (MLflow keeps it per run)."""
    field = field_report(store, version, known_classes(params))
    return {"field_reviewed": field.reviewed, "field_accuracy": field.accuracy,
            "field_audited": audit.audited, "field_audit_bound": audit.bound}


@contextmanager
def open_scorer(predictor: Predictor, cfg: ScoreConfig, max_pixels: int,
                store: UnknownStore | None, run_id: str, review_photos: ReviewPhotos | None,
                auto_accept: bool = True) -> Iterator[BatchScorer]:
    """A scorer with its own downloads pool (closed after), keeping UNKNOWN photos in ``store``
    and the photos a person will see in ``review_photos``: those not auto-accepted, or every
    photo while the field audit stops ``auto_accept``; the auto-accepted ones in the run's
    pending folder, for its audit sample (``finish_run``)."""
    fetcher = Fetcher(cfg.fetch, pool_size=cfg.concurrency)

    def keep_for_review(data: bytes, row: ScoredRow) -> None:
        if review_photos is None:
            return
        if auto_accept and row.auto_accepted:  # kept only if the run's audit sample draws it
            review_photos.pending(run_id).add(data, row)
        else:
            review_photos.add(data, row)

    try:
        yield BatchScorer(
            predictor, fetcher, cfg.quality, max_pixels, cfg.batch_size, cfg.concurrency,
            on_unknown=(lambda data, row: store.add(data, replace(row, run_id=run_id)))
            if store else None,
            on_scored=keep_for_review)
    finally:
        fetcher.close()


def score_list(params: Params, cfg: ScoreConfig, predictor: Predictor, input_path: Path,
               output: Path | None = None, column: str | None = None) -> ScoringOutcome:
    """Score every row of ``input_path``; a killed run started again resumes where it stopped."""
    run = open_run(params, cfg, predictor.bundle.source, predictor.policy, input_path, output,
                   column, quality=gate_limits(predictor.bundle.quality_limits, cfg.quality),
                   audit=field_audit(params, predictor.version))
    store = UnknownStore(params.paths.unknown_store) if cfg.store_unknown else None
    with open_scorer(predictor, cfg, params.validate_.max_pixels, store, run.run_id,
                     ReviewPhotos(params.paths.review_photos), run.audit.auto_accept) as scorer:
        rescored = _score_into(run.checkpoint, scorer, run.todo(), run.run_id,
                               cfg.checkpoint_rows, total=len(run.sources),
                               done_before=len(run.done))
    return finish_run(run, params, cfg, rescored)


def _score_into(checkpoint: Checkpoint, scorer: BatchScorer, todo: Iterator[tuple[int, str]],
                run_id: str, every: int, total: int, done_before: int) -> int:
    """Stream the scorer's rows into checkpoint parts of ``every`` rows; returns rows scored."""
    buffer: list[dict] = []
    count, started = 0, time.perf_counter()
    for row in _progress(scorer.score(todo), total, done_before):
        buffer.append(replace(row, run_id=run_id).to_dict())
        count += 1
        if len(buffer) >= every:
            checkpoint.write(buffer)
            buffer = []
            log.info("scored %d/%d rows (%.1f rows/s)", done_before + count, total,
                     count / (time.perf_counter() - started))
    if buffer:
        checkpoint.write(buffer)
    return count


# --- monitoring --------------------------------------------------------------------------------

def _trailing_summaries(cfg: MonitorConfig) -> list[dict]:
    experiment = mlflow.get_experiment_by_name(cfg.experiment)
    if experiment is None:
        return []
    runs = mlflow.search_runs([experiment.experiment_id], filter_string="status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"],
                              max_results=cfg.trailing_runs, output_format="list")
    return [dict(run.data.metrics) for run in runs]


def record_run(outcome: ScoringOutcome, cfg: MonitorConfig) -> list[str]:
    """Log the run's summary to the scoring experiment; returns drift alerts (also logged)."""
    trailing = _trailing_summaries(cfg)
    alerts = drift_alerts(outcome.summary, trailing, cfg)
    use_experiment(cfg.experiment)
    with mlflow.start_run(run_name=f"scoring-{outcome.run_id[:8]}"):
        quality = QualityLimits.from_dict(outcome.summary["quality_limits"])
        mlflow.log_params({"output": str(outcome.output), "model": outcome.model_source,
                           "scoring_run_id": outcome.run_id, "quality_limits": quality.source,
                           **{f"quality_{k}": v for k, v in quality.to_dict().items()
                              if k.startswith(("min_", "max_"))}})
        mlflow.log_metrics({key: float(outcome.summary[key]) for key in SUMMARY_METRICS})
        mlflow.log_metrics({key: float(value) for key in FIELD_METRICS
                            if (value := outcome.summary.get(key)) is not None})
        mlflow.set_tags({"drift_alert": "; ".join(alerts) or "none",
                         "auto_accept": outcome.summary["auto_accept"]})
        with tempfile.TemporaryDirectory() as tmp:
            summary_path = Path(tmp) / "summary.json"
            summary_path.write_text(json.dumps({**outcome.summary, "alerts": alerts}, indent=2))
            mlflow.log_artifact(str(summary_path))
    for alert in alerts:
        log.warning("drift alert: %s", alert)
    return alerts
