"""Suspected label errors: precision and recall of the list on planted label swaps.

The demo's labels are right by construction, so swaps planted into them are the only true
errors: 2% of the photos get another class's label (a random one), five seeds. The embeddings
are the pretrained backbone's (before phase 2), which never saw a label, so a swap in the label
array is exactly a photo moved to the wrong class folder. Every cleanlab filter is compared;
params.yaml's ``evaluate.suspect_filter`` is the one in use. Needs ``make demo``
(models/candidate/frozen_embeddings.npz).
"""

from __future__ import annotations

import numpy as np

from meterid.config import load_params
from meterid.data.suspects import out_of_fold_probabilities, suspect_labels

METHODS = ("prune_by_noise_rate", "confident_learning", "both", "predicted_neq_given")
SHARE, SEEDS = 0.02, 5


def _plant(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, set[int]]:
    classes = np.unique(labels)
    swapped = rng.choice(len(labels), max(1, int(SHARE * len(labels))), replace=False)
    planted = labels.copy()
    for i in swapped:
        planted[i] = rng.choice(classes[classes != labels[i]])
    return planted, set(swapped.tolist())


def run() -> dict:
    params = load_params()
    frozen = np.load(params.paths.models_dir / "candidate" / "frozen_embeddings.npz")
    embeddings, labels = frozen["embeddings"], frozen["labels"].astype(str)
    paths = [str(i) for i in range(len(labels))]
    rng = np.random.default_rng(0)
    found: dict[str, list[tuple[float, float, int, float]]] = {m: [] for m in METHODS}
    for _ in range(SEEDS):
        planted, truth = _plant(labels, rng)
        oof = out_of_fold_probabilities(embeddings, planted, params.evaluate.cv_folds, 0)
        assert oof is not None, "every demo class has photos for several folds"
        for method in METHODS:
            ranked = [int(p) for p in suspect_labels(oof, paths, method)["path"]]
            hits = len(set(ranked) & truth)
            first = len(set(ranked[:len(truth)]) & truth) / len(truth)  # as many as planted
            found[method].append((hits / max(len(ranked), 1), hits / len(truth), len(ranked),
                                  first))
    print(f"{len(labels)} photos, {int(SHARE * len(labels))} label swaps planted, {SEEDS} seeds "
          f"(in use: {params.evaluate.suspect_filter})")
    for method, rows in found.items():
        precision, recall, listed, first = np.mean(rows, axis=0)
        print(f"  {method:22s} precision {precision:.1%}  recall {recall:.1%}  "
              f"listed {listed:.0f}  precision of the first {len(truth)} {first:.1%}")
    return {m: np.mean(r, axis=0).tolist() for m, r in found.items()}
