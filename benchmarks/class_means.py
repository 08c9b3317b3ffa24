"""A nearest-class-mean or kNN head instead of the trained one, on saved model outputs: for
each run ``real_photos`` kept in ``REAL_PHOTOS_OUTPUTS`` (``CLASS_MEANS_RUNS`` picks runs by the
start of their name), top-1 on the test photos of the trained head, of the nearest class mean
of the training photos' fine-tuned embeddings (cosine), and of a k-nearest-neighbour vote; on
all test photos and on those of classes with at most ``RARE`` training photos, where a head
fitted on a handful of photos might lose to their mean.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.real_photos import saved_run_rows
from meterid.decision.openset import normalize

RARE = 10
KS = (1, 5)


def predictions(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Each reader's test predictions, the targets, and each test photo's class size."""
    saved = np.load(path)
    references, labels = normalize(saved["reference_embeddings"]), saved["reference_labels"]
    test = normalize(saved["test_embeddings"])
    classes = saved["test_logits"].shape[1]
    means = normalize(np.stack([references[labels == c].mean(axis=0) for c in range(classes)]))
    similarity = test @ references.T
    out = {"head": saved["test_logits"].argmax(axis=1),
           "class mean": (test @ means.T).argmax(axis=1)}
    for k in KS:
        nearest = labels[np.argsort(-similarity, axis=1)[:, :k]]
        votes = np.stack([(nearest == c).sum(axis=1) for c in range(classes)], axis=1)
        out[f"knn(k={k})"] = votes.argmax(axis=1)
    counts = np.bincount(labels, minlength=classes)
    return out, saved["test_targets"], counts[saved["test_targets"]]


def run_rows(path: Path) -> list[dict]:
    readers, targets, class_size = predictions(path)
    rare = class_size <= RARE
    return [{"run": path.stem, "reader": name, "top-1": float((said == targets).mean()),
             f"top-1, classes of <= {RARE}": (float((said == targets)[rare].mean())
                                              if rare.any() else np.nan),
             "rare test photos": int(rare.sum())}
            for name, said in readers.items()]


def run() -> pd.DataFrame:
    runs, table = saved_run_rows("CLASS_MEANS_RUNS", run_rows)
    if not runs:
        return table
    print("top-1 on the test photos by the reader of the fine-tuned embeddings:")
    print(table.to_string(index=False, float_format="{:.3f}".format))
    return table
