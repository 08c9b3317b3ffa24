"""Prefect tasks for batch scoring: thin wrappers adding retries, logging and artifacts."""

from __future__ import annotations

from pathlib import Path

from distributed import get_worker
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from meterid.config import MonitorConfig, Params, ScoreConfig
from meterid.registry import resolve_model_uri
from meterid.scoring import shards
from meterid.scoring.shards import Shard, ShardedRun, ShardJob, ShardResult
from meterid.scoring.steps import ScoringOutcome, finish_run, load_predictor, record_run, score_list
from meterid.stores import configure_stores
from meterid.tasks.retry import retry_on_io_error, retry_unless_model_missing


@task(name="resolve-model", retries=2, retry_delay_seconds=10,
      retry_condition_fn=retry_unless_model_missing, cache_policy=NO_CACHE)
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
    return _logged(score_list(params, cfg, predictor, input_path, output, column))


def _logged(outcome: ScoringOutcome) -> ScoringOutcome:
    get_run_logger().info("scored %d rows (%d this attempt) into %s",
                          outcome.summary["rows"], outcome.rescored_rows, outcome.output)
    return outcome


# --- scaled out: the list in shards, each scored in a Dask worker ------------------------------

@task(name="plan-shards", cache_policy=NO_CACHE)
def plan_shards(params: Params, cfg: ScoreConfig, threshold: float | None, input_path: Path,
                output: Path | None, column: str | None, root: Path) -> ShardedRun:
    planned = shards.plan_run(params, cfg, threshold, input_path, output, column, root)
    get_run_logger().info("%d rows, %d already scored: %d shards of up to %d rows",
                          len(planned.run.sources), len(planned.run.done), len(planned.shards),
                          cfg.shard_rows)
    return planned


# Runs in a Dask worker, maybe on another machine: the stores first, so it finds the same MLflow
# store as the flow. A crash retries the shard; a part already written is not scored again.
@task(name="score-shard", task_run_name="score-rows-{shard.start}", retries=1,
      retry_delay_seconds=5, retry_condition_fn=retry_on_io_error, cache_policy=NO_CACHE)
def score_shard(job: ShardJob, shard: Shard) -> ShardResult:
    configure_stores(job.params.stores, job.root)
    result = shards.score_shard(job, shard, threads=_worker_threads())
    get_run_logger().info("rows %d-%d: %d scored", shard.start, shard.stop - 1, result.scored)
    return result


def _worker_threads() -> int | None:
    """This Dask worker's thread count (None outside a worker: ``.fn()`` in a test)."""
    try:
        return get_worker().state.nthreads
    except ValueError:
        return None


@task(name="assemble-shards", cache_policy=NO_CACHE)
def assemble_shards(planned: ShardedRun, results: list[ShardResult]) -> ScoringOutcome:
    rescored = sum(result.scored for result in results)
    return _logged(finish_run(planned.run, planned.job.params, planned.job.cfg, rescored))


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
