"""How much of a measured ECE is the noise of a small test split: for each run ``real_photos``
kept in ``REAL_PHOTOS_OUTPUTS`` (``ECE_NOISE_RUNS`` picks runs by the start of their name), the
ECE on all its test photos and on random subsets of a user's size, each beside what a
perfectly calibrated model with the same confidences reads (``calibration.ece_noise``: the mean
and the 95th percentile). ``ECE_NOISE_PLOT`` names a PNG of ECE against the number of test
photos, with the calibrated model's band.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.real_photos import saved_run_rows
from meterid.training.calibration import ece_noise, expected_calibration_error

SIZES = (49, 120)  # the hidden shop collection's test photos a split; a grocery cut's
SUBSETS = 50       # random subsets of each size a run
PLOT_SIZES = (30, 49, 80, 120, 200, 350, 700)


def subset_figures(probabilities: np.ndarray, targets: np.ndarray, size: int,
                   rng: np.random.Generator) -> dict[str, float]:
    """Mean over ``SUBSETS`` random subsets of ``size`` test photos: the measured ECE, the
    calibrated model's mean and 95th percentile, and how often the measured one is above it."""
    rows = []
    for _ in range(SUBSETS):
        chosen = rng.choice(len(targets), size, replace=False)
        noise = ece_noise(probabilities[chosen].max(axis=1), draws=500)
        measured = expected_calibration_error(probabilities[chosen], targets[chosen])
        rows.append((measured, noise.expected, noise.p95, measured > noise.p95))
    measured, expected, p95, above = np.mean(rows, axis=0)
    return {"ECE": measured, "if calibrated": expected, "p95": p95, "above p95": above}


def all_photos_figures(probabilities: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    noise = ece_noise(probabilities.max(axis=1))
    measured = expected_calibration_error(probabilities, targets)
    return {"photos": len(targets), "ECE": measured, "if calibrated": noise.expected,
            "p95": noise.p95, "above p95": float(measured > noise.p95)}


def run_rows(path: Path) -> list[dict]:
    saved = np.load(path)
    probabilities, targets = saved["test_probabilities"], saved["test_targets"]
    rng = np.random.default_rng(0)
    return [{"run": path.stem, **all_photos_figures(probabilities, targets)}] + [
        {"run": path.stem, "photos": size, **subset_figures(probabilities, targets, size, rng)}
        for size in SIZES if size < len(targets)]


def collection_of(run: Path) -> str:
    """``upstream0_size288`` -> ``upstream``: the runs one panel gathers."""
    return re.sub(r"\d+$", "", run.stem.split("_")[0])


def curve(run: Path, rng: np.random.Generator) -> pd.DataFrame:
    """A run's figures at each of ``PLOT_SIZES`` below its test photos, and on all of them."""
    saved = np.load(run)
    probabilities, targets = saved["test_probabilities"], saved["test_targets"]
    rows = [{"photos": n, **subset_figures(probabilities, targets, n, rng)}
            for n in PLOT_SIZES if n < len(targets)]
    rows.append(all_photos_figures(probabilities, targets))
    return pd.DataFrame(rows).set_index("photos")


def plot_against_size(runs: list[Path], path: Path) -> None:
    """A panel a collection: its runs' ECE against the number of test photos (mean over the
    runs, and their range), over the band a calibrated model reads (mean to p95)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    panels: dict[str, list[pd.DataFrame]] = {}
    for run in runs:
        panels.setdefault(collection_of(run), []).append(curve(run, rng))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (collection, curves) in zip(axes[0], panels.items(), strict=True):
        sizes = sorted(set.intersection(*(set(c.index) for c in curves)))
        figures = {key: np.array([c.loc[sizes, key].to_numpy(float) for c in curves])
                   for key in ("ECE", "if calibrated", "p95")}
        ax.fill_between(sizes, figures["if calibrated"].mean(0), figures["p95"].mean(0),
                        color="grey", alpha=0.3, label="a calibrated model: mean to p95")
        ax.plot(sizes, figures["ECE"].mean(0), marker="o", color="C3",
                label=f"measured, mean of {len(curves)} models")
        ax.fill_between(sizes, figures["ECE"].min(0), figures["ECE"].max(0), color="C3",
                        alpha=0.15, label="measured, range")
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.set_title(collection)
        ax.set_xlabel("test photos (random subsets)")
    axes[0][0].set_ylabel("ECE")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run() -> pd.DataFrame:
    runs, table = saved_run_rows("ECE_NOISE_RUNS", run_rows)
    if not runs:
        return table
    print("ECE on all test photos and on random subsets, beside a calibrated model's:")
    print(table.to_string(index=False, float_format="{:.3f}".format))
    if plot := os.environ.get("ECE_NOISE_PLOT"):
        plot_against_size(runs, Path(plot))
        print(f"against the number of test photos: {plot}")
    return table
