"""Nightly batch scoring: resolve the champion -> score the list -> record the run, check drift.

The list is scored by one process (``scale_out="threads"``, downloads in threads) or, scaled
out, in shards by the worker processes of a Dask cluster: a local one (``dask``, ``dask:N``) or
the scheduler at ``tcp://host:8786``, whose workers need this project's packages, its folder
(the checkpoint parts and UNKNOWN store are files) and a Prefect server they can reach
(``PREFECT_API_URL``). Both ways give the same rows and resume each other's killed runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect import flow, unmapped
from prefect.context import FlowRunContext
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_dask import DaskTaskRunner

from meterid.config import Params, ScoreConfig
from meterid.flows.run_logs import show_meterid_logs_in_runs
from meterid.registry import model_uri
from meterid.scoring.shards import ScaleOut, parse_scale_out
from meterid.scoring.steps import ScoringOutcome, with_overrides
from meterid.stores import open_project, project_root
from meterid.tasks.scoring import (
    assemble_shards,
    plan_shards,
    record_and_check_drift,
    resolve_model,
    score_images,
    score_shard,
)
from meterid.tracking import use_experiment


@flow(name="batch_scoring")
def batch_scoring(
    input: str,  # noqa: A002 (the UI's field name)
    output: str | None = None,
    model: str | None = None,
    threshold: float | None = None,
    concurrency: int | None = None,
    batch_size: int | None = None,
    column: str | None = None,
    scale_out: str = "threads",
    params_file: str = "params.yaml",
) -> dict:
    """Score a list of image URLs (CSV, Excel or text) into Parquet, keeping UNKNOWN photos.
    Empty fields take their params.yaml values; ``model`` takes an alias or a model URI;
    ``scale_out``: "threads" (one process), "dask" or "dask:N" (a local Dask cluster of N
    worker processes, 1 thread each) or a Dask scheduler's address "tcp://host:8786"."""
    show_meterid_logs_in_runs()
    params = open_project(params_file)
    scale = parse_scale_out(scale_out, params.score.dask_workers)
    cfg = with_overrides(params.score, model=model_uri(model, params.score.model),
                         concurrency=concurrency, batch_size=batch_size)
    cfg = cfg.model_copy(update={"model": resolve_model(cfg.model)})
    use_experiment(cfg.monitor.experiment)  # a store that cannot log the run says so now
    args = (params, cfg, threshold, Path(input), Path(output) if output else None, column)
    if scale.sharded:
        with _workers_report_here():
            # prefect-dask's runner is a TaskRunner of its own future type
            outcome = score_in_shards.with_options(
                task_runner=_dask_runner(scale))(  # type: ignore[arg-type]
                *args, project_root(params_file))
    else:
        outcome = score_images(*args)
    alerts = record_and_check_drift(outcome, cfg.monitor)
    return {"output": str(outcome.output), "run_id": outcome.run_id, "model": cfg.model,
            "summary": outcome.summary, "alerts": alerts}


@flow(name="batch_scoring_shards", validate_parameters=False)
def score_in_shards(params: Params, cfg: ScoreConfig, threshold: float | None,
                    input_path: Path, output: Path | None, column: str | None,
                    root: Path) -> ScoringOutcome:
    """The rows still to score cut into shards, one Dask task each (each worker loads the model
    once), then every checkpoint part into the output in input order."""
    planned = plan_shards(params, cfg, threshold, input_path, output, column, root)
    results = score_shard.map(unmapped(planned.job), planned.shards).result()
    return assemble_shards(planned, results)


def _dask_runner(scale: ScaleOut) -> DaskTaskRunner:
    """The scheduler at the address, or a local cluster of single-threaded worker processes."""
    if scale.address:
        return DaskTaskRunner(address=scale.address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": scale.workers, "threads_per_worker": 1,
                                          "processes": True,
                                          "dashboard_address": "127.0.0.1:0"})


@contextmanager
def _workers_report_here() -> Iterator[None]:
    """With no Prefect server (PREFECT_API_URL unset), every Dask worker would start a temporary
    one of its own (~15 s each, on one SQLite file): point them at this flow run's instead."""
    if PREFECT_API_URL.value():
        yield
        return
    context = FlowRunContext.get()
    if context is None:
        raise RuntimeError("scale_out needs a flow run: call it from the batch_scoring flow")
    with temporary_settings(updates={PREFECT_API_URL: str(context.client.api_url)}):
        yield
