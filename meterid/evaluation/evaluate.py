"""Evaluate a trained model on its test split, its unknown-brand behaviour, and every class.

Writes ``metrics.json`` (flat keys), ``per_class.csv``, ``confusion_matrix.png`` and ``audit.csv``.
Classes without a test split are measured by stratified k-fold cross-validation of a linear head
on the frozen-backbone embeddings of all their images, so no class goes unmeasured.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from meterid.config import EvaluateConfig
from meterid.evaluation import openset
from meterid.evaluation.metrics import (
    audit_table,
    headline_metrics,
    per_class_table,
    plot_confusion_matrix,
)
from meterid.model.classifier import MeterClassifier
from meterid.training.calibration import expected_calibration_error
from meterid.training.trainer import CachedSplit, logits_from_activations

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    metrics: dict[str, float]
    per_class: pd.DataFrame
    audit: pd.DataFrame
    rule: openset.OpenSetRule


def _scores(model: MeterClassifier, split: CachedSplit
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(raw logits, calibrated probabilities, embeddings) of a cached split."""
    logits, embeddings = logits_from_activations(model, split.activations)
    probabilities = model.calibrated_probabilities(logits)
    return logits.numpy(), probabilities.numpy(), embeddings.numpy()


def choose_open_set_rule(
    reference: np.ndarray, known: tuple[np.ndarray, np.ndarray],
    unknown: tuple[np.ndarray, np.ndarray] | None, cfg: EvaluateConfig,
) -> tuple[openset.OpenSetRule, dict[str, float]]:
    """Compare max-softmax with kNN distance on known test vs held-out images; keep the better.

    ``known``/``unknown`` are (probabilities, embeddings). The kNN threshold accepts
    ``known_accept_share`` of the training images (leave-one-out), so it is set without
    looking at unknown images.
    """
    loo = openset.knn_score(reference, reference, cfg.knn_k, exclude_self=True)
    knn_threshold = openset.threshold_for_known_acceptance(loo, cfg.known_accept_share)
    auroc = {"msp": float("nan"), "knn": float("nan")}
    if unknown is not None and len(unknown[0]):
        auroc["msp"] = openset.known_vs_unknown_auroc(openset.msp_score(known[0]),
                                                      openset.msp_score(unknown[0]))
        auroc["knn"] = openset.known_vs_unknown_auroc(
            openset.knn_score(reference, known[1], cfg.knn_k),
            openset.knn_score(reference, unknown[1], cfg.knn_k))
    name = cfg.open_set_rule
    if name == "auto":
        name = "knn" if np.nan_to_num(auroc["knn"]) > np.nan_to_num(auroc["msp"]) else "msp"
    rule = openset.OpenSetRule(name, cfg.threshold, cfg.knn_k, knn_threshold)
    return rule, auroc


def cross_validated_recall(embeddings: np.ndarray, labels: np.ndarray, folds: int,
                           seed: int) -> pd.Series:
    """Per-class recall of a linear head under stratified k-fold CV (k <= smallest class)."""
    counts = pd.Series(labels).value_counts()
    k = int(min(folds, counts.min()))
    if k < 2:
        return pd.Series(np.nan, index=sorted(set(labels)))
    features = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    # Balanced class weights: with 4-image classes beside 200-image ones, an unweighted head
    # would sacrifice exactly the small classes this measurement exists for.
    head = LogisticRegression(max_iter=2000, C=10.0, class_weight="balanced")
    predicted = cross_val_predict(head, features, labels,
                                  cv=StratifiedKFold(k, shuffle=True, random_state=seed))
    frame = pd.DataFrame({"label": labels, "correct": predicted == labels})
    return frame.groupby("label")["correct"].mean()


def evaluate(
    model: MeterClassifier, test: CachedSplit, unknown: CachedSplit | None,
    cv_embeddings: np.ndarray, cv_labels: np.ndarray, cfg: EvaluateConfig, seed: int,
) -> Evaluation:
    """Test metrics, open-set behaviour on ``unknown`` and per-class CV on frozen embeddings."""
    classes = model.classes
    logits, probabilities, embeddings = _scores(model, test)
    reference = model.reference_embeddings.numpy()
    targets = test.targets.numpy()
    unknown_scores = _scores(model, unknown)[1:] if unknown is not None else None
    rule, auroc = choose_open_set_rule(reference, (probabilities, embeddings), unknown_scores, cfg)
    flagged = rule.flags(probabilities, embeddings, reference)
    metrics = headline_metrics(targets, probabilities, len(classes))
    raw = torch.softmax(torch.as_tensor(logits), dim=1).numpy()
    accepted = ~flagged
    has_unknown = unknown_scores is not None and len(unknown_scores[0]) > 0
    metrics.update({
        "ece_uncalibrated": expected_calibration_error(raw, targets),
        "temperature": float(model.temperature),
        "unknown_auroc_msp": auroc["msp"],
        "unknown_auroc_knn": auroc["knn"],
        "unknown_auroc": auroc[rule.name],
        "unknown_flagged_share": (float(rule.flags(*unknown_scores, reference).mean())
                                  if has_unknown else float("nan")),
        "known_flagged_share": float(flagged.mean()) if len(flagged) else float("nan"),
        "coverage": float(accepted.mean()) if len(flagged) else float("nan"),
        "selective_accuracy": (float((probabilities.argmax(1) == targets)[accepted].mean())
                               if accepted.any() else float("nan")),
        "test_images": len(targets),
        "test_classes": int(len(np.unique(targets))),
        "classes": len(classes),
    })
    per_class = per_class_table(targets, probabilities.argmax(1), classes)
    per_class["cv_recall"] = cross_validated_recall(cv_embeddings, cv_labels, cfg.cv_folds,
                                                    seed).reindex(per_class.index)
    per_class["measured_by"] = np.where(per_class["support"] > 0, "test", "cross-validation")
    metrics["cv_macro_recall"] = float(per_class["cv_recall"].mean())
    audit = audit_table(test.paths, targets, probabilities, classes, flagged)
    return Evaluation(metrics, per_class, audit, rule)


def write_reports(evaluation: Evaluation, classes: list[str], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": out_dir / "metrics.json",
        "per_class": out_dir / "per_class.csv",
        "audit": out_dir / "audit.csv",
        "confusion_matrix": out_dir / "confusion_matrix.png",
    }
    clean = {k: (None if isinstance(v, float) and np.isnan(v) else v)
             for k, v in evaluation.metrics.items()}
    paths["metrics"].write_text(json.dumps(clean, indent=2, sort_keys=True) + "\n")
    evaluation.per_class.to_csv(paths["per_class"])
    evaluation.audit.to_csv(paths["audit"], index=False)
    index = {c: i for i, c in enumerate(classes)}
    plot_confusion_matrix(evaluation.audit["true_label"].map(index).to_numpy(),
                          evaluation.audit["predicted_label"].map(index).to_numpy(),
                          classes, paths["confusion_matrix"])
    log.info("evaluation reports in %s", out_dir)
    return paths
