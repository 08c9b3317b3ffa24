"""The field test set: reviewed field photos that training never saw (reviewers agree they are
a known class, and no photo of the dataset has their bytes). `meterid evaluate` reports the
candidate on them, and the champion on the same photos, so the promotion rule can compare the
two in the field as well as on the test split.

Like every reviewed photo, they were sent to a person because the product was unsure (or drawn
for an audit): a harder set than the field at large, the same for both models.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from meterid.config import Params
from meterid.inference.bundle import ModelBundle
from meterid.inference.fetch import Fetcher
from meterid.inference.predictor import Predictor
from meterid.photos.images import ImageError, load_rgb
from meterid.review.photos import ReviewPhotos, scored_bytes
from meterid.review.store import LabelStore

log = logging.getLogger(__name__)
BATCH = 32


@dataclass(frozen=True)
class FieldPhoto:
    path: Path    # the scored bytes, read again
    label: str    # what reviewers agree it is


@dataclass(frozen=True)
class FieldScore:
    photos: int
    accuracy: float
    per_class: pd.DataFrame  # class, photos, correct, recall


def field_candidates(store: LabelStore, classes: list[str], dataset_sha256: set[str]
                     ) -> dict[str, tuple[str, str]]:
    """sha256 -> (URL, class) of the reviewed photos of a known class that are not in the
    dataset (an exported review is training data, not a test photo)."""
    agreed = {sha: label for sha, label in store.agreed().items()
              if label in classes and sha not in dataset_sha256}
    return {photo.sha256: (photo.url, agreed[photo.sha256]) for photo in store.queue()
            if photo.sha256 in agreed}


@contextmanager
def field_photos(params: Params, store: LabelStore, classes: list[str],
                 dataset_sha256: set[str]) -> Iterator[list[FieldPhoto]]:
    """The field test set as files (the copies kept for review, else fetched again and checked
    against the sha256 scored); a photo that can be read no more is left out, logged."""
    kept = ReviewPhotos(params.paths.review_photos)
    fetcher = Fetcher(params.score.fetch, pool_size=2)
    with tempfile.TemporaryDirectory(prefix="meterid-field-") as tmp:
        photos = []
        try:
            for sha, (url, label) in sorted(field_candidates(store, classes,
                                                            dataset_sha256).items()):
                path = _bytes_of(sha, url, kept, fetcher, Path(tmp))
                if path is not None:
                    photos.append(FieldPhoto(path, label))
        finally:
            fetcher.close()
        yield photos


def _bytes_of(sha: str, url: str, kept: ReviewPhotos, fetcher: Fetcher, folder: Path
              ) -> Path | None:
    copy = kept.find(sha)
    if copy is not None:
        return copy
    data = scored_bytes(kept, fetcher, sha, url)
    if data is None:
        return None
    path = folder / sha
    path.write_bytes(data)
    return path


def score_field(bundle: ModelBundle, photos: list[FieldPhoto], max_pixels: int) -> FieldScore:
    """``bundle``'s top-1 accuracy on the field photos, per class (the decode and resize the
    scorer uses)."""
    predictor = Predictor(bundle)
    top1: list[str | None] = []
    for start in range(0, len(photos), BATCH):
        batch = photos[start:start + BATCH]
        images: list[torch.Tensor | None] = []
        for photo in batch:
            try:
                images.append(predictor.preprocess(load_rgb(photo.path, max_pixels)))
            except ImageError as error:  # counted as wrong: the model could not read it
                log.warning("field test set: %s", error)
                images.append(None)
        readable: list[torch.Tensor] = [image for image in images if image is not None]
        predicted = iter(predictor.predict(torch.stack(readable)) if readable else [])
        top1 += [next(predicted).top_labels[0] if image is not None else None
                 for image in images]
    rows = pd.DataFrame({"class": [p.label for p in photos], "top1": top1})
    rows["correct"] = rows["class"] == rows["top1"]
    per_class = rows.groupby("class")["correct"].agg(photos="size", correct="sum").reset_index()
    per_class["correct"] = per_class["correct"].astype(int)
    per_class["recall"] = per_class["correct"] / per_class["photos"]
    return FieldScore(len(rows), float(rows["correct"].mean()) if len(rows) else float("nan"),
                      per_class)
