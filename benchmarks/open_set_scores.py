"""Open-set scores tried on saved model outputs, without training again: for each score, the
share of held-out photos flagged when 5% of the known test photos are (mean and range over the
saved runs), its AUROC, and the same share brand by brand.

It reads the runs ``real_photos`` kept in ``REAL_PHOTOS_OUTPUTS`` (one ``.npz`` a run; a
collection's name starts the file name, so ``OPEN_SET_RUNS=upstream`` takes those runs only).
Besides the product's scores (``openset.SCORES``) it tries three more for near-unseen
variants (none is a product score; docs/real-photos.md says what they gave):
- the residual norm outside the training embeddings' first principal directions (the feature
  half of ViM, Wang et al. 2022);
- two scores combined as the product of their tail probabilities under the known validation
  photos;
- kNN on the pretrained backbone's embeddings, kept per collection by ``real_photos``.
``OPEN_SET_PLOT`` names a PNG of the best scores' shares brand by brand.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from benchmarks.real_photos import (
    PRETRAINED,
    product_scores,
    saved_outputs,
    saved_run_rows,
    unseen_flagged_at,
)
from meterid.decision.openset import (
    ModelOutputs,
    Reference,
    knn_score,
    known_vs_unknown_auroc,
    normalize,
)

Score = Callable[[ModelOutputs], np.ndarray]
PAIRS: tuple[tuple[str, str], ...] = (("knn(k=1)", "msp"), ("knn(k=5)", "msp"),
                                      ("knn(k=1)", "mahalanobis"))


@dataclass(frozen=True)
class SavedRun:
    """One run's outputs (``real_photos.save_outputs``) on the test, val and held-out photos,
    and its collection's pretrained-backbone embeddings when they were kept."""

    sets: dict[str, ModelOutputs]
    reference: Reference
    brands: np.ndarray
    pretrained: dict[str, np.ndarray] | None

    @classmethod
    def load(cls, path: Path) -> SavedRun:
        saved = np.load(path)
        sets = {name: saved_outputs(saved, name) for name in ("test", "val", "held_out")}
        reference = Reference(saved["reference_embeddings"], saved["reference_labels"])
        collection = path.stem.split("_")[0]
        kept = path.with_name(f"{collection}_{PRETRAINED}.npz")
        pretrained = dict(np.load(kept)) if kept.is_file() else None
        if pretrained is not None and len(pretrained["reference"]) != len(reference):
            raise ValueError(f"{kept} has {len(pretrained['reference'])} training photos, "
                             f"{path} {len(reference)}: not the same collection")
        return cls(sets, reference, saved["held_out_brands"], pretrained)


def residual_score(reference: Reference, dimensions: int) -> Score:
    """Minus the norm of an embedding outside the training embeddings' first principal
    directions."""
    pca = PCA(min(dimensions, len(reference) - 1), random_state=0).fit(
        normalize(reference.embeddings))

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


def pretrained_knn(run: SavedRun, k: int) -> Score:
    """kNN on the pretrained backbone's embeddings, which fine-tuning has not narrowed to what
    tells the known classes apart. The outputs are matched to their set by identity."""
    pretrained = run.pretrained
    assert pretrained is not None
    by_set = {id(outputs): pretrained[name] for name, outputs in run.sets.items()}
    return lambda outputs: knn_score(pretrained["reference"], by_set[id(outputs)], k)


def scores_of(run: SavedRun) -> dict[str, Score]:
    sets, reference = run.sets, run.reference
    scores: dict[str, Score] = {label: partial(rule.scores, reference=reference)
                                for label, rule in product_scores(reference).items()}
    scores["residual(64)"] = residual_score(reference, 64)
    pairs = PAIRS
    if run.pretrained is not None:
        for k in (1, 5):
            scores[f"pretrained knn(k={k})"] = pretrained_knn(run, k)
        pairs += (("knn(k=1)", "pretrained knn(k=1)"), ("knn(k=5)", "pretrained knn(k=5)"))
    for first, second in pairs:
        scores[f"{first} x {second}"] = tail_product(scores[first], scores[second], sets["val"])
    return scores


def run_rows(path: Path) -> list[dict]:
    run = SavedRun.load(path)
    brands = run.brands
    rows = []
    for name, score in scores_of(run).items():
        known, unseen = score(run.sets["test"]), score(run.sets["held_out"])
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


def plot_by_brand(table: pd.DataFrame, path: Path, shown: int = 6) -> None:
    """Bars of each held-out brand's flagged share for the ``shown`` best scores."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    brands = [c for c in table.columns if c not in ("mean", "min", "max", "AUROC")]
    best = table.head(shown)
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(best)
    for i, (score, row) in enumerate(best.iterrows()):
        ax.bar(np.arange(len(brands)) + i * width, row[brands].to_numpy(float), width,
               label=f"{score} ({row['mean']:.0%})")
    ax.axhline(0.05, color="grey", linestyle="--", linewidth=1)
    ax.text(-0.1, 0.06, "chance: 5%", color="grey")
    ax.set_xticks(np.arange(len(brands)) + 0.4 - width / 2, brands, fontsize=8)
    ax.set_ylabel("held-out photos flagged\nat 5% of known flagged")
    ax.legend(fontsize=7, title="score (all brands)", title_fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run() -> pd.DataFrame:
    runs, rows = saved_run_rows("OPEN_SET_RUNS", run_rows)
    if not runs:
        return rows
    print(f"{len(runs)} runs: {', '.join(p.stem for p in runs)}")
    table = score_table(rows)
    print("unseen photos flagged at 5% of known test photos flagged:")
    print(table.to_string())
    if plot := os.environ.get("OPEN_SET_PLOT"):
        plot_by_brand(table, Path(plot))
        print(f"by brand: {plot}")
    return table
