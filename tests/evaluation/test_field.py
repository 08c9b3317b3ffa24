"""The field test set: reviewed photos of a known class that training never saw, read from the
copies kept for review (or fetched again), and a model's top-1 on them per class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from meterid.config import Params
from meterid.core import OK, ScoredRow
from meterid.evaluation.field import field_candidates, field_photos, score_field
from meterid.photos.images import file_sha256
from meterid.review.photos import ReviewPhotos
from meterid.review.queue import review_queue
from meterid.review.store import NEW_TYPE, LabelStore


def _photo(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(40, 220, (72, 64, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def reviewed(tmp_path: Path, params: Params, tiny_model) -> tuple[Params, LabelStore, list]:
    """Five reviewed photos: two of "alpha" (one of them kept after its URL died), one of
    "beta" that is also in the dataset, a new type and a conflict."""
    project = params.model_copy(update={"paths": params.paths.model_copy(update={
        "review_photos": tmp_path / "kept"})})
    photos = [_photo(tmp_path / f"p{i}.png", i) for i in range(5)]
    rows = [ScoredRow(i, str(p), OK, label="alpha", auto_accepted=False, image_format="PNG",
                      sha256=file_sha256(p), model_version=1) for i, p in enumerate(photos)]
    rows[1] = ScoredRow(1, "http://127.0.0.1:9/gone.png", OK, label="alpha",
                        auto_accepted=False, image_format="PNG", sha256=rows[1].sha256)
    ReviewPhotos(tmp_path / "kept").add(photos[1].read_bytes(), rows[1])
    store = LabelStore(f"sqlite:///{tmp_path / 'review.db'}")
    store.enqueue("night", review_queue(pd.DataFrame([r.to_dict() for r in rows]), "night",
                                        0.0, 0))
    classes = list(tiny_model.classes)
    for row, said in zip(rows, ["alpha", "alpha", "beta", NEW_TYPE, "alpha"], strict=True):
        store.label(row.sha256, "ana", said, classes)
    store.label(rows[4].sha256, "ben", "beta", classes)  # a conflict
    return project, store, rows


def test_only_agreed_known_classes_training_never_saw_form_the_set(reviewed, tiny_model):
    project, store, rows = reviewed
    in_dataset = {rows[2].sha256}
    chosen = field_candidates(store, list(tiny_model.classes), in_dataset)
    assert chosen == {rows[0].sha256: (rows[0].url, "alpha"),
                      rows[1].sha256: (rows[1].url, "alpha")}
    with field_photos(project, store, list(tiny_model.classes), in_dataset) as photos:
        assert [p.label for p in photos] == ["alpha", "alpha"]  # the dead URL's copy too
        assert all(p.path.is_file() for p in photos)
        score = score_field(tiny_model, photos, project.validate_.max_pixels)
    assert score.photos == 2 and score.per_class["photos"].tolist() == [2]
    assert score.accuracy == score.per_class["recall"].iloc[0] in (0.0, 0.5, 1.0)
