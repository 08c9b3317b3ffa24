"""Prediction sets at several miscoverage levels, on saved model outputs: for each run
``real_photos`` kept in ``REAL_PHOTOS_OUTPUTS`` (``PREDICTION_SETS_RUNS`` picks runs by the start
of their name), the sets fitted as evaluation fits them (on the training photos' out-of-fold
probabilities when the run has them, else on the validation photos) and measured on the test
photos: how often they hold the true label, and how many labels a reviewer reads. ``<-`` marks
the alpha params.yaml asks for from those photos.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.real_photos import saved_run_rows
from meterid.config import load_params
from meterid.decision.conformal import fit_prediction_sets, set_coverage

ALPHAS = (0.01, 0.02, 0.05, 0.1)


def run_rows(path: Path) -> list[dict]:
    saved = np.load(path)
    fitted_on = "out_of_fold" if "out_of_fold_probabilities" in saved else "val"
    # without validation photos evaluation sets its thresholds on the test photos, and a run
    # saved before the out-of-fold outputs were kept has only those: in-sample, said so
    in_sample = fitted_on == "val" and np.array_equal(saved["val_probabilities"],
                                                      saved["test_probabilities"])
    asked = load_params().evaluate.set_alpha(out_of_fold=fitted_on == "out_of_fold")
    rows = []
    for alpha in ALPHAS:
        rule = fit_prediction_sets(saved[f"{fitted_on}_probabilities"],
                                   saved[f"{fitted_on}_targets"], alpha)
        coverage, size = set_coverage(rule.sets(saved["test_probabilities"]),
                                      saved["test_targets"])
        rows.append({"run": path.stem, "fitted on": f"{rule.calibration_photos} "
                     f"{'test (in-sample)' if in_sample else fitted_on}",
                     "alpha asked": alpha, "params.yaml's": "<-" if alpha == asked else "",
                     "alpha certified": rule.alpha,
                     "test coverage": coverage, "set size": size,
                     "classes": saved["test_probabilities"].shape[1]})
    return rows


def run() -> pd.DataFrame:
    runs, table = saved_run_rows("PREDICTION_SETS_RUNS", run_rows)
    if not runs:
        return table
    print("prediction sets on the test photos, by the alpha asked:")
    print(table.to_string(index=False, float_format="{:.3f}".format))
    return table
