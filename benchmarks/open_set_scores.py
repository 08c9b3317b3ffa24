"""Open-set scores tried on saved model outputs, without training again: for each score, the
share of held-out photos flagged when 5% of the known test photos are (mean and range over the
saved runs), its AUROC, and the same share brand by brand.

It reads the runs ``real_photos`` kept in ``REAL_PHOTOS_OUTPUTS`` (one ``.npz`` a run; a
collection's name starts the file name, so ``OPEN_SET_RUNS=upstream`` takes those runs only).
Besides the product's scores (``openset.SCORES``) it tries two families the issue asked about
for near-unseen variants: the residual norm outside the training embeddings' first principal
directions (the feature half of ViM, Wang et al. 2022), and a pair of scores combined as the
product of their tail probabilities under the known validation photos (neither is a product
score; docs/real-photos.md says what they gave).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from benchmarks.real_photos import unseen_flagged_at
from meterid.decision.openset import (
    SCORES,
    ModelOutputs,
    Reference,
    known_vs_unknown_auroc,
    normalize,
    open_set_score,
)
from meterid.evaluation.operating_point import KNN_KS

Score = Callable[[ModelOutputs], np.ndarray]
PAIRS = (("knn(k=1)", "msp"), ("knn(k=5)", "msp"), ("knn(k=1)", "mahalanobis"))


def load_run(path: Path) -> tuple[dict[str, ModelOutputs], Reference, np.ndarray]:
    """The saved outputs (``real_photos.save_outputs``) of test, val and held-out photos."""
    saved = np.load(path)
    sets = {name: ModelOutputs(saved[f"{name}_logits"], saved[f"{name}_probabilities"],
                               saved[f"{name}_embeddings"], float(saved["temperature"]))
            for name in ("test", "val", "held_out")}
    reference = Reference(saved["reference_embeddings"], saved["reference_labels"])
    return sets, reference, saved["held_out_brands"]


def residual_score(reference: Reference, dimensions: int) -> Score:
    """Minus the norm of an embedding outside the training embeddings' first principal
    directions."""
    pca = PCA(min(dimensions, len(reference) - 1)).fit(normalize(reference.embeddings))

    def score(outputs: ModelOutputs) -> np.ndarray:
        centred = normalize(outputs.embeddings) - pca.mean_
        inside = centred @ pca.components_.T @ pca.components_
        return -np.linalg.norm(centred - inside, axis=1)
    return score


def tail_product(first: Score, second: Score, known: ModelOutputs) -> Score:
    """log P(known score <= s) summed over two scores, each under ``known``'s photos."""
    def tail(values: np.ndarray, known_values: np.ndarray) -> np.ndarray:
        ranked = np.sort(known_values)
        return np.log((np.searchsorted(ranked, values, side="right") + 1) / (len(ranked) + 1))

    known_first, known_second = first(known), second(known)
    return lambda outputs: tail(first(outputs), known_first) + tail(second(outputs), known_second)


def scores_of(sets: dict[str, ModelOutputs], reference: Reference) -> dict[str, Score]:
    scores: dict[str, Score] = {}
    for name in SCORES:
        for k in KNN_KS if name == "knn" else (5,):
            label = f"knn(k={k})" if name == "knn" else name
            scores[label] = (lambda outputs, name=name, k=k:
                             open_set_score(name, outputs, reference, k))
    scores["residual(64)"] = residual_score(reference, 64)
    for first, second in PAIRS:
        scores[f"{first} x {second}"] = tail_product(scores[first], scores[second], sets["val"])
    return scores


def run_rows(path: Path) -> list[dict]:
    sets, reference, brands = load_run(path)
    rows = []
    for name, score in scores_of(sets, reference).items():
        known, unseen = score(sets["test"]), score(sets["held_out"])
        row = {"run": path.stem, "score": name,
               "unseen at 5% known": unseen_flagged_at({"known test photos": known,
                                                        "held-out brands": unseen}, 0.05),
               "AUROC": known_vs_unknown_auroc(known, unseen)}
        for brand in np.unique(brands):
            row[str(brand)] = unseen_flagged_at({"known test photos": known,
                                                 "held-out brands": unseen[brands == brand]},
                                                0.05)
        rows.append(row)
    return rows


def score_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per score: mean, min and max over runs of the unseen share, mean AUROC and brands."""
    brands = [c for c in rows.columns if c not in ("run", "score", "unseen at 5% known",
                                                   "AUROC")]
    shares = rows.groupby("score")["unseen at 5% known"]
    table = pd.DataFrame({"mean": shares.mean(), "min": shares.min(), "max": shares.max(),
                          "AUROC": rows.groupby("score")["AUROC"].mean()})
    table = table.join(rows.groupby("score")[brands].mean()).sort_values("mean",
                                                                         ascending=False)
    return table.round(3)


def run() -> pd.DataFrame:
    folder = os.environ.get("REAL_PHOTOS_OUTPUTS")
    runs = sorted(Path(folder).glob(f"{os.environ.get('OPEN_SET_RUNS', '')}*.npz")
                  ) if folder else []
    if not runs:
        print("no saved runs (REAL_PHOTOS_OUTPUTS, made by real_photos): skipped")
        return pd.DataFrame()
    print(f"{len(runs)} runs: {', '.join(p.stem for p in runs)}")
    table = score_table(pd.DataFrame([row for path in runs for row in run_rows(path)]))
    print("unseen photos flagged at 5% of known test photos flagged:")
    print(table.to_string())
    return table
