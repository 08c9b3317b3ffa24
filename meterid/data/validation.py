"""Validate the image manifest with Great Expectations (GX 1.x, ephemeral context, offline).

Each rule is one expectation, on a manifest column or on a column derived here (the class size,
the file a near-duplicate comes from), run with ``result_format=COMPLETE`` and the ``path``
column as the unexpected index, so a failed rule names every offending file. Great Expectations
is imported only when validating: importing this module stays cheap.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from meterid.config import ValidateConfig
from meterid.data.duplicates import near_duplicate_pairs

if TYPE_CHECKING:
    from great_expectations.core import ExpectationValidationResult
    from great_expectations.expectations import Expectation

log = logging.getLogger(__name__)

DOCS_SITE = "meterid"  # the ephemeral context already has "local_site" (a temporary folder)
_INDEX_COLUMN = "path"


@dataclass(frozen=True)
class RuleResult:
    """One rule's outcome; ``details`` says why each offending path fails."""

    name: str
    description: str
    success: bool
    offending: list[str]
    n_checked: int
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ValidationReport:
    success: bool
    rules: list[RuleResult]
    docs_index: Path | None
    n_files: int = 0

    @property
    def failed(self) -> list[RuleResult]:
        return [rule for rule in self.rules if not rule.success]


@dataclass(frozen=True)
class _Rule:
    """A rule: its expectation and how to explain an offending row of the checked frame."""

    name: str
    description: str
    expectation: Expectation
    explain: Callable[[pd.Series], str]


def expected_classes(rules: ValidateConfig, class_folders: list[str]) -> list[str]:
    """The class set: ``expected_classes`` when configured, else the class folders found."""
    return sorted(rules.expected_classes or class_folders)


def _as_objects(series: pd.Series) -> pd.Series:
    """Plain Python values with None for missing, which GX handles the same in every dtype."""
    return series.astype(object).where(series.notna(), None)


def _exact_duplicate_of(manifest: pd.DataFrame) -> pd.Series:
    """For each file sharing its bytes with another, the first other such path."""
    paths = manifest.groupby("sha256", dropna=True)["path"].agg(list)
    other = {p: next(q for q in group if q != p) for group in paths if len(group) > 1
             for p in group}
    return manifest["path"].map(other)


def _near_duplicate_of(manifest: pd.DataFrame, max_distance: int) -> pd.Series:
    """For each file that looks like a file of another label, that file's path."""
    paths, labels = manifest["path"].tolist(), manifest["label"].tolist()
    other: dict[int, str] = {}
    for i, j in near_duplicate_pairs(manifest["phash"].tolist(), max_distance):
        if labels[i] != labels[j]:
            other.setdefault(int(i), paths[j])
            other.setdefault(int(j), paths[i])
    return pd.Series([other.get(i) for i in range(len(paths))], index=manifest.index,
                     dtype=object)


def _class_count(manifest: pd.DataFrame, classes: list[str]) -> pd.Series:
    """Usable (decoded) files in each row's class; missing for labels that are not classes."""
    usable = manifest.loc[manifest["error"].isna(), "label"].value_counts()
    counts = manifest["label"].map(lambda label: int(usable.get(label, 0))).astype("Int64")
    return counts.where(manifest["label"].isin(classes))


def checked_frame(manifest: pd.DataFrame, rules: ValidateConfig,
                  classes: list[str]) -> pd.DataFrame:
    """The manifest plus the derived columns the rules check, as plain Python objects."""
    manifest = manifest.reset_index(drop=True)
    label = manifest["label"].fillna("").astype(str)
    manifest = manifest.assign(label=label)
    frame = manifest.assign(
        rgb_convertible=manifest["rgb_convertible"].where(manifest["error"].isna()),
        class_count=_class_count(manifest, classes),
        duplicate_of=_exact_duplicate_of(manifest),
        near_duplicate_of=_near_duplicate_of(manifest, rules.near_duplicate_max_distance),
    )
    frame["near_duplicate_label"] = frame["near_duplicate_of"].map(
        dict(zip(manifest["path"], label, strict=True)))
    return frame.apply(_as_objects)


def _size(row: pd.Series) -> str:
    return f"{row['width']}x{row['height']} px"


def _outside(row: pd.Series) -> str:
    label = row["label"]
    return f"label {label!r} is not a class" if label else "file outside any class folder"


def _rules(rules: ValidateConfig, classes: list[str]) -> list[_Rule]:
    import great_expectations.expectations as gxe

    def spec(name: str, description: str, kind: type[Expectation],
             explain: Callable[[pd.Series], str], **kwargs: Any) -> _Rule:
        expectation = kind(**kwargs, meta={"rule": name}, description=description)
        return _Rule(name, description, expectation, explain)

    min_n, formats = rules.min_images_per_class, sorted(rules.allowed_formats)
    distance = rules.near_duplicate_max_distance
    return [
        spec("has_images", "the image folder holds at least one file",
             gxe.ExpectTableRowCountToBeBetween, lambda r: "", min_value=1),
        spec("files_decode", "every file decodes as an image",
             gxe.ExpectColumnValuesToBeNull, lambda r: r["error"], column="error"),
        spec("min_width", f"images are at least {rules.min_width} px wide",
             gxe.ExpectColumnValuesToBeBetween, _size,
             column="width", min_value=rules.min_width),
        spec("min_height", f"images are at least {rules.min_height} px high",
             gxe.ExpectColumnValuesToBeBetween, _size,
             column="height", min_value=rules.min_height),
        spec("rgb_convertible", "every decoded image converts to RGB",
             gxe.ExpectColumnValuesToBeInSet, lambda r: f"mode {r['mode']} has no RGB conversion",
             column="rgb_convertible", value_set=[True]),
        spec("allowed_format", f"image formats are among {', '.join(formats)}",
             gxe.ExpectColumnValuesToBeInSet, lambda r: f"format {r['format']}",
             column="format", value_set=formats),
        spec("label_in_classes", "every file is in a class folder of the class set",
             gxe.ExpectColumnValuesToBeInSet, _outside, column="label", value_set=classes),
        spec("classes_present", "every class of the class set has at least one file",
             gxe.ExpectColumnDistinctValuesToContainSet, lambda r: "",
             column="label", value_set=classes),
        spec("class_min_count", f"every class has at least {min_n} decodable images",
             gxe.ExpectColumnValuesToBeBetween,
             lambda r: f"class {r['label']!r} has {r['class_count']} decodable image(s)",
             column="class_count", min_value=min_n),
        spec("no_exact_duplicate", "no two files have the same bytes (sha256)",
             gxe.ExpectColumnValuesToBeUnique, lambda r: f"same bytes as {r['duplicate_of']}",
             column="sha256"),
        spec("no_cross_label_near_duplicate",
             f"no image is within phash distance {distance} of an image of another label",
             gxe.ExpectColumnValuesToBeNull,
             lambda r: f"looks like {r['near_duplicate_of']} (label {r['near_duplicate_label']!r})",
             column="near_duplicate_of"),
    ]


def _docs_site(docs_dir: Path) -> dict[str, Any]:
    return {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                          "base_directory": str(docs_dir.resolve())},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }


def _run_checkpoint(frame: pd.DataFrame, expectations: list[Expectation],
                    docs_dir: Path | None) -> list[ExpectationValidationResult]:
    """Context -> pandas source -> asset -> batch -> suite -> validation -> checkpoint run."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.enable_analytics(False)
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (context.data_sources.add_pandas("images").add_dataframe_asset("manifest")
             .add_batch_definition_whole_dataframe("all_files"))
    suite = context.suites.add(gx.ExpectationSuite(name="image_manifest"))
    for expectation in expectations:
        suite.add_expectation(expectation)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="image_manifest", data=batch, suite=suite))
    actions = []
    if docs_dir is not None:
        context.add_data_docs_site(DOCS_SITE, _docs_site(docs_dir))
        actions.append(UpdateDataDocsAction(name="data_docs", site_names=[DOCS_SITE]))
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name="image_manifest", validation_definitions=[definition], actions=actions,
        result_format={"result_format": "COMPLETE",
                       "unexpected_index_column_names": [_INDEX_COLUMN]}))
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    return [r for run in result.run_results.values() for r in run.results]


def _offending(rule: _Rule, result: ExpectationValidationResult, classes: list[str],
               frame: pd.DataFrame) -> tuple[list[str], dict[str, str]]:
    """Offending paths and why; for ``classes_present``, the class folders without files."""
    if rule.name == "classes_present":
        missing = sorted(set(classes) - set(frame["label"]))
        return missing, {c: "class has no image files" for c in missing}
    indexed = result.result.get("unexpected_index_list") or []
    paths = sorted({str(item[_INDEX_COLUMN]) for item in indexed})
    rows = frame.set_index(_INDEX_COLUMN, drop=False)
    return paths, {p: rule.explain(rows.loc[p]) for p in paths}


def _n_checked(rule: _Rule, result: ExpectationValidationResult, n_classes: int) -> int:
    if rule.name == "classes_present":
        return n_classes
    if "element_count" not in result.result:
        return int(result.result.get("observed_value") or 0)
    return int(result.result["element_count"]) - int(result.result.get("missing_count") or 0)


def _rule_result(rule: _Rule, result: ExpectationValidationResult, classes: list[str],
                 frame: pd.DataFrame) -> RuleResult:
    if result.exception_info and result.exception_info.get("raised_exception"):
        raise RuntimeError(f"Great Expectations could not evaluate rule {rule.name}: "
                           f"{result.exception_info.get('exception_message')}")
    offending, details = _offending(rule, result, classes, frame)
    return RuleResult(rule.name, rule.description, bool(result.success), offending,
                      _n_checked(rule, result, len(classes)), details)


def _mtime(path: Path | None) -> int | None:
    return path.stat().st_mtime_ns if path is not None and path.is_file() else None


def validate_manifest(manifest: pd.DataFrame, rules: ValidateConfig, class_folders: list[str],
                      docs_dir: Path | None) -> ValidationReport:
    """Run every rule on the manifest; Data Docs HTML goes to ``docs_dir`` when given."""
    classes = expected_classes(rules, class_folders)
    frame = checked_frame(manifest, rules, classes)
    specs = _rules(rules, classes)
    docs_index = None if docs_dir is None else Path(docs_dir) / "index.html"
    previous = _mtime(docs_index)
    results = {r.expectation_config.meta["rule"]: r
               for r in _run_checkpoint(frame, [s.expectation for s in specs], docs_dir)}
    outcomes = [_rule_result(spec, results[spec.name], classes, frame) for spec in specs]
    if docs_index is not None and _mtime(docs_index) in (None, previous):
        raise RuntimeError(f"Great Expectations did not write Data Docs at {docs_index}")
    report = ValidationReport(all(o.success for o in outcomes), outcomes, docs_index,
                              len(manifest))
    log.info("validation %s: %d of %d rules failed", "passed" if report.success else "FAILED",
             len(report.failed), len(outcomes))
    return report


def format_report(report: ValidationReport, data_dir: Path) -> str:
    """A human summary: one line per rule, then every offending file of each failed rule."""
    verdict = "passed" if report.success else f"FAILED ({len(report.failed)} rule(s))"
    lines = [f"validation of {data_dir} ({report.n_files} files): {verdict}"]
    for rule in report.rules:
        status = "ok    " if rule.success else "FAILED"
        lines.append(f"  {status} {rule.name}: {rule.description} "
                     f"({len(rule.offending)} offending of {rule.n_checked} checked)")
    for rule in report.failed:
        lines.append(f"{rule.name}: {rule.description}")
        lines += [f"  {Path(data_dir) / path}" + (f": {why}" if (why := rule.details.get(path))
                                                 else "")
                  for path in rule.offending]
    if report.docs_index is not None:
        lines.append(f"Data Docs: {report.docs_index}")
    return "\n".join(lines)


def report_to_dict(report: ValidationReport) -> dict[str, Any]:
    """A JSON-ready summary (``summary.json``) naming every offending file."""
    return {
        "success": report.success,
        "n_files": report.n_files,
        "failed_rules": [rule.name for rule in report.failed],
        "data_docs": str(report.docs_index) if report.docs_index else None,
        "rules": [{"name": r.name, "description": r.description, "success": r.success,
                   "n_checked": r.n_checked, "n_offending": len(r.offending),
                   "offending": [{"path": p, "why": r.details.get(p, "")} for p in r.offending]}
                  for r in report.rules],
    }
