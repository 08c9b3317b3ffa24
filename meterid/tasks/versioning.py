"""The Prefect task that records a flow's stages in DVC (``pipeline.record_in_dvc``)."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from meterid.pipeline import record_in_dvc


@task(name="record-in-dvc")
def record_stages(targets: list[str]) -> list[str]:
    """``targets`` (stage names, tracked paths) into dvc.lock and the DVC cache, from the
    project folder the flow runs in."""
    recorded = record_in_dvc(Path.cwd(), targets)
    if recorded:
        get_run_logger().info("versioned with DVC: %s", ", ".join(recorded))
    return recorded
