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

from benchmarks.real_photos import saved_outputs, saved_run_rows
from meterid.config import load_params
from meterid.decision.openset import (
    OpenSetRule,
    Reference,
    threshold_for_known_acceptance,
)


def run_rows(path: Path) -> list[dict]:
    saved = np.load(path)
    cfg = load_params().evaluate
    reference = Reference(saved["reference_embeddings"], saved["reference_labels"])
    val_scores = OpenSetRule("knn", 0.0, cfg.knn_k).scores(saved_outputs(saved, "val"), reference)
    knn = OpenSetRule("knn", threshold_for_known_acceptance(val_scores, cfg.known_accept_share),
                      cfg.knn_k)  # its threshold set as evaluation sets it
    unsure = OpenSetRule.fixed_confidence(cfg.threshold)  # the design's rule
    test, held_out = saved_outputs(saved, "test"), saved_outputs(saved, "held_out")
    wrong = test.probabilities.argmax(axis=1) != saved["test_targets"]
    rows = []
    for name, flags in (("knn at the operating point", knn.flags),
                        ("top-1 under the threshold", unsure.flags),
                        ("either", lambda o, r: knn.flags(o, r) | unsure.flags(o, r))):
        flagged = flags(test, reference)
        rows.append({"run": path.stem, "rule": name, "known flagged": flagged.mean(),
                     "errors flagged": f"{int((flagged & wrong).sum())} of {int(wrong.sum())}",
                     "top-1 of the rest": 1 - wrong[~flagged].mean(),
                     "unseen flagged": flags(held_out, reference).mean()})
    return rows


def run() -> pd.DataFrame:
    runs, table = saved_run_rows("UNSURE_RULE_RUNS", run_rows)
    if not runs:
        return table
    cfg = load_params().evaluate
    print(f"known test photos and held-out photos flagged: kNN (k = {cfg.knn_k}) accepting "
          f"{cfg.known_accept_share:.0%} of the validation photos, top-1 under {cfg.threshold}:")
    print(table.to_string(index=False, float_format="{:.3f}".format))
    return table
