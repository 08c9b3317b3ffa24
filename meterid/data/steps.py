"""File-level data steps shared by the CLI, the Prefect tasks and the dvc stages.

Each step reads its inputs from disk, calls the pure functions and writes its outputs, so the
three entry points do exactly the same thing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pandas as pd

from meterid.config import SplitConfig, ValidateConfig
from meterid.data.manifest import (
    build_manifest,
    class_folders,
    list_files,
    read_manifest,
    write_manifest,
)
from meterid.data.split import (
    assign_splits,
    given_splits,
    plot_class_balance,
    read_given_csv,
    write_splits,
)
from meterid.data.validation import (
    NearDuplicate,
    ValidationReport,
    report_to_dict,
    validate_manifest,
    verdict,
)
from meterid.photos.sheets import contact_sheet

log = logging.getLogger(__name__)


def folder_is_empty(data_dir: Path) -> bool:
    return not data_dir.is_dir() or not list_files(data_dir)


def folder_fingerprint(data_dir: Path) -> str:
    """Changes when any file is added, removed, resized or touched (cheap: no file is read)."""
    digest = hashlib.sha256()
    for relative in list_files(data_dir):
        stat = (data_dir / relative).stat()
        digest.update(f"{relative}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def check_manifest(
    manifest: pd.DataFrame, data_dir: Path, manifest_path: Path, report_dir: Path,
    cfg: ValidateConfig,
) -> ValidationReport:
    """Write the manifest, validate it, and write ``summary.json`` and Data Docs."""
    write_manifest(manifest, manifest_path)
    report = validate_manifest(manifest, cfg, class_folders(data_dir),
                               docs_dir=report_dir / "data_docs", data_dir=data_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    if report.near_duplicates:
        near_duplicate_sheet(report.near_duplicates, data_dir,
                             report_dir / "near_duplicates.png")
    (report_dir / "summary.json").write_text(json.dumps(report_to_dict(report), indent=2) + "\n")
    return report


def near_duplicate_sheet(pairs: tuple[NearDuplicate, ...], data_dir: Path, out: Path,
                         max_pairs: int = 18) -> Path:
    """Both photos of each pair side by side (three pairs a row) for a person to judge."""
    paths = [data_dir / p for pair in pairs[:max_pairs] for p in (pair.path, pair.other)]
    captions = [text for pair in pairs[:max_pairs] for text in (
        pair.path, f"cos {pair.cosine}" if pair.cosine is not None else "phash only")]
    return contact_sheet(paths, captions, f"{len(pairs)} near-duplicate pair(s) across labels",
                         out, 2 * max_pairs, 160)


def validate_dataset(
    data_dir: Path, manifest_path: Path, report_dir: Path, cfg: ValidateConfig
) -> ValidationReport:
    manifest = build_manifest(data_dir, cfg.max_pixels, cfg.workers)
    return check_manifest(manifest, data_dir, manifest_path, report_dir, cfg)


def current_manifest(data_dir: Path, manifest_path: Path, cfg: ValidateConfig) -> pd.DataFrame:
    """The manifest on disk if it lists exactly the files under ``data_dir``, else a new one."""
    if manifest_path.is_file():
        manifest = read_manifest(manifest_path)
        if set(manifest["path"]) == set(list_files(data_dir)):
            return manifest
        log.warning("%s does not list the files under %s: rebuilding it", manifest_path, data_dir)
    manifest = build_manifest(data_dir, cfg.max_pixels, cfg.workers)
    write_manifest(manifest, manifest_path)
    return manifest


def split_dataset(
    data_dir: Path, manifest_path: Path, splits_path: Path, report_dir: Path,
    validate_cfg: ValidateConfig, split_cfg: SplitConfig,
) -> pd.DataFrame:
    """Write ``splits.csv`` and the class-balance chart; returns the splits: adaptive, or as
    ``split_cfg.given_csv`` names them."""
    manifest = current_manifest(data_dir, manifest_path, validate_cfg)
    if split_cfg.given_csv is None:
        splits = assign_splits(manifest, split_cfg)
    else:
        splits = given_splits(manifest, read_given_csv(split_cfg.given_csv), split_cfg,
                              Path(data_dir).resolve().name)
    write_splits(splits, splits_path)
    report_dir.mkdir(parents=True, exist_ok=True)
    plot_class_balance(splits, report_dir / "class_balance.png")
    return splits


def validation_markdown(report: ValidationReport, data_dir: Path, max_files: int = 50) -> str:
    """A Prefect artifact: one row per rule, then the offending files of each failed rule,
    errors before warnings."""
    lines = [f"# Validation of `{data_dir}`: {verdict(report)}", "",
             "| rule | severity | result | offending files |", "|---|---|---|---|"]
    for rule in report.rules:
        result = "ok" if rule.success else ("error" if rule in report.errors else "warning")
        lines.append(f"| {rule.name} | {rule.severity} | {result} | {len(rule.offending)} |")
    for rule in [*report.errors, *report.warnings]:
        kind = "error" if rule in report.errors else "warning"
        lines += ["", f"## {kind}: {rule.name}: {rule.description}", ""]
        lines += [f"- `{data_dir / path}`" for path in rule.offending[:max_files]]
        if len(rule.offending) > max_files:
            lines.append(f"- ... {len(rule.offending) - max_files} more in summary.json")
    return "\n".join(lines) + "\n"
