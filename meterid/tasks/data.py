"""Prefect tasks for the data steps: thin wrappers adding logging, retries and caching."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from meterid.config import DemoConfig, SplitConfig, ValidateConfig
from meterid.data import steps
from meterid.data.demo.generate import generate_demo
from meterid.data.manifest import build_manifest
from meterid.data.split import split_table
from meterid.data.validation import ValidationReport, format_report
from meterid.tasks.retry import retry_on_io_error


def _folder_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    fingerprint = steps.folder_fingerprint(Path(parameters["data_dir"]))
    return f"manifest-{fingerprint}-{parameters['max_pixels']}"


@task(name="generate-demo-data")
def generate_demo_data(cfg: DemoConfig, out_dir: Path, unknown_dir: Path) -> dict[str, int]:
    counts = generate_demo(cfg, out_dir, unknown_dir)
    get_run_logger().info("generated %d images in %d folders", sum(counts.values()), len(counts))
    return counts


@task(name="build-manifest", cache_key_fn=_folder_cache_key, persist_result=True,
      retries=2, retry_delay_seconds=5, retry_condition_fn=retry_on_io_error)
def build_image_manifest(data_dir: Path, max_pixels: int, workers: int) -> pd.DataFrame:
    """Cached on the folder's fingerprint: re-running on unchanged data skips hashing images."""
    manifest = build_manifest(data_dir, max_pixels, workers)
    get_run_logger().info("manifest: %d files under %s", len(manifest), data_dir)
    return manifest


@task(name="validate-manifest")
def validate_image_manifest(
    manifest: pd.DataFrame, data_dir: Path, manifest_path: Path, report_dir: Path,
    cfg: ValidateConfig,
) -> ValidationReport:
    report = steps.check_manifest(manifest, data_dir, manifest_path, report_dir, cfg)
    logger = get_run_logger()
    log = logger.error if not report.success else logger.warning if report.warnings else logger.info
    log("%s", format_report(report, data_dir))
    create_markdown_artifact(markdown=steps.validation_markdown(report, data_dir),
                             key="data-validation", description="Great Expectations rules")
    return report


@task(name="split-dataset")
def split_images(
    manifest_path: Path, data_dir: Path, splits_path: Path, report_dir: Path,
    validate_cfg: ValidateConfig, split_cfg: SplitConfig,
) -> pd.DataFrame:
    splits = steps.split_dataset(data_dir, manifest_path, splits_path, report_dir, validate_cfg,
                                 split_cfg)
    table = split_table(splits).reset_index()
    create_table_artifact(table=table.to_dict(orient="records"), key="dataset-split",
                          description="Images per class and split")
    get_run_logger().info("split %d images: %s", len(splits),
                          splits["split"].value_counts().to_dict())
    return splits
