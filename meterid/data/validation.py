"""Validate the image manifest with Great Expectations (GX 1.x, ephemeral context, offline).

Each rule is one expectation, on a manifest column or on a column derived here (the class size,
the file a near-duplicate comes from), run with ``result_format=COMPLETE`` and the ``path``
column as the unexpected index, so a failed rule names every offending file. Every rule has a
severity (``validate.severity``, also the expectation's GX severity, so Data Docs show it): a
failed *error* blocks the pipeline, a failed *warning* is reported and does not, unless
``validate.strict``. Great Expectations is imported only when validating: importing this module
stays cheap.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pandas as pd

from meterid.config import Severity, ValidateConfig
from meterid.data.duplicates import near_duplicate_pairs

if TYPE_CHECKING:
    from great_expectations.checkpoint.actions import ValidationAction
    from great_expectations.core import ExpectationValidationResult
    from great_expectations.data_context.store.store import DataDocsSiteConfigTypedDict
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
    severity: Severity = "error"


@dataclass(frozen=True)
class ValidationReport:
    """``success``: no failed error (under ``strict``, no failed rule at all)."""

    success: bool
    rules: list[RuleResult]
    docs_index: Path | None
    n_files: int = 0
    strict: bool = False
    near_duplicates: tuple[NearDuplicate, ...] = ()

    @property
    def failed(self) -> list[RuleResult]:
        return [rule for rule in self.rules if not rule.success]

    @property
    def errors(self) -> list[RuleResult]:
        return [r for r in self.failed if r.severity == "error" or self.strict]

    @property
    def warnings(self) -> list[RuleResult]:
        return [r for r in self.failed if r.severity == "warning" and not self.strict]


@dataclass(frozen=True)
class _Rule:
    """A rule: its expectation and how to explain an offending row of the checked frame."""

    name: str
    description: str
    expectation: Expectation
    explain: Callable[[pd.Series], str]
    severity: Severity


def expected_classes(rules: ValidateConfig, class_folders: list[str]) -> list[str]:
    """The class set: ``expected_classes`` when configured, else the class folders found."""
    return sorted(rules.expected_classes or class_folders)


def _as_objects(series: pd.Series) -> pd.Series:
    """Plain Python values with None for missing, which GX handles the same in every dtype."""
    return series.astype(object).where(series.notna(), None)


def _exact_copy_of(manifest: pd.DataFrame, same_label: bool) -> pd.Series:
    """For each file sharing its bytes with another of the same (or another) label, the first
    such other path."""
    other: dict[str, str] = {}
    for _, group in manifest.dropna(subset=["sha256"]).groupby("sha256"):
        rows = list(zip(group["path"], group["label"], strict=True))
        for path, label in rows:
            match = next((q for q, other_label in rows
                          if q != path and (other_label == label) == same_label), None)
            if match is not None:
                other[path] = match
    return manifest["path"].map(other)


def _extension_mismatch(manifest: pd.DataFrame) -> pd.Series:
    """"named .jpg, is BMP" where the file's extension names another format than its content
    (Pillow's own extension table; an MPO, a phone's multi-picture JPEG, may be named .jpg)."""
    from PIL import Image

    by_extension = Image.registered_extensions()

    def mismatch(path: str, fmt: object) -> str | None:
        suffix = Path(path).suffix.lower()
        named = by_extension.get(suffix)
        if not isinstance(fmt, str) or named is None or named == fmt:
            return None
        if {named, fmt} == {"JPEG", "MPO"}:
            return None
        return f"named {suffix}, is {fmt}"

    return pd.Series([mismatch(p, f) for p, f in zip(manifest["path"], manifest["format"],
                                                      strict=True)],
                     index=manifest.index, dtype=object)


@dataclass(frozen=True)
class NearDuplicate:
    """Two files of different labels that look alike: phash within the distance, and (when
    configured) pretrained-backbone embeddings at least ``min_cosine`` similar."""

    path: str
    other: str
    cosine: float | None  # None: phash only


def near_duplicates_across_labels(manifest: pd.DataFrame, rules: ValidateConfig,
                                  data_dir: Path | None) -> list[NearDuplicate]:
    """Perceptual hashes find the pairs cheaply; with ``near_duplicate_min_cosine`` set, the
    pretrained backbone's embeddings must confirm each (different products photographed on
    white backgrounds come within a few phash bits of each other; on the demo's sibling meters
    the embeddings did not tell them apart better, see the benchmark)."""
    paths, labels = manifest["path"].tolist(), manifest["label"].tolist()
    candidates = [(int(i), int(j)) for i, j in near_duplicate_pairs(
        manifest["phash"].tolist(), rules.near_duplicate_max_distance) if labels[i] != labels[j]]
    if rules.near_duplicate_min_cosine is None or not candidates:
        return [NearDuplicate(paths[i], paths[j], None) for i, j in candidates]
    if data_dir is None:
        raise ValueError("confirming near-duplicates (validate.near_duplicate_min_cosine) needs "
                         "the image folder")
    from meterid.model.pretrained import PretrainedEmbedder

    rows = sorted({k for pair in candidates for k in pair})
    embed = PretrainedEmbedder(rules.near_duplicate_backbone, 224, rules.max_pixels)
    vectors = dict(zip(rows, embed([Path(data_dir) / paths[k] for k in rows]), strict=True))
    pairs = [NearDuplicate(paths[i], paths[j], round(float(vectors[i] @ vectors[j]), 4))
             for i, j in candidates]
    confirmed = [p for p in pairs
                 if p.cosine is not None and p.cosine >= rules.near_duplicate_min_cosine]
    log.info("near-duplicates across labels: %d phash candidate pair(s), %d confirmed by "
             "embeddings (cosine >= %s)", len(pairs), len(confirmed),
             rules.near_duplicate_min_cosine)
    return confirmed


def _near_duplicate_of(manifest: pd.DataFrame, pairs: list[NearDuplicate]) -> pd.Series:
    """For each file that looks like a file of another label, that file's path."""
    other: dict[str, str] = {}
    for pair in pairs:
        other.setdefault(pair.path, pair.other)
        other.setdefault(pair.other, pair.path)
    return manifest["path"].map(other)


def _class_count(manifest: pd.DataFrame, classes: list[str]) -> pd.Series:
    """Usable (decoded) files in each row's class; missing for labels that are not classes."""
    usable = manifest.loc[manifest["error"].isna(), "label"].value_counts()
    counts = manifest["label"].map(lambda label: int(usable.get(label, 0))).astype("Int64")
    return counts.where(manifest["label"].isin(classes))


def checked_frame(manifest: pd.DataFrame, rules: ValidateConfig, classes: list[str],
                  near_duplicates: list[NearDuplicate]) -> pd.DataFrame:
    """The manifest plus the derived columns the rules check, as plain Python objects."""
    manifest = manifest.reset_index(drop=True)
    label = manifest["label"].fillna("").astype(str)
    manifest = manifest.assign(label=label)
    frame = manifest.assign(
        rgb_convertible=manifest["rgb_convertible"].where(manifest["error"].isna()),
        class_count=_class_count(manifest, classes),
        copy_in_class_of=_exact_copy_of(manifest, same_label=True),
        copy_other_label_of=_exact_copy_of(manifest, same_label=False),
        extension_mismatch=_extension_mismatch(manifest),
        near_duplicate_of=_near_duplicate_of(manifest, near_duplicates),
    )
    label_of = dict(zip(manifest["path"], label, strict=True))
    frame["near_duplicate_label"] = frame["near_duplicate_of"].map(label_of)
    frame["copy_other_label"] = frame["copy_other_label_of"].map(label_of)
    return frame.apply(_as_objects)


def _size(row: pd.Series) -> str:
    return f"{row['width']}x{row['height']} px"


def _outside(row: pd.Series) -> str:
    label = row["label"]
    return f"label {label!r} is not a class" if label else "file outside any class folder"


def _rules(rules: ValidateConfig, classes: list[str]) -> list[_Rule]:
    import great_expectations.expectations as gxe
    from great_expectations.expectations.metadata_types import FailureSeverity

    def spec(name: str, description: str, kind: type[Expectation],
             explain: Callable[[pd.Series], str], **kwargs: Any) -> _Rule:
        severity = rules.severity[name]
        # The severity leads the description: GX's Data Docs render descriptions, not severity.
        expectation = kind(**kwargs, meta={"rule": name, "severity": severity},
                           description=f"{severity.upper()}: {description}",
                           severity=FailureSeverity.CRITICAL if severity == "error"
                           else FailureSeverity.WARNING)
        return _Rule(name, description, expectation, explain, severity)

    min_n, distance = rules.min_images_per_class, rules.near_duplicate_max_distance
    cosine = rules.near_duplicate_min_cosine
    accepted, preferred = sorted(rules.accepted_formats), sorted(rules.preferred_formats)
    small = (" (upscaled to the model's input; lower validate.min_width/min_height to accept "
             "such images without a warning)")
    return [
        spec("has_images", "the image folder holds at least one file",
             gxe.ExpectTableRowCountToBeBetween, lambda r: "", min_value=1),
        spec("files_decode", "every file decodes as an image",
             gxe.ExpectColumnValuesToBeNull, lambda r: r["error"], column="error"),
        spec("min_width", f"images are at least {rules.min_width} px wide",
             gxe.ExpectColumnValuesToBeBetween, lambda r: _size(r) + small,
             column="width", min_value=rules.min_width),
        spec("min_height", f"images are at least {rules.min_height} px high",
             gxe.ExpectColumnValuesToBeBetween, lambda r: _size(r) + small,
             column="height", min_value=rules.min_height),
        spec("rgb_convertible", "every decoded image converts to RGB",
             gxe.ExpectColumnValuesToBeInSet, lambda r: f"mode {r['mode']} has no RGB conversion",
             column="rgb_convertible", value_set=[True]),
        spec("accepted_format", f"image formats are among {', '.join(accepted)}",
             gxe.ExpectColumnValuesToBeInSet, lambda r: f"format {r['format']}",
             column="format", value_set=accepted),
        spec("preferred_format", f"image formats are among the preferred {', '.join(preferred)}",
             gxe.ExpectColumnValuesToBeInSet, lambda r: f"format {r['format']}",
             column="format", value_set=preferred),
        spec("extension_matches_format", "each file's extension names its real format",
             gxe.ExpectColumnValuesToBeNull, lambda r: r["extension_mismatch"],
             column="extension_mismatch"),
        spec("label_in_classes", "every file is in a class folder of the class set",
             gxe.ExpectColumnValuesToBeInSet, _outside, column="label", value_set=classes),
        spec("classes_present", "every class of the class set has at least one file",
             gxe.ExpectColumnDistinctValuesToContainSet, lambda r: "",
             column="label", value_set=classes),
        spec("class_min_count", f"every class has at least {min_n} decodable images",
             gxe.ExpectColumnValuesToBeBetween,
             lambda r: f"class {r['label']!r} has {r['class_count']} decodable image(s)",
             column="class_count", min_value=min_n),
        spec("same_image_two_labels", "no file has the same bytes as a file of another label",
             gxe.ExpectColumnValuesToBeNull,
             lambda r: f"same bytes as {r['copy_other_label_of']} (label "
                       f"{r['copy_other_label']!r})", column="copy_other_label_of"),
        spec("exact_copy_in_class", "no file has the same bytes as another of its class",
             gxe.ExpectColumnValuesToBeNull,
             lambda r: f"same bytes as {r['copy_in_class_of']}: kept once, the split drops "
                       "the other copies", column="copy_in_class_of"),
        spec("no_cross_label_near_duplicate",
             f"no image is within phash distance {distance} of an image of another label"
             + (f" with embeddings at cosine >= {cosine}" if cosine is not None else ""),
             gxe.ExpectColumnValuesToBeNull,
             lambda r: f"looks like {r['near_duplicate_of']} (label {r['near_duplicate_label']!r})",
             column="near_duplicate_of"),
    ]


def check_severities(rules: ValidateConfig) -> None:
    """Every rule needs a severity in params.yaml, and only rules that exist have one."""
    problems = []
    if missing := sorted(set(RULES) - set(rules.severity)):
        problems.append(f"no severity for {', '.join(missing)}")
    if unknown := sorted(set(rules.severity) - set(RULES)):
        problems.append(f"unknown rule(s) {', '.join(unknown)}")
    if problems:
        raise ValueError(f"validate.severity: {'; '.join(problems)} (the rules: "
                         f"{', '.join(RULES)})")


RULES = ("has_images", "files_decode", "min_width", "min_height", "rgb_convertible",
         "accepted_format", "preferred_format", "extension_matches_format", "label_in_classes",
         "classes_present", "class_min_count", "same_image_two_labels", "exact_copy_in_class",
         "no_cross_label_near_duplicate")


def _docs_site(docs_dir: Path) -> dict[str, Any]:
    return {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                          "base_directory": str(docs_dir.resolve())},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }


def _rule_name(result: ExpectationValidationResult) -> str:
    config = result.expectation_config
    if config is None or not config.meta:
        raise ValueError(f"a validation result without its rule: {result}")
    return str(config.meta["rule"])


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
    actions: list[ValidationAction] = []
    if docs_dir is not None:
        context.add_data_docs_site(DOCS_SITE, cast("DataDocsSiteConfigTypedDict",
                                                   _docs_site(docs_dir)))
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
                      _n_checked(rule, result, len(classes)), details, rule.severity)


def _mtime(path: Path | None) -> int | None:
    return path.stat().st_mtime_ns if path is not None and path.is_file() else None


def validate_manifest(manifest: pd.DataFrame, rules: ValidateConfig, class_folders: list[str],
                      docs_dir: Path | None, data_dir: Path | None = None) -> ValidationReport:
    """Run every rule on the manifest; Data Docs HTML goes to ``docs_dir`` when given.
    ``data_dir`` holds the images (for embeddings that confirm near-duplicates)."""
    check_severities(rules)
    classes = expected_classes(rules, class_folders)
    manifest = manifest.reset_index(drop=True)
    near = near_duplicates_across_labels(
        manifest.assign(label=manifest["label"].fillna("").astype(str)), rules, data_dir)
    frame = checked_frame(manifest, rules, classes, near)
    specs = _rules(rules, classes)
    docs_index = None if docs_dir is None else Path(docs_dir) / "index.html"
    previous = _mtime(docs_index)
    results = {_rule_name(r): r
               for r in _run_checkpoint(frame, [s.expectation for s in specs], docs_dir)}
    outcomes = [_rule_result(spec, results[spec.name], classes, frame) for spec in specs]
    if docs_index is not None and _mtime(docs_index) in (None, previous):
        raise RuntimeError(f"Great Expectations did not write Data Docs at {docs_index}")
    blocking = [o for o in outcomes if not o.success and (o.severity == "error" or rules.strict)]
    report = ValidationReport(not blocking, outcomes, docs_index, len(manifest), rules.strict,
                              tuple(near))
    log.info("validation %s: %d error(s), %d warning(s) of %d rules",
             "passed" if report.success else "FAILED", len(report.errors),
             len(report.warnings), len(outcomes))
    return report


def verdict(report: ValidationReport) -> str:
    if not report.success:
        return (f"FAILED ({len(report.errors)} error(s)"
                + (", warnings count as errors: strict" if report.strict else "")
                + (f", {len(report.warnings)} warning(s))" if report.warnings else ")"))
    return f"passed with {len(report.warnings)} warning(s)" if report.warnings else "passed"


def _status(rule: RuleResult, report: ValidationReport) -> str:
    if rule.success:
        return "ok     "
    return "ERROR  " if rule in report.errors else "WARNING"


def format_report(report: ValidationReport, data_dir: Path) -> str:
    """A human summary: one line per rule, then every offending file, errors before warnings."""
    lines = [f"validation of {data_dir} ({report.n_files} files): {verdict(report)}"]
    for rule in report.rules:
        lines.append(f"  {_status(rule, report)} {rule.name}: {rule.description} "
                     f"({len(rule.offending)} offending of {rule.n_checked} checked)")
    for rule in [*report.errors, *report.warnings]:
        lines.append(f"{_status(rule, report).strip().lower()} {rule.name}: {rule.description}")
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
        "strict": report.strict,
        "failed_rules": [rule.name for rule in report.failed],
        "errors": [rule.name for rule in report.errors],
        "warnings": [rule.name for rule in report.warnings],
        "data_docs": str(report.docs_index) if report.docs_index else None,
        "rules": [{"name": r.name, "description": r.description, "success": r.success,
                   "severity": r.severity,
                   "n_checked": r.n_checked, "n_offending": len(r.offending),
                   "offending": [{"path": p, "why": r.details.get(p, "")} for p in r.offending]}
                  for r in report.rules],
    }
