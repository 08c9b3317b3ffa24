"""Reviewed field photos back into the dataset with the real Great Expectations and DVC: the
photos reviewers agree on join their class (the copy kept for review or fetched again,
re-validated, `dvc add`), the rest stay out, and exporting twice adds nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from meterid.config import DemoConfig, Params, load_params
from meterid.core import OK, ScoredRow
from meterid.photos.images import file_sha256
from meterid.review.photos import ReviewPhotos
from meterid.review.queue import review_queue
from meterid.review.store import NEW_TYPE, open_store
from tests.conftest import write_params

pytestmark = pytest.mark.slow


def _field_photo(source: Path, target: Path, fmt: str) -> Path:
    """A new photo of the same meter: cropped, saved as a field camera might."""
    with Image.open(source) as image:
        image.convert("RGB").crop((4, 4, image.width - 4, image.height - 4)).save(target, fmt)
    return target


def test_agreed_reviews_join_their_class_once(project_dir: Path, params: Params,
                                              small_demo: Path, small_demo_cfg: DemoConfig):
    from meterid.clustering.candidates import export_reviewed

    write_params(project_dir, params, small_demo_cfg)
    shutil.copytree(small_demo / "raw", project_dir / "data/raw")
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "--quiet"], check=True)
    project = load_params(project_dir / "params.yaml")
    biggest = max((project_dir / "data/raw").iterdir(), key=lambda d: len(list(d.iterdir())))
    sources = sorted(biggest.glob("*.jpg"))[:5]
    field = project_dir / "field"
    field.mkdir()
    photos = [_field_photo(sources[0], field / "a.jpg", "JPEG"),
              _field_photo(sources[1], field / "b.webp", "WEBP"),
              _field_photo(sources[2], field / "c.jpg", "JPEG"),
              _field_photo(sources[3], field / "d.jpg", "JPEG")]
    rows = [ScoredRow(i, str(p), OK, label=biggest.name, auto_accepted=False,
                      sha256=file_sha256(p), model_version=1) for i, p in enumerate(photos)]
    # A photo whose URL died after the night (a signed link): the copy kept for review joins.
    expired = _field_photo(sources[4], field / "e.jpg", "JPEG")
    rows.append(ScoredRow(4, "http://127.0.0.1:9/expired.jpg", OK, label=biggest.name,
                          auto_accepted=False, sha256=file_sha256(expired), model_version=1,
                          image_format="JPEG"))
    ReviewPhotos(project.paths.review_photos).add(expired.read_bytes(), rows[-1])
    expired.unlink()
    store = open_store(project)
    store.enqueue("night", review_queue(pd.DataFrame([r.to_dict() for r in rows]), "night",
                                        0.0, 0))
    classes = sorted(d.name for d in (project_dir / "data/raw").iterdir())
    other = next(c for c in classes if c != biggest.name)
    store.label(rows[0].sha256, "ana", biggest.name, classes)
    store.label(rows[1].sha256, "ana", biggest.name, classes)  # a WEBP: joins as PNG
    store.label(rows[2].sha256, "ana", biggest.name, classes)
    store.label(rows[2].sha256, "ben", other, classes)  # a conflict: stays out
    store.label(rows[3].sha256, "ana", NEW_TYPE, classes)  # for clustering, not a class
    store.label(rows[4].sha256, "ana", biggest.name, classes)

    before = len(list(biggest.iterdir()))
    assert export_reviewed(project, store) == {biggest.name: 3}
    added = sorted(p.suffix for p in biggest.iterdir() if "_cand_" in p.name)
    assert added == [".jpg", ".jpg", ".png"] and len(list(biggest.iterdir())) == before + 3
    assert (project_dir / "data/raw.dvc").is_file()  # the new data version
    assert export_reviewed(project, store) == {biggest.name: 0}
