"""Known photos of another session beside the test photos, on saved model outputs: for each run
``real_photos`` kept in ``REAL_PHOTOS_OUTPUTS`` (``ANOTHER_SESSION_RUNS`` picks runs by the start
of their name) that has validation photos of its own. The grocery collection's upstream split
takes its validation photos in another session than its training and test photos, as a user's
field photos are; its test photos share shelves with the training photos. Printed per run: top-1
on each; the AUROC of the UNKNOWN rule's score (kNN at params.yaml's ``knn_k``) between each set
of known photos and the held-out brands; and, at the threshold that flags 5% of the known test
photos (``real_photos``' "unseen flagged at 5% known"), the share of each set it flags. A score
that tells new variants from known products only when the known ones are of a familiar shelf
shows it here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.real_photos import flagging_threshold, saved_outputs, saved_run_rows
from meterid.config import load_params
from meterid.decision.openset import OpenSetRule, Reference, known_vs_unknown_auroc

KNOWN_TEST_FLAGGED = 0.05


def run_rows(path: Path) -> list[dict]:
    saved = np.load(path)
    if np.array_equal(saved["val_logits"], saved["test_logits"]):
        return []  # no validation photos: evaluation set its thresholds on the test photos
    reference = Reference(saved["reference_embeddings"], saved["reference_labels"])
    rule = OpenSetRule("knn", 0.0, load_params().evaluate.knn_k)
    scores = {split: rule.scores(saved_outputs(saved, split), reference)
              for split in ("test", "val", "held_out")}
    threshold = flagging_threshold(scores["test"], KNOWN_TEST_FLAGGED)
    row: dict[str, object] = {"run": path.stem}
    for split, name in (("test", "test"), ("val", "another session")):
        right = saved[f"{split}_logits"].argmax(axis=1) == saved[f"{split}_targets"]
        row[f"top-1, {name}"] = right.mean()
        row[f"AUROC vs unseen, {name}"] = known_vs_unknown_auroc(scores[split],
                                                                 scores["held_out"])
        row[f"flagged, {name}"] = (scores[split] < threshold).mean()
    row["flagged, unseen"] = (scores["held_out"] < threshold).mean()
    return [row]


def run() -> pd.DataFrame:
    runs, table = saved_run_rows("ANOTHER_SESSION_RUNS", run_rows)
    if not runs or table.empty:
        print("no saved run with validation photos of its own: nothing to compare")
        return table
    print(f"kNN (k = {load_params().evaluate.knn_k}) at the threshold that flags "
          f"{KNOWN_TEST_FLAGGED:.0%} of the known test photos:")
    print(table.to_string(index=False, float_format="{:.3f}".format))
    return table
