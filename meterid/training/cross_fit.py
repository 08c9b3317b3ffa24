"""Out-of-fold logits of the training photos, for a collection whose validation split is too
small to calibrate on (or absent, as in every collection without a class above ``split.high``).

The training photos are cut into k stratified folds; for each, a copy of the untrained model
runs the same two phases on the other folds' cached views (the cache pass is shared, so a fold
costs a phase 1 and a phase 2, not a pass over the photos) and predicts the held-out photos'
eval views. Every training photo then has the logits of a model that never saw it: the
temperature, the prediction sets and the auto-accept bound can be fitted on them instead of on
a handful of validation photos, or on the test photos. A fold model has seen (k-1)/k of the
photos, so it errs a little more than the final one: figures certified on it are on the
cautious side (docs/real-photos.md measures what it does on real photos). With ``weights: none``
the folds share the stem that phase 1 trained on every photo, so they are less independent.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from meterid.model.classifier import MeterClassifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutOfFoldLogits:
    """Raw logits of each training photo (its eval view) from a model fitted without it."""

    logits: torch.Tensor   # (training photos, classes)
    targets: torch.Tensor  # class index of each row
    paths: list[str]
    folds: int

    def save(self, path: Path) -> None:
        np.savez_compressed(path, logits=self.logits.numpy(), targets=self.targets.numpy(),
                            paths=np.array(self.paths), folds=self.folds)

    @classmethod
    def load(cls, path: Path) -> OutOfFoldLogits:
        stored = np.load(path)
        return cls(torch.from_numpy(stored["logits"]), torch.from_numpy(stored["targets"]),
                   [str(p) for p in stored["paths"]], int(stored["folds"]))


def fold_count(targets: torch.Tensor, requested: int) -> tuple[int, str]:
    """The folds the training photos allow (0 when none) and why: each fold must hold out a
    photo of every class and leave another for training, so k is at most the smallest
    class's photo count."""
    if requested < 2:
        return 0, f"out_of_fold_folds={requested}: off"
    counts = torch.bincount(targets)
    smallest = int(counts[counts > 0].min()) if len(targets) else 0
    if (counts > 0).sum() < 2 or smallest < 2:
        return 0, (f"the smallest class has {smallest} training photo(s): no fold can hold it "
                   "out and still train on it")
    k = min(requested, smallest)
    return k, f"{k} folds of {len(targets)} training photos"


# the trainer's two phases on a model and a mask of training-view rows
FitPhases = Callable[[MeterClassifier, np.ndarray], None]
# the fitted model's raw logits of cached eval-view activations
Predict = Callable[[MeterClassifier, torch.Tensor], torch.Tensor]


def out_of_fold_logits(untrained: MeterClassifier, photo_activations: torch.Tensor,
                       targets: torch.Tensor, paths: list[str], view_paths: list[str],
                       folds: int, seed: int, fit: FitPhases, predict: Predict
                       ) -> OutOfFoldLogits:
    """``fit`` trains a copy of ``untrained`` on the views of the other folds' photos
    (``view_paths`` names each view's photo); the copy's logits of the held-out photos'
    eval views (``photo_activations``) are kept."""
    logits = torch.empty(len(targets), len(untrained.classes))
    view_photo = np.array(view_paths)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for fold, (fit_rows, held_rows) in enumerate(splitter.split(np.zeros(len(targets)),
                                                                 targets.numpy()), start=1):
        log.info("out-of-fold fit %d/%d: %d photos held out", fold, folds, len(held_rows))
        model = copy.deepcopy(untrained)
        fit(model, np.isin(view_photo, np.array(paths)[fit_rows]))
        logits[held_rows] = predict(model, photo_activations[held_rows])
    return OutOfFoldLogits(logits, targets.clone(), list(paths), folds)

