"""File-level data steps: the folder fingerprint behind the manifest cache, stale manifests,
and the Prefect retry condition (I/O errors retried, data errors not)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from meterid.config import Params
from meterid.data.manifest import read_manifest
from meterid.data.steps import current_manifest, folder_fingerprint, folder_is_empty


@pytest.fixture
def images(tmp_path: Path, small_demo: Path) -> Path:
    folder = tmp_path / "raw"
    classes = sorted((small_demo / "raw").iterdir())[:2]
    for source in classes:
        shutil.copytree(source, folder / source.name)
    return folder


def test_fingerprint_changes_with_any_file_change(images: Path):
    before = folder_fingerprint(images)
    assert folder_fingerprint(images) == before
    first = sorted(images.rglob("*.jpg"))[0]
    os.utime(first, ns=(1, 1))
    touched = folder_fingerprint(images)
    assert touched != before
    (images / first.parent.name / "new.jpg").write_bytes(first.read_bytes())
    added = folder_fingerprint(images)
    assert added != touched
    (images / ".DS_Store").write_bytes(b"x")  # hidden files are not data
    assert folder_fingerprint(images) == added


def test_folder_is_empty(tmp_path: Path, images: Path):
    assert folder_is_empty(tmp_path / "missing")
    (tmp_path / "empty" / ".hidden").mkdir(parents=True)
    assert folder_is_empty(tmp_path / "empty")
    assert not folder_is_empty(images)


def test_stale_manifest_is_rebuilt(images: Path, tmp_path: Path, params: Params):
    manifest_path = tmp_path / "manifest.csv"
    first = current_manifest(images, manifest_path, params.validate_)
    assert manifest_path.is_file() and len(first) == len(list(images.rglob("*.jpg")))
    extra = sorted(images.rglob("*.jpg"))[0]
    (extra.parent / "added.jpg").write_bytes(extra.read_bytes())
    rebuilt = current_manifest(images, manifest_path, params.validate_)
    assert len(rebuilt) == len(first) + 1
    assert len(read_manifest(manifest_path)) == len(rebuilt)


class _State:
    def __init__(self, error: Exception):
        self.error = error

    def result(self) -> None:
        raise self.error


@pytest.mark.parametrize("error,retried", [(OSError("stale NFS handle"), True),
                                           (ValueError("bad data"), False)])
def test_only_io_errors_are_retried(error: Exception, retried: bool):
    from meterid.tasks.retry import retry_on_io_error

    assert retry_on_io_error(None, None, _State(error)) is retried
