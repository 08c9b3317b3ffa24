"""The manifest: one typed row per visible file, bad files included, stable through CSV."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from meterid.data.manifest import (
    COLUMNS,
    build_manifest,
    class_folders,
    read_manifest,
    write_manifest,
)
from tests.data.conftest import html_named_jpg, make_dataset, noise_image, save, truncated_jpeg

LIMIT = 1_000_000


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Two classes plus every layout edge case: nested, root-level, hidden, empty, bad files."""
    root = make_dataset(tmp_path / "raw", classes=("acme-a1", "NA"), per_class=2)
    save(noise_image(7), root / "acme-a1" / "nested" / "deep.jpg", "JPEG")
    save(noise_image(8), root / "loose.png", "PNG")
    html_named_jpg(root / "acme-a1" / "page.jpg")
    truncated_jpeg(root / "NA" / "cut.jpg")
    (root / "acme-a1" / ".DS_Store").write_bytes(b"\0\1")
    save(noise_image(9), root / ".cache" / "thumb.jpg", "JPEG")
    (root / "empty-class").mkdir()
    return root


def test_rows_cover_every_visible_file_sorted_with_relative_paths(tree: Path):
    manifest = build_manifest(tree, LIMIT, workers=2)

    assert list(manifest.columns) == COLUMNS
    assert manifest["path"].tolist() == [
        "NA/cut.jpg", "NA/img_0.jpeg", "NA/img_1.png",
        "acme-a1/img_0.jpeg", "acme-a1/img_1.png", "acme-a1/nested/deep.jpg",
        "acme-a1/page.jpg", "loose.png",
    ]
    labels = dict(zip(manifest["path"], manifest["label"], strict=True))
    assert labels["acme-a1/nested/deep.jpg"] == "acme-a1"
    assert labels["loose.png"] == "" and labels["NA/cut.jpg"] == "NA"


def test_bad_files_are_rows_with_their_error(tree: Path):
    manifest = build_manifest(tree, LIMIT, workers=2).set_index("path")

    assert manifest.loc["acme-a1/page.jpg", "error"].startswith("not an image")
    assert manifest.loc["NA/cut.jpg", "error"].startswith("truncated or corrupt image data")
    assert manifest["error"].notna().sum() == 2
    good = manifest[manifest["error"].isna()]
    assert good["rgb_convertible"].all() and good["phash"].str.len().eq(16).all()
    assert (good["width"] == 64).all() and (good["height"] == 48).all()
    assert set(good["format"]) == {"JPEG", "PNG"}


def test_class_folders_are_the_visible_top_level_folders(tree: Path):
    assert class_folders(tree) == ["NA", "acme-a1", "empty-class"]


def test_csv_round_trip_keeps_values_and_dtypes(tree: Path, tmp_path: Path):
    manifest = build_manifest(tree, LIMIT, workers=2)
    path = tmp_path / "out" / "manifest.csv"

    write_manifest(manifest, path)
    again = read_manifest(path)

    pd.testing.assert_frame_equal(again, manifest)
    assert again.loc[again["path"] == "NA/img_0.jpeg", "label"].item() == "NA"
    assert again.loc[again["path"] == "loose.png", "label"].item() == ""
    write_manifest(again, tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_bytes() == path.read_bytes()


def test_worker_count_does_not_change_the_manifest(tree: Path):
    pd.testing.assert_frame_equal(build_manifest(tree, LIMIT, workers=1),
                                  build_manifest(tree, LIMIT, workers=4))


def test_progress_off_a_terminal_is_a_log_line_and_never_stdout(
        tree: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.INFO, logger="meterid.progress"):
        build_manifest(tree, LIMIT, workers=2)

    assert any(r.getMessage().startswith(f"inspecting {tree}: 8/8 img (100%)")
               for r in caplog.records)
    captured = capsys.readouterr()
    assert captured.out == "" and "\r" not in captured.err


def test_empty_folder_gives_an_empty_typed_manifest(tmp_path: Path):
    manifest = build_manifest(tmp_path, LIMIT, workers=2)

    assert manifest.empty and list(manifest.columns) == COLUMNS
    assert str(manifest["width"].dtype) == "Int64"


def test_missing_folder_is_an_error(tmp_path: Path):
    with pytest.raises(NotADirectoryError, match="no such image folder"):
        build_manifest(tmp_path / "absent", LIMIT, workers=1)


def test_read_manifest_rejects_other_csv(tmp_path: Path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")

    with pytest.raises(ValueError, match="not a manifest"):
        read_manifest(path)
