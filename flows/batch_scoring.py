"""Nightly batch scoring: resolve the champion -> score the list -> record the run, check drift."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from meterid.registry import model_uri
from meterid.scoring.steps import with_overrides
from meterid.stores import open_project
from tasks.scoring import record_and_check_drift, resolve_model, score_images


@flow(name="batch_scoring")
def batch_scoring(
    input: str,  # noqa: A002 (the UI's field name)
    output: str | None = None,
    model: str | None = None,
    threshold: float | None = None,
    concurrency: int | None = None,
    batch_size: int | None = None,
    column: str | None = None,
    params_file: str = "params.yaml",
) -> dict:
    """Score a list of image URLs (CSV, Excel or text) into Parquet, keeping UNKNOWN photos.
    Empty fields take their params.yaml values; ``model`` takes an alias or a model URI."""
    params = open_project(params_file)
    cfg = with_overrides(params.score, model=model_uri(model, params.score.model),
                         concurrency=concurrency, batch_size=batch_size)
    cfg = cfg.model_copy(update={"model": resolve_model(cfg.model)})
    outcome = score_images(params, cfg, threshold, Path(input),
                           Path(output) if output else None, column)
    alerts = record_and_check_drift(outcome, cfg.monitor)
    return {"output": str(outcome.output), "run_id": outcome.run_id, "model": cfg.model,
            "summary": outcome.summary, "alerts": alerts}
