"""Classification metrics, the confusion-matrix picture and the image-wise audit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    recall_score,
    top_k_accuracy_score,
)

from meterid.core import UNKNOWN
from meterid.decision.openset import OpenSetRule
from meterid.training.calibration import ece_noise, expected_calibration_error

# What a person looks at first; the CLI, the Prefect artifact and the tests show these keys.
HEADLINE_METRICS = ("accuracy", "balanced_accuracy", "macro_recall", "macro_f1", "top3_accuracy",
                    "ece", "ece_if_calibrated", "ece_if_calibrated_p95",
                    "unknown_auroc_report", "unknown_flagged_share_report",
                    "unknown_flagged_share", "known_flagged_share", "non_meter_flagged_share",
                    "auto_accept_share", "auto_accept_certifiable_error",
                    "prediction_set_coverage", "prediction_set_mean_size",
                    "field_grayscale_accuracy", "field_text_strip_accuracy", "selective_accuracy",
                    "coverage", "cv_macro_recall")


def headline_metrics(targets: np.ndarray, probabilities: np.ndarray, n_classes: int) -> dict:
    """Accuracy-type metrics on the test split; empty test sets give NaN, not an error."""
    if len(targets) == 0:
        return {k: float("nan") for k in ("accuracy", "balanced_accuracy", "macro_recall",
                                          "macro_f1", "top3_accuracy", "ece",
                                          "ece_if_calibrated", "ece_if_calibrated_p95")}
    predictions = probabilities.argmax(axis=1)
    noise = ece_noise(probabilities.max(axis=1))
    present = np.unique(targets)  # classes without test images are measured by CV instead
    return {
        "accuracy": float(accuracy_score(targets, predictions)),
        "balanced_accuracy": float(balanced_accuracy_score(targets, predictions)),
        "macro_recall": float(recall_score(targets, predictions, labels=present, average="macro",
                                           zero_division=0)),
        "macro_f1": float(f1_score(targets, predictions, labels=present, average="macro",
                                   zero_division=0)),
        "top3_accuracy": float(top_k_accuracy_score(targets, probabilities, k=min(3, n_classes),
                                                    labels=np.arange(n_classes))),
        "ece": expected_calibration_error(probabilities, targets),
        # what a calibrated model would read on as few photos: ECE above the p95 is a fault
        "ece_if_calibrated": noise.expected,
        "ece_if_calibrated_p95": noise.p95,
    }


def per_class_table(
    targets: np.ndarray, predictions: np.ndarray, classes: list[str]
) -> pd.DataFrame:
    """Precision, recall, F1 and support per class (classes absent from the test split: NaN)."""
    report = classification_report(targets, predictions, labels=np.arange(len(classes)),
                                   target_names=classes, output_dict=True, zero_division=0)
    table = pd.DataFrame({c: report[c] for c in classes}).T
    table.index.name = "label"
    table.loc[table["support"] == 0, ["precision", "recall", "f1-score"]] = np.nan
    return table.rename(columns={"f1-score": "f1"})


def plot_confusion_matrix(
    targets: np.ndarray, predictions: np.ndarray, classes: list[str], out_png: Path
) -> Path:
    """Row-normalised confusion matrix; counts printed in non-empty cells. Scales with classes."""
    matrix = confusion_matrix(targets, predictions, labels=np.arange(len(classes)))
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    side = max(6.0, 0.32 * len(classes) + 3)
    figure = Figure(figsize=(side, side), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(share, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    axes.set_yticks(range(len(classes)), classes, fontsize=7)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            axes.text(j, i, str(count), ha="center", va="center", fontsize=6,
                      color="white" if share[i, j] > 0.5 else "black")
    figure.colorbar(image, ax=axes, fraction=0.03, label="share of the true class")
    axes.set_title(f"Confusion matrix, test split ({int(matrix.sum())} images)")
    figure.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png)
    return out_png


def top_k(probabilities: np.ndarray, classes: list[str], k: int = 3) -> tuple[list, np.ndarray]:
    """Top-k labels and probabilities per row, best first."""
    order = np.argsort(-probabilities, axis=1)[:, :k]
    labels = [[classes[i] for i in row] for row in order]
    return labels, np.take_along_axis(probabilities, order, axis=1)


def audit_table(
    paths: list[str], targets: np.ndarray, probabilities: np.ndarray, classes: list[str],
    is_unknown: np.ndarray,
) -> pd.DataFrame:
    """One row per test image: truth, prediction, calibrated confidence, top-3, flags."""
    labels, confidences = top_k(probabilities, classes)
    predicted = [row[0] for row in labels]
    table = pd.DataFrame({
        "path": paths,
        "true_label": [classes[t] for t in targets],
        "predicted_label": predicted,
        "label": [UNKNOWN if u else p for p, u in zip(predicted, is_unknown, strict=True)],
        "confidence": confidences[:, 0] if len(paths) else [],
        "is_unknown": is_unknown.astype(bool),
    })
    for rank in range(3):
        table[f"top{rank + 1}_label"] = [row[rank] if len(row) > rank else None for row in labels]
        table[f"top{rank + 1}_conf"] = (confidences[:, rank] if confidences.shape[1] > rank
                                        else np.nan) if len(paths) else []
    table["correct"] = table["predicted_label"] == table["true_label"]
    return table


def plot_open_set(scores: dict[str, np.ndarray], rule: OpenSetRule, path: Path) -> Path:
    """Histograms of the open-set score per group, with the UNKNOWN threshold: what share of
    each group falls under it is the operating point."""
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    finite = np.concatenate([v[np.isfinite(v)] for v in scores.values() if len(v)])
    bins = list(np.linspace(finite.min(), finite.max(), 40)) if len(finite) else 10
    for name, values in scores.items():
        if len(values):
            under = float((values < rule.threshold).mean())
            ax.hist(values, bins=bins, alpha=0.5, density=True,
                    label=f"{name} (n={len(values)}, {under:.0%} UNKNOWN)")
    ax.axvline(rule.threshold, color="black", linestyle="--",
               label=f"threshold {rule.threshold:.3g}")
    ax.set_xlabel(f"open-set score: {rule.label} (lower is less like the training classes)")
    ax.set_ylabel("density")
    ax.set_title(f"UNKNOWN rule: {rule.operating_point}")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    return path
