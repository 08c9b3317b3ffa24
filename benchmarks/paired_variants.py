"""Two training variants on the same collections, pair by pair: from ``real_photos``'s CSVs
(``PAIRED_CSV``, comma-separated), each figure's difference on each collection (its frame, kind,
split seed and training seed), their mean, and how many pairs the second variant wins.
``PAIRED_VARIANTS`` names the two (``first,second``; default: the CSVs' first two variants);
``PAIRED_PLOT`` names a PNG with one line a pair for top-1 and the unseen photos flagged at 5%
of known ones. A one-seed difference on a user-sized cut is a few test photos: the pairs, not
one of them, tell a setting from the training's randomness.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from benchmarks.real_photos import AS_PUBLISHED

PAIR_KEYS = ["frame", "collection", "seed", "training_seed"]
FIGURES = {"accuracy": "top-1", "macro_recall": "macro recall",
           "unseen_flagged_at_5pct_known": "unseen at 5% known", "unknown_auroc": "AUROC",
           "ece": "ECE", "prediction_set_mean_size": "set size"}
PLOTTED = ("accuracy", "unseen_flagged_at_5pct_known")


def read_runs(paths: list[Path]) -> pd.DataFrame:
    """The runs of ``paths``; a CSV from before the frame or the training seed was kept has
    the photos as published and a training seed equal to its split seed."""
    runs = pd.concat([pd.read_csv(path) for path in paths], ignore_index=True)
    for column in ("frame", "training_seed"):
        if column not in runs:
            runs[column] = None
    runs["frame"] = runs["frame"].fillna(AS_PUBLISHED)
    runs["training_seed"] = runs["training_seed"].fillna(runs["seed"]).astype(int)
    return runs


def paired(runs: pd.DataFrame, first: str, second: str) -> pd.DataFrame:
    """One row a collection that ran both variants: each figure of each, and second - first."""
    wide = runs[runs["variant"].isin([first, second])].pivot_table(  # the figures it has
        index=PAIR_KEYS, columns="variant", values=[key for key in FIGURES if key in runs],
        aggfunc="first")
    out = pd.DataFrame(index=wide.index)
    for key in FIGURES:
        if (key, first) in wide and (key, second) in wide:
            out[f"{key}:{first}"] = wide[(key, first)]
            out[f"{key}:{second}"] = wide[(key, second)]
            out[f"{key}:difference"] = wide[(key, second)] - wide[(key, first)]
    return out.dropna(subset=[f"accuracy:{first}", f"accuracy:{second}"]).reset_index()


def summary(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per frame, collection kind and figure: the mean difference, its range, and the pairs
    where it is positive. A setting can help a large split and not a user-sized cut."""
    rows = []
    for (frame, kind), group in pairs.groupby(["frame", "collection"]):
        for key, label in FIGURES.items():
            differences = group.get(f"{key}:difference")
            if differences is None or differences.isna().all():
                continue
            rows.append({"frame": frame, "collection": kind, "figure": label,
                         "pairs": int(differences.notna().sum()),
                         "mean difference": differences.mean(), "min": differences.min(),
                         "max": differences.max(),
                         "second higher": int((differences > 0).sum())})
    return pd.DataFrame(rows)


def plot(pairs: pd.DataFrame, first: str, second: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(PLOTTED), figsize=(5 * len(PLOTTED) + 2.5, 4.2))
    for axis, key in zip(axes, PLOTTED, strict=True):
        for _, pair in pairs.iterrows():
            name = (f"{pair['collection']}:{pair['seed']}/{pair['training_seed']} "
                    f"({pair['frame']})")
            values = [100 * pair[f"{key}:{first}"], 100 * pair[f"{key}:{second}"]]
            axis.plot([0, 1], values, marker="o", label=name)
        mean = 100 * pairs[f"{key}:difference"].mean()
        axis.set(xticks=[0, 1], xticklabels=[first, second], xlim=(-0.3, 1.3), ylabel="%",
                 title=f"{FIGURES[key]}: mean difference {mean:+.1f} points")
        axis.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run() -> pd.DataFrame:
    paths = [Path(p) for p in os.environ.get("PAIRED_CSV", "").split(",") if p]
    if not paths:
        print("no CSVs of real_photos runs (PAIRED_CSV): skipped")
        return pd.DataFrame()
    runs = read_runs(paths)
    named = os.environ.get("PAIRED_VARIANTS", "")
    first, second = named.split(",") if named else list(runs["variant"].unique()[:2])
    pairs = paired(runs, first, second)
    print(f"{second} - {first}, {len(pairs)} pairs (frame, collection:seed/training seed):")
    shown = pairs[PAIR_KEYS + [f"{key}:difference" for key in FIGURES
                               if f"{key}:difference" in pairs]]
    print(shown.to_string(index=False, float_format="{:+.3f}".format))
    table = summary(pairs)
    print(table.to_string(index=False, float_format="{:+.3f}".format))
    if target := os.environ.get("PAIRED_PLOT"):
        plot(pairs, first, second, Path(target))
        print(f"picture: {target}")
    return table
