"""Great Expectations validation: a clean folder passes; each planted fault fails its rule and
is named, with its full path, in the report."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from meterid.config import ValidateConfig
from meterid.data.manifest import build_manifest, class_folders, read_manifest, write_manifest
from meterid.data.validation import (
    ValidationReport,
    format_report,
    report_to_dict,
    validate_manifest,
)
from tests.data.conftest import (
    CLASSES,
    html_named_jpg,
    make_dataset,
    noise_image,
    png_claiming,
    save,
    truncated_jpeg,
)

RULE_NAMES = [
    "has_images", "files_decode", "min_width", "min_height", "rgb_convertible", "accepted_format",
    "preferred_format", "extension_matches_format", "label_in_classes", "classes_present",
    "class_min_count", "same_image_two_labels", "exact_copy_in_class",
    "no_cross_label_near_duplicate",
]


def _validate(root: Path, rules: ValidateConfig, docs_dir: Path | None = None) -> ValidationReport:
    manifest = build_manifest(root, rules.max_pixels, rules.workers)
    return validate_manifest(manifest, rules, class_folders(root), docs_dir, data_dir=root)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _no_network(*args: object, **kwargs: object) -> None:
    raise AssertionError(f"network access attempted: {args}")


@dataclass
class Run:
    root: Path
    report: ValidationReport
    text: str
    warnings: list[logging.LogRecord] = field(default_factory=list)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory, rules: ValidateConfig) -> Run:
    """A clean folder validated with Data Docs, offline, recording GX's warnings."""
    root = make_dataset(tmp_path_factory.mktemp("clean") / "raw")
    handler = _Records()
    logging.getLogger("great_expectations").addHandler(handler)
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name in ("connect", "connect_ex"):
                patch.setattr(socket.socket, name, _no_network)
            patch.setattr(socket, "getaddrinfo", _no_network)
            report = _validate(root, rules, root.parent / "reports" / "data_docs")
    finally:
        logging.getLogger("great_expectations").removeHandler(handler)
    return Run(root, report, format_report(report, root), handler.records)


def test_clean_folder_passes_every_rule_offline(clean_run: Run):
    report = clean_run.report

    assert report.success, clean_run.text
    assert [rule.name for rule in report.rules] == RULE_NAMES
    assert all(rule.success and rule.offending == [] for rule in report.rules)
    checked = {rule.name: rule.n_checked for rule in report.rules}
    assert checked["files_decode"] == checked["min_width"] == len(CLASSES) * 3
    assert checked["classes_present"] == len(CLASSES)
    assert report.n_files == 9 and "passed" in clean_run.text.splitlines()[0]
    assert clean_run.warnings == []


def test_clean_run_writes_data_docs(clean_run: Run):
    index = clean_run.report.docs_index

    assert index == clean_run.root.parent / "reports" / "data_docs" / "index.html"
    assert index.is_file() and "<html" in index.read_text().lower()
    assert list((index.parent / "validations").rglob("*.html"))
    assert f"Data Docs: {index}" in clean_run.text


def test_summary_is_json(clean_run: Run):
    summary = json.loads(json.dumps(report_to_dict(clean_run.report)))

    assert summary["success"] is True and summary["failed_rules"] == []
    assert [r["name"] for r in summary["rules"]] == RULE_NAMES


@dataclass(frozen=True)
class Fault:
    """A fault planted into a clean folder, the rules it must fail and the paths they name."""

    plant: Callable[[Path], None]
    failed: frozenset[str]
    rule: str
    named: tuple[str, ...]
    config: dict[str, object] = field(default_factory=dict)


def _copy(source: str, target: str) -> Callable[[Path], None]:
    return lambda root: shutil.copy(root / source, root / target)


def _resave(source: str, target: str) -> Callable[[Path], None]:
    """The same picture re-encoded: other bytes, nearly the same perceptual hash."""
    def plant(root: Path) -> None:
        with Image.open(root / source) as image:
            save(image.convert("RGB"), root / target, "JPEG", quality=80)
    return plant


def _empty_folder(root: Path) -> None:
    (root / "delta-d4").mkdir()


def _hidden_only_folder(root: Path) -> None:
    (root / "delta-d4").mkdir()
    (root / "delta-d4" / ".DS_Store").write_bytes(b"\0")


def _small_class(root: Path) -> None:
    for i in range(2):
        save(noise_image(900 + i), root / "delta-d4" / f"img_{i}.jpg", "JPEG")


def _refuse_cmyk(root: Path) -> None:
    save(noise_image(77, mode="CMYK"), root / "gamma-g3" / "cmyk.jpg", "JPEG")


FAULTS: dict[str, Fault] = {
    "html_as_jpg": Fault(lambda r: html_named_jpg(r / "acme-a1" / "broken.jpg"),
                         frozenset({"files_decode"}), "files_decode", ("acme-a1/broken.jpg",)),
    "decompression_bomb": Fault(lambda r: png_claiming(r / "beta-b2" / "bomb.png", 9000, 9000),
                                frozenset({"files_decode"}), "files_decode",
                                ("beta-b2/bomb.png",)),
    "narrow": Fault(lambda r: save(noise_image(50, (16, 64)), r / "beta-b2" / "narrow.png"),
                    frozenset({"min_width"}), "min_width", ("beta-b2/narrow.png",)),
    "short": Fault(lambda r: save(noise_image(51, (64, 16)), r / "beta-b2" / "short.png"),
                   frozenset({"min_height"}), "min_height", ("beta-b2/short.png",)),
    "unconvertible_mode": Fault(_refuse_cmyk, frozenset({"rgb_convertible"}), "rgb_convertible",
                                ("gamma-g3/cmyk.jpg",)),
    "bmp": Fault(lambda r: save(noise_image(52), r / "acme-a1" / "scan.bmp", "BMP"),
                 frozenset({"preferred_format"}), "preferred_format", ("acme-a1/scan.bmp",)),
    "webp_refused_by_choice": Fault(
        lambda r: save(noise_image(58), r / "acme-a1" / "field.webp", "WEBP"),
        frozenset({"accepted_format", "preferred_format"}), "accepted_format",
        ("acme-a1/field.webp",), {"accepted_formats": ["JPEG", "PNG"]}),
    "bmp_named_jpg": Fault(lambda r: save(noise_image(59), r / "acme-a1" / "scan.jpg", "BMP"),
                           frozenset({"preferred_format", "extension_matches_format"}),
                           "extension_matches_format", ("acme-a1/scan.jpg",)),
    "outside_class_folder": Fault(lambda r: save(noise_image(53), r / "loose.jpg", "JPEG"),
                                  frozenset({"label_in_classes"}), "label_in_classes",
                                  ("loose.jpg",)),
    "unexpected_class": Fault(lambda r: None, frozenset({"label_in_classes"}), "label_in_classes",
                              tuple(f"gamma-g3/img_{i}.{e}" for i, e in
                                    enumerate(("jpeg", "png", "jpeg"))),
                              {"expected_classes": ["acme-a1", "beta-b2"]}),
    "empty_class_folder": Fault(_empty_folder, frozenset({"classes_present"}), "classes_present",
                                ("delta-d4",)),
    "hidden_files_only": Fault(_hidden_only_folder, frozenset({"classes_present"}),
                               "classes_present", ("delta-d4",)),
    "expected_class_missing": Fault(lambda r: None, frozenset({"classes_present"}),
                                    "classes_present", ("zeta-z9",),
                                    {"expected_classes": [*CLASSES, "zeta-z9"]}),
    "small_class": Fault(_small_class, frozenset({"class_min_count"}), "class_min_count",
                         ("delta-d4/img_0.jpg", "delta-d4/img_1.jpg")),
    "corrupt_leaves_too_few": Fault(lambda r: truncated_jpeg(r / "acme-a1" / "img_0.jpeg"),
                                    frozenset({"files_decode", "class_min_count"}),
                                    "class_min_count",
                                    ("acme-a1/img_0.jpeg", "acme-a1/img_1.png",
                                     "acme-a1/img_2.jpeg")),
    "exact_copy_same_class": Fault(_copy("acme-a1/img_0.jpeg", "acme-a1/copy.jpeg"),
                                   frozenset({"exact_copy_in_class"}), "exact_copy_in_class",
                                   ("acme-a1/copy.jpeg", "acme-a1/img_0.jpeg")),
    "exact_copy_other_class": Fault(_copy("acme-a1/img_0.jpeg", "beta-b2/copied.jpeg"),
                                    frozenset({"same_image_two_labels",
                                               "no_cross_label_near_duplicate"}),
                                    "same_image_two_labels",
                                    ("acme-a1/img_0.jpeg", "beta-b2/copied.jpeg")),
    "near_copy_other_class": Fault(_resave("acme-a1/img_1.png", "beta-b2/lookalike.jpg"),
                                   frozenset({"no_cross_label_near_duplicate"}),
                                   "no_cross_label_near_duplicate",
                                   ("acme-a1/img_1.png", "beta-b2/lookalike.jpg")),
    "nothing_at_all": Fault(lambda r: shutil.rmtree(r) or r.mkdir(), frozenset({"has_images"}),
                            "has_images", ()),
}


@pytest.fixture
def refuse_cmyk(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Simulate a mode Pillow cannot convert (every real file mode converts): refuse CMYK."""
    from meterid.photos import images

    original = images.to_rgb

    def to_rgb(image: Image.Image) -> Image.Image:
        if image.mode == "CMYK":
            raise images.ImageError("cannot convert mode CMYK to RGB: simulated")
        return original(image)

    monkeypatch.setattr(images, "to_rgb", to_rgb)
    yield


@pytest.mark.parametrize("fault_name", sorted(FAULTS))
def test_planted_fault_fails_its_rule_and_names_the_file(
    fault_name: str, tmp_path: Path, rules: ValidateConfig, refuse_cmyk: None
):
    fault = FAULTS[fault_name]
    root = make_dataset(tmp_path / "raw")
    fault.plant(root)

    report = _validate(root, rules.model_copy(update=fault.config))
    text = format_report(report, root)

    blocking = {name for name in fault.failed if rules.severity[name] == "error"}
    assert report.success == (not blocking), text
    assert {rule.name for rule in report.failed} == fault.failed, text
    assert {rule.name for rule in report.errors} == blocking
    rule = next(r for r in report.rules if r.name == fault.rule)
    assert rule.offending == sorted(fault.named)
    assert all(rule.details[path] for path in fault.named if fault.rule != "has_images")
    for path in fault.named:
        assert f"{root / path}" in text
    assert ("FAILED" if blocking else "passed with") in text.splitlines()[0]
    strict = _validate(root, rules.model_copy(update={**fault.config, "strict": True}))
    assert not strict.success and {r.name for r in strict.errors} == fault.failed


def test_failure_details_say_why(tmp_path: Path, rules: ValidateConfig):
    root = make_dataset(tmp_path / "raw")
    FAULTS["html_as_jpg"].plant(root)
    FAULTS["near_copy_other_class"].plant(root)

    text = format_report(_validate(root, rules), root)

    assert f"{root / 'acme-a1/broken.jpg'}: not an image (cannot identify image file" in text
    assert (f"{root / 'beta-b2/lookalike.jpg'}: looks like acme-a1/img_1.png "
            "(label 'acme-a1')") in text


def test_near_duplicate_within_a_class_is_allowed(tmp_path: Path, rules: ValidateConfig):
    root = make_dataset(tmp_path / "raw")
    _resave("acme-a1/img_1.png", "acme-a1/again.jpg")(root)

    report = _validate(root, rules)

    assert report.success, format_report(report, root)


def test_failed_run_writes_data_docs_naming_the_file(tmp_path: Path, rules: ValidateConfig):
    root = make_dataset(tmp_path / "raw")
    html_named_jpg(root / "acme-a1" / "broken.jpg")
    _small_class(root)

    report = _validate(root, rules, tmp_path / "docs")

    assert report.docs_index == tmp_path / "docs" / "index.html" and report.docs_index.is_file()
    pages = [p.read_text() for p in (tmp_path / "docs" / "validations").rglob("*.html")]
    assert len(pages) == 1 and "acme-a1/broken.jpg" in pages[0]
    summary = json.dumps(report_to_dict(report))
    assert "acme-a1/broken.jpg" in summary and "delta-d4/img_1.jpg" in summary


def test_rerun_replaces_the_data_docs_of_the_previous_run(tmp_path: Path, rules: ValidateConfig):
    root = make_dataset(tmp_path / "raw")
    html_named_jpg(root / "acme-a1" / "broken.jpg")
    _validate(root, rules, tmp_path / "docs")
    (root / "acme-a1" / "broken.jpg").unlink()

    report = _validate(root, rules, tmp_path / "docs")

    pages = [p.read_text() for p in (tmp_path / "docs" / "validations").rglob("*.html")]
    assert report.success and len(pages) == 1 and "broken.jpg" not in pages[0]


def test_manifest_read_back_from_csv_validates_the_same(tmp_path: Path, rules: ValidateConfig):
    root = make_dataset(tmp_path / "raw")
    FAULTS["exact_copy_other_class"].plant(root)
    save(noise_image(60), root / "loose.jpg", "JPEG")
    manifest = build_manifest(root, rules.max_pixels, rules.workers)
    write_manifest(manifest, tmp_path / "manifest.csv")

    direct = validate_manifest(manifest, rules, class_folders(root), None)
    again = validate_manifest(read_manifest(tmp_path / "manifest.csv"), rules,
                              class_folders(root), None)

    assert again == direct and not direct.success


def test_importing_the_data_modules_loads_neither_gx_nor_prefect():
    code = ("import sys, meterid.photos.images, meterid.data.manifest, meterid.data.validation; "
            "print(sorted(m for m in ('great_expectations', 'prefect') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_warnings_do_not_block_but_strict_makes_them_errors(tmp_path: Path, rules: ValidateConfig,
                                                            params, monkeypatch):
    """`meterid validate` on a folder with a WEBP, a BMP named .jpg and an in-class copy: exit 0,
    each warning named; with --strict, exit 1. Data Docs carry the severities."""
    from typer.testing import CliRunner

    from meterid.cli import app
    from tests.conftest import write_params

    root = make_dataset(tmp_path / "data" / "raw")
    save(noise_image(60), root / "acme-a1" / "field.webp", "WEBP")
    save(noise_image(61), root / "beta-b2" / "scan.jpg", "BMP")
    _copy("acme-a1/img_0.jpeg", "acme-a1/again.jpeg")(root)
    write_params(tmp_path, params.model_copy(update={"validate_": rules}))
    monkeypatch.chdir(tmp_path)

    passed = CliRunner().invoke(app, ["validate"])
    assert passed.exit_code == 0, passed.output
    assert "): passed with 3 warning(s)" in passed.output
    assert "data/raw/beta-b2/scan.jpg: named .jpg, is BMP" in passed.output
    assert "data/raw/acme-a1/field.webp: format WEBP" in passed.output
    assert "kept once, the split drops the other copies" in passed.output
    pages = " ".join(p.read_text() for p in (tmp_path / "reports").rglob("validations/**/*.html"))
    assert "WARNING: each file" in pages and "ERROR: every file decodes" in pages
    strict = CliRunner().invoke(app, ["validate", "--strict"])
    assert strict.exit_code == 1 and "FAILED (3 error(s), warnings count" in strict.output


def test_embeddings_confirm_a_copy_and_clear_lookalike_candidates(tmp_path: Path,
                                                                 rules: ValidateConfig):
    """Every cross-label pair made a phash candidate (distance 64): the backbone confirms only
    the copy (the same pixels saved as BMP: cosine 1), not the other classes' photos. The pair
    is drawn side by side on a contact sheet."""
    from meterid.data.steps import check_manifest

    root = make_dataset(tmp_path / "raw")
    with Image.open(root / "acme-a1/img_1.png") as image:
        save(image.convert("RGB"), root / "beta-b2/lookalike.bmp", "BMP")
    loose = rules.model_copy(update={"near_duplicate_max_distance": 64,
                                     "near_duplicate_min_cosine": 0.999})
    manifest = build_manifest(root, loose.max_pixels, loose.workers)
    report = check_manifest(manifest, root, tmp_path / "manifest.csv", tmp_path / "reports",
                            loose)
    pairs = {frozenset((p.path, p.other)) for p in report.near_duplicates}
    assert pairs == {frozenset(("acme-a1/img_1.png", "beta-b2/lookalike.bmp"))}
    assert all(p.cosine >= 0.999 for p in report.near_duplicates)
    assert (tmp_path / "reports" / "near_duplicates.png").stat().st_size > 0
    unconfirmed = _validate(root, loose.model_copy(update={"near_duplicate_min_cosine": None}))
    rule = next(r for r in unconfirmed.rules if r.name == "no_cross_label_near_duplicate")
    assert len(rule.offending) == 10  # phash alone at 64 bits: every file looks like another
