"""Prefect tasks for batch scoring: thin wrappers adding retries, logging and artifacts."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from meterid.config import MonitorConfig, Params, ScoreConfig
from meterid.registry import resolve_model_uri
from meterid.scoring.steps import ScoringOutcome, load_predictor, record_run, score_list
from tasks.retry import retry_on_io_error


@task(name="resolve-model", retries=2, retry_delay_seconds=10, cache_policy=NO_CACHE)
def resolve_model(model_uri: str) -> str:
    """Pin the alias to a version now, so the whole run uses one model even if it is promoted
    meanwhile."""
    source = resolve_model_uri(model_uri)
    get_run_logger().info("model %s resolves to %s", model_uri, source)
    return source


# A crash (killed worker, full disk) retries the task, which resumes from its checkpoint parts.
@task(name="score-list", retries=1, retry_delay_seconds=5, retry_condition_fn=retry_on_io_error,
      cache_policy=NO_CACHE)
def score_images(params: Params, cfg: ScoreConfig, threshold: float | None, input_path: Path,
                 output: Path | None, column: str | None) -> ScoringOutcome:
    predictor = load_predictor(params, cfg.model, threshold)
    outcome = score_list(params, cfg, predictor, input_path, output, column)
    get_run_logger().info("scored %d rows (%d this attempt) into %s",
                          outcome.summary["rows"], outcome.rescored_rows, outcome.output)
    return outcome


@task(name="record-and-check-drift", cache_policy=NO_CACHE)
def record_and_check_drift(outcome: ScoringOutcome, monitor: MonitorConfig) -> list[str]:
    alerts = record_run(outcome, monitor)
    summary = outcome.summary
    create_table_artifact(
        key="scoring-summary", description=f"{outcome.output} (model {outcome.model_source})",
        table=[{"what": k, "count": summary[k]} for k in ("rows", "ok", "errors", "unknown",
                                                          "poor_quality")]
        + [{"what": f"label {k}", "count": v} for k, v in summary["label_counts"].items()]
        + [{"what": f"error: {k}", "count": v} for k, v in summary["error_reasons"].items()])
    if alerts:
        create_markdown_artifact(
            key="scoring-drift-alert",
            markdown="# Scoring drift alert\n\n" + "\n".join(f"- {a}" for a in alerts)
            + f"\n\nRun `{outcome.run_id}`, output `{outcome.output}`.")
        for alert in alerts:
            get_run_logger().warning("drift alert: %s", alert)
    return alerts
