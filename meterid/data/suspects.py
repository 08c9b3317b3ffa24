"""Suspected label errors: photos whose given label a model that never saw them strongly doubts.

Out-of-fold probabilities of a balanced linear head on the frozen backbone's embeddings (each
photo predicted by a head trained on the other folds), then cleanlab's confident learning
(Northcutt et al. 2021) to list the likely label issues, most doubted first. A person checks
the list: it is a warning report with thumbnails, nothing is relabelled automatically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from meterid.decision.openset import normalize


@dataclass(frozen=True)
class OutOfFold:
    probabilities: np.ndarray  # (photos, classes), each row from a head that never saw it
    classes: np.ndarray        # the column order (sorted labels)
    targets: np.ndarray        # each photo's given label as a column index
    folds: int


def out_of_fold_probabilities(embeddings: np.ndarray, labels: np.ndarray, folds: int,
                              seed: int) -> OutOfFold | None:
    """Stratified k-fold (k <= the smallest class) predictions; None when a class has one photo
    only (no fold could hold it out)."""
    classes, targets, counts = np.unique(labels.astype(str), return_inverse=True,
                                         return_counts=True)
    k = int(min(folds, counts.min()))
    if k < 2 or len(classes) < 2:
        return None
    features = normalize(embeddings)
    # Balanced class weights: with 4-image classes beside 200-image ones, an unweighted head
    # would sacrifice exactly the small classes.
    head = LogisticRegression(max_iter=2000, C=10.0, class_weight="balanced")
    probabilities = cross_val_predict(head, features, targets, method="predict_proba",
                                      cv=StratifiedKFold(k, shuffle=True, random_state=seed))
    return OutOfFold(probabilities, classes, targets, k)


def suspect_labels(oof: OutOfFold, paths: list[str], method: str = "prune_by_noise_rate"
                   ) -> pd.DataFrame:
    """cleanlab's label issues (``method``: its ``filter_by``), most doubted first: path, given
    and suggested label, the given label's out-of-fold probability and the suggestion's."""
    from cleanlab.filter import find_label_issues

    # n_jobs=1: cleanlab's default forks a process pool, and a fork of a process running
    # Prefect's and torch's threads deadlocked (a training flow hung in the forked child).
    ranked = find_label_issues(oof.targets, oof.probabilities, filter_by=method,
                               return_indices_ranked_by="self_confidence", n_jobs=1)
    suggested = oof.probabilities[ranked].argmax(axis=1)
    return pd.DataFrame({
        "path": [paths[i] for i in ranked],
        "given_label": oof.classes[oof.targets[ranked]],
        "suggested_label": oof.classes[suggested],
        "given_label_probability": oof.probabilities[ranked, oof.targets[ranked]].round(4),
        "suggested_label_probability": oof.probabilities[ranked, suggested].round(4),
    })
