"""Data preparation flow: (demo data) -> manifest -> Great Expectations -> split (adaptive, or
the one ``split.given_csv`` in params.yaml names) -> the photos and both stages versioned in
DVC."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import flow

from meterid.data.steps import folder_is_empty
from meterid.flows.run_logs import show_meterid_logs_in_runs
from meterid.pipeline import stage_names
from meterid.stores import open_project
from meterid.tasks.data import (
    build_image_manifest,
    generate_demo_data,
    split_images,
    validate_image_manifest,
)
from meterid.tasks.versioning import record_stages
from meterid.tracking import tracking_file


class DataValidationError(RuntimeError):
    """The dataset broke a validation rule; the report names the files."""


@flow(name="data_preparation")
def data_preparation(params_file: str = "params.yaml", demo_if_missing: bool = True) -> dict:
    """Prepare the image dataset for training; fails when validation fails."""
    show_meterid_logs_in_runs()
    params = open_project(params_file)
    paths = params.paths
    if demo_if_missing and params.demo.generate_if_empty and folder_is_empty(paths.raw_dir):
        generate_demo_data(params.demo, paths.raw_dir, paths.unknown_dir)
    # Typed: without it Prefect's overloads read a task returning a DataFrame as async.
    manifest: pd.DataFrame = build_image_manifest(
        paths.raw_dir, params.validate_.max_pixels, params.validate_.workers)
    report = validate_image_manifest(manifest, paths.raw_dir, paths.manifest,
                                     paths.validation_reports, params.validate_)
    if not report.success:
        failed = [rule.name for rule in report.errors]
        raise DataValidationError(f"{paths.raw_dir} failed validation rules: {', '.join(failed)}"
                                  f" (report: {paths.validation_reports / 'summary.json'})")
    splits: pd.DataFrame = split_images(
        paths.manifest, paths.raw_dir, paths.splits, paths.split_reports, params.validate_,
        params.split)
    photos = tracking_file(Path.cwd(), paths.raw_dir)  # the photos' version, when DVC tracks it
    record_stages([*([photos] if photos else []), *stage_names("validate", "split")])
    return {
        "images": len(manifest),
        "classes": int(manifest["label"].nunique()),
        "splits": {k: int(v) for k, v in splits["split"].value_counts().items()},
        "manifest": str(paths.manifest),
        "splits_file": str(paths.splits),
        "data_docs": str(report.docs_index) if report.docs_index else None,
    }

