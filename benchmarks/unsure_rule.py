"""The UNKNOWN rule at its operating point against the design's "unsure" rule, on saved model
outputs: for each run ``real_photos`` kept in ``REAL_PHOTOS_OUTPUTS`` (``UNSURE_RULE_RUNS``
picks runs by the start of their name), which known test photos and held-out photos each rule
flags. The rules: kNN (params.yaml's ``knn_k``) under the threshold that accepts
``known_accept_share`` of the validation photos, as evaluation sets it (of the test photos,
in-sample, when a run has no validation photos); calibrated top-1 confidence under
``evaluate.threshold`` (the design's rule); either of them. An operating point, not a ranking:
what a user's nightly run would say.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.real_photos import saved_run_rows
from meterid.config import load_params
from meterid.decision.openset import knn_score, normalize, threshold_for_known_acceptance


def _flags(saved: np.lib.npyio.NpzFile, split: str, threshold: float, k: int,
           min_confidence: float) -> dict[str, np.ndarray]:
    distance = knn_score(normalize(saved["reference_embeddings"]),
                         normalize(saved[f"{split}_embeddings"]), k) < threshold
    unsure = saved[f"{split}_probabilities"].max(axis=1) < min_confidence
    return {"knn at the operating point": distance, "top-1 under the threshold": unsure,
            "either": distance | unsure}


def run_rows(path: Path) -> list[dict]:
    saved = np.load(path)
    cfg = load_params().evaluate
    reference = normalize(saved["reference_embeddings"])
    val_scores = knn_score(reference, normalize(saved["val_embeddings"]), cfg.knn_k)
    threshold = threshold_for_known_acceptance(val_scores, cfg.known_accept_share)
    wrong = saved["test_probabilities"].argmax(axis=1) != saved["test_targets"]
    known = _flags(saved, "test", threshold, cfg.knn_k, cfg.threshold)
    held_out = _flags(saved, "held_out", threshold, cfg.knn_k, cfg.threshold)
    return [{"run": path.stem, "rule": rule, "known flagged": flagged.mean(),
             "errors flagged": f"{int((flagged & wrong).sum())} of {int(wrong.sum())}",
             "top-1 of the rest": 1 - wrong[~flagged].mean(),
             "unseen flagged": held_out[rule].mean()} for rule, flagged in known.items()]


def run() -> pd.DataFrame:
    runs, table = saved_run_rows("UNSURE_RULE_RUNS", run_rows)
    if not runs:
        return table
    cfg = load_params().evaluate
    print(f"known test photos and held-out photos flagged: kNN (k = {cfg.knn_k}) accepting "
          f"{cfg.known_accept_share:.0%} of the validation photos, top-1 under {cfg.threshold}:")
    print(table.to_string(index=False, float_format="{:.3f}".format))
    return table
