"""Evaluate a trained model on its test split, its unknown-brand behaviour, and every class.

Writes ``metrics.json`` (flat keys), ``per_class.csv``, ``confusion_matrix.png``, ``audit.csv``,
``decision.json`` (the policy stored with the model), ``open_set.csv`` (every open-set candidate
at the operating point) and ``open_set.png`` (the chosen score's distributions and threshold).
Classes without a test split are measured by stratified k-fold cross-validation of a linear head
on the frozen-backbone embeddings of all their images, so no class goes unmeasured.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from meterid.catalog import EvaluationReports
from meterid.config import EvaluateConfig
from meterid.data.suspects import OutOfFold, out_of_fold_probabilities, suspect_labels
from meterid.decision import conformal
from meterid.decision.conformal import AcceptRule, PredictionSetRule
from meterid.decision.openset import ModelOutputs, OpenSetRule, Reference
from meterid.decision.policy import DecisionPolicy
from meterid.evaluation.metrics import (
    audit_table,
    headline_metrics,
    per_class_table,
    plot_confusion_matrix,
    plot_open_set,
)
from meterid.evaluation.operating_point import HeldOut, OpenSetChoice, choice_metrics, choose_rule
from meterid.model.classifier import MeterClassifier
from meterid.photos.sheets import contact_sheet
from meterid.training.calibration import expected_calibration_error
from meterid.training.cross_fit import OutOfFoldLogits
from meterid.training.outputs import FrozenEmbeddings
from meterid.training.trainer import CachedSplit, logits_from_activations

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationData:
    """The model's outputs on every set evaluation needs. ``val`` sets the thresholds (known
    photos not trained on), ``test`` measures them; ``held_out`` is the unseen brands, split
    in two by ``operating_point``; ``non_meter`` is generated scenes with the quality gate's
    verdict."""

    val: ModelOutputs
    val_targets: np.ndarray
    test: ModelOutputs
    test_targets: np.ndarray
    test_paths: list[str]
    held_out: HeldOut | None
    non_meter: ModelOutputs | None = None
    non_meter_poor_quality: np.ndarray | None = None
    threshold_set: str = "validation"  # "test" when there is no validation split
    field_cases: dict[str, ModelOutputs] = field(default_factory=dict)  # test photos, altered
    # training photos through cross-fitted models (``trainer._out_of_fold``): present when
    # validation was too small, and then the accept bound and prediction sets are set on them
    out_of_fold: OutOfFoldOutputs | None = None


@dataclass(frozen=True)
class OutOfFoldOutputs:
    """Calibrated probabilities of the training photos, each from a model fitted without it."""

    probabilities: np.ndarray
    targets: np.ndarray

    @classmethod
    def of(cls, model: MeterClassifier, logits: OutOfFoldLogits) -> OutOfFoldOutputs:
        return cls(model.calibrated_probabilities(logits.logits).numpy(),
                   logits.targets.numpy())


@dataclass
class Evaluation:
    metrics: dict[str, float]
    per_class: pd.DataFrame
    audit: pd.DataFrame
    policy: DecisionPolicy
    open_set_choice: OpenSetChoice  # its table: every candidate at the operating point
    open_set_scores: dict[str, np.ndarray]  # the chosen score per group, for the plot
    suspects: pd.DataFrame | None  # photos whose given label the out-of-fold head doubts


def model_outputs(model: MeterClassifier, split: CachedSplit) -> ModelOutputs:
    logits, embeddings = logits_from_activations(model, split.activations)
    return model.outputs(logits.numpy(), embeddings.numpy(), split.grayscale)


def brands_of(split: CachedSplit) -> np.ndarray:
    """A held-out photo's brand is its folder under the held-out directory."""
    return np.array([Path(p).parts[0] if len(Path(p).parts) > 1 else "unnamed"
                     for p in split.paths])


@dataclass(frozen=True)
class CertificationPhotos:
    """The known photos the accept bound and the prediction sets are set on."""

    name: str  # "validation", "test" (no validation split) or "out-of-fold"
    probabilities: np.ndarray
    targets: np.ndarray
    kept: np.ndarray       # not flagged UNKNOWN
    grayscale: np.ndarray

    @property
    def out_of_fold(self) -> bool:
        return self.name == "out-of-fold"


def certification_photos(policy_rule: OpenSetRule, data: EvaluationData,
                         reference: Reference) -> CertificationPhotos:
    """Out-of-fold training photos when training made them (validation too small), else the
    photos that set the thresholds. Out-of-fold photos all count as kept and in colour: their
    open-set score would be read against references that include themselves. Keeping the ones
    the rule would flag (more often wrong) errs on the cautious side."""
    if data.out_of_fold is not None:
        oof = data.out_of_fold
        everyone = np.ones(len(oof.targets), dtype=bool)
        return CertificationPhotos("out-of-fold", oof.probabilities, oof.targets, everyone,
                                   ~everyone)
    gray = (data.val.grayscale if data.val.grayscale is not None
            else np.zeros(len(data.val_targets), dtype=bool))
    return CertificationPhotos(data.threshold_set, data.val.probabilities, data.val_targets,
                               ~policy_rule.flags(data.val, reference), gray)


def _accept_and_sets(policy_rule: OpenSetRule, data: EvaluationData, reference: Reference,
                     cfg: EvaluateConfig
                     ) -> tuple[AcceptRule, PredictionSetRule, AcceptRule | None]:
    """The conformal sets and the certified auto-accept thresholds, all set on the
    certification photos: one on their colour photos, one on their grayscale photos when they
    have any (None: they have none)."""
    photos = certification_photos(policy_rule, data, reference)
    confidence = photos.probabilities.max(axis=1)
    correct = photos.probabilities.argmax(axis=1) == photos.targets
    log.info("accept bound and prediction sets set on %d %s photos", len(photos.targets),
             photos.name)

    def certify(rows: np.ndarray) -> AcceptRule:
        return conformal.certify_accept_threshold(
            confidence[rows], correct[rows], photos.kept[rows], cfg.max_accept_error,
            1 - cfg.accept_confidence)

    sets = conformal.fit_prediction_sets(photos.probabilities, photos.targets,
                                         cfg.set_alpha(photos.out_of_fold))
    if sets.reason:
        log.warning("prediction sets: %s", sets.reason)
    return (certify(~photos.grayscale), sets,
            certify(photos.grayscale) if photos.grayscale.any() else None)


def _requested_alpha(policy: DecisionPolicy) -> float:
    requested = policy.prediction_sets.requested_alpha
    return policy.prediction_sets.alpha if requested is None else requested


def _guarantee_metrics(policy: DecisionPolicy, data: EvaluationData,
                       reference: Reference) -> dict[str, float]:
    """What the accept rule and the sets promise (set on validation) and do on test photos."""
    test = policy.decide(data.test, reference)
    correct = data.test.probabilities.argmax(axis=1) == data.test_targets
    accepted = test.auto_accepted
    coverage, size = conformal.set_coverage(test.prediction_sets, data.test_targets)
    accept = policy.accept
    metrics = {
        "auto_accept_target_error": accept.max_error,
        "auto_accept_certified": float(accept.certified),
        "auto_accept_threshold": accept.threshold,
        "auto_accept_certifiable_error": accept.best_bound,
        "auto_accept_share": float(accepted.mean()),
        "auto_accept_error": float((~correct[accepted]).mean()) if accepted.any() else np.nan,
        "prediction_set_alpha": policy.prediction_sets.alpha,
        "prediction_set_alpha_requested": _requested_alpha(policy),
        "prediction_set_coverage": coverage,
        "prediction_set_mean_size": size,
    }
    if data.held_out is not None:
        unseen = policy.decide(data.held_out.outputs, reference)
        metrics["auto_accept_share_unknown_brands"] = float(unseen.auto_accepted.mean())
    return metrics


def _scores_by_group(choice: OpenSetChoice, data: EvaluationData, reference: Reference
                     ) -> dict[str, np.ndarray]:
    groups = {"known test photos": data.test}
    if data.held_out is not None and choice.brand_sets is not None:
        groups["selection brands"] = data.held_out.of(choice.brand_sets.selection)
        groups["report brands"] = data.held_out.of(choice.brand_sets.report)
    if data.non_meter is not None:
        groups["non-meter scenes"] = data.non_meter
    return {name: choice.rule.scores(outputs, reference) for name, outputs in groups.items()}


def _share_wrong(correct: np.ndarray, among: np.ndarray) -> float:
    return float(1 - correct[among].mean()) if among.any() else float("nan")


def _field_metrics(policy: DecisionPolicy, data: EvaluationData, reference: Reference,
                   accuracy: float) -> dict[str, float]:
    """Each field case of the test photos under the whole decision policy: top-1 and its drop
    from the plain photos, the share flagged UNKNOWN, the error among the photos given a label,
    and the share auto-accepted with its error. A low accuracy that is flagged is review work;
    a wrong label that is auto-accepted is what no one checks (NaN: no photo in that group)."""
    metrics = {}
    for case, outputs in data.field_cases.items():
        correct = outputs.probabilities.argmax(axis=1) == data.test_targets
        decisions = policy.decide(outputs, reference)
        metrics[f"field_{case}_accuracy"] = float(correct.mean())
        metrics[f"field_{case}_accuracy_drop"] = accuracy - float(correct.mean())
        metrics[f"field_{case}_unknown_share"] = float(decisions.unknown.mean())
        metrics[f"field_{case}_accepted_error"] = _share_wrong(correct, ~decisions.unknown)
        metrics[f"field_{case}_auto_accept_share"] = float(decisions.auto_accepted.mean())
        metrics[f"field_{case}_auto_accepted_error"] = _share_wrong(correct,
                                                                   decisions.auto_accepted)
    return metrics


def _non_meter_metrics(rule: OpenSetRule, data: EvaluationData, reference: Reference
                       ) -> dict[str, float]:
    if data.non_meter is None or data.non_meter_poor_quality is None or not len(data.non_meter):
        return {}
    unknown = rule.flags(data.non_meter, reference)
    poor = data.non_meter_poor_quality
    return {"non_meter_flagged_share": float((unknown | poor).mean()),
            "non_meter_poor_quality_share": float(poor.mean()),
            "non_meter_unknown_share": float((unknown & ~poor).mean())}


def cross_validated_recall(oof: OutOfFold | None, labels: np.ndarray) -> pd.Series:
    """Per-class recall of the out-of-fold linear head (NaN for every class without it)."""
    if oof is None:
        return pd.Series(np.nan, index=sorted(set(labels.astype(str))))
    correct = oof.probabilities.argmax(axis=1) == oof.targets
    return pd.Series(correct).groupby(oof.classes[oof.targets]).mean()


def evaluate(model: MeterClassifier, data: EvaluationData, frozen: FrozenEmbeddings,
             cfg: EvaluateConfig, seed: int) -> Evaluation:
    """Test metrics; the open-set rule chosen and reported on disjoint brand sets; the accept
    bound and prediction sets; non-meter scenes; per-class CV on frozen embeddings and the
    photos whose label it doubts."""
    classes = model.classes
    reference = Reference(model.reference_embeddings.numpy(), model.reference_labels.numpy())
    choice = choose_rule(data.val, data.test, data.held_out, reference, cfg, data.threshold_set)
    policy = DecisionPolicy(choice.rule, *_accept_and_sets(choice.rule, data, reference, cfg))
    probabilities, targets = data.test.probabilities, data.test_targets
    flagged = choice.rule.flags(data.test, reference)
    metrics = headline_metrics(targets, probabilities, len(classes))
    raw = torch.softmax(torch.as_tensor(data.test.logits), dim=1).numpy()
    accepted = ~flagged
    metrics.update({
        "ece_uncalibrated": expected_calibration_error(raw, targets),
        "temperature": float(model.temperature),
        "unknown_auroc": choice.table.loc[choice.table["chosen"], "auroc_report"].iloc[0],
        "unknown_flagged_share": (float(choice.rule.flags(data.held_out.outputs,
                                                          reference).mean())
                                  if data.held_out is not None else float("nan")),
        "coverage": float(accepted.mean()) if len(flagged) else float("nan"),
        "selective_accuracy": (float((probabilities.argmax(1) == targets)[accepted].mean())
                               if accepted.any() else float("nan")),
        "test_images": len(targets),
        "validation_images": len(data.val_targets) if data.threshold_set == "validation" else 0,
        "thresholds_set_on_test": float(data.threshold_set == "test"),
        "accept_and_sets_on_out_of_fold": float(data.out_of_fold is not None),
        "out_of_fold_photos": (len(data.out_of_fold.targets) if data.out_of_fold is not None
                               else 0),
        "test_classes": int(len(np.unique(targets))),
        "classes": len(classes),
        **choice_metrics(choice),
        **_guarantee_metrics(policy, data, reference),
        **_non_meter_metrics(choice.rule, data, reference),
    })
    metrics.update(_field_metrics(policy, data, reference, metrics["accuracy"]))
    per_class = per_class_table(targets, probabilities.argmax(1), classes)
    oof = out_of_fold_probabilities(frozen.embeddings, frozen.labels, cfg.cv_folds, seed)
    per_class["cv_recall"] = cross_validated_recall(oof, frozen.labels).reindex(per_class.index)
    per_class["measured_by"] = np.where(per_class["support"] > 0, "test", "cross-validation")
    metrics["cv_macro_recall"] = float(per_class["cv_recall"].mean())
    suspects = (suspect_labels(oof, frozen.paths, cfg.suspect_filter) if oof is not None
                else None)
    metrics["suspect_labels"] = float(len(suspects)) if suspects is not None else np.nan
    audit = audit_table(data.test_paths, targets, probabilities, classes, flagged)
    log.info("ECE %.1f%% on %d test photos; a calibrated model reads %.1f%% on as few (95th "
             "percentile %.1f%%)", 100 * metrics["ece"], len(targets),
             100 * metrics["ece_if_calibrated"], 100 * metrics["ece_if_calibrated_p95"])
    log.info("open-set rule %s (%s), threshold %.4f: flags %.1f%% of report-brand photos, "
             "%.1f%% of known test photos", choice.rule.label, choice.selected_by,
             choice.rule.threshold, 100 * metrics["unknown_flagged_share_report"],
             100 * metrics["known_flagged_share"])
    return Evaluation(metrics, per_class, audit, policy, choice,
                      _scores_by_group(choice, data, reference), suspects)


def json_safe(value: object) -> object:
    """JSON without Infinity/NaN (which strict readers refuse): "inf" and null instead."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not np.isfinite(value):
        return None if np.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _json_value(value: object) -> object:
    return value.tolist() if hasattr(value, "tolist") else str(value)


SUSPECT_SHEET = 36  # thumbnails on the suspected-label sheet


def _write_suspects(suspects: pd.DataFrame, image_root: Path, out_dir: Path
                    ) -> dict[str, Path]:
    files = EvaluationReports(out_dir)
    paths = {"suspect_labels": files.suspect_labels}
    suspects.to_csv(paths["suspect_labels"], index=False)
    if len(suspects):
        paths["suspect_sheet"] = contact_sheet(
            [image_root / p for p in suspects["path"]],
            [f"{g} -> {s}?" for g, s in zip(suspects["given_label"], suspects["suggested_label"],
                                            strict=True)],
            f"{len(suspects)} photos whose label the out-of-fold head doubts (given -> "
            "suggested); most doubted first", files.suspect_sheet, SUSPECT_SHEET, 128)
        log.warning("%d suspected label error(s): %s (and %s)", len(suspects),
                    paths["suspect_labels"], paths["suspect_sheet"])
    return paths


def _certification_set_name(metrics: dict[str, float]) -> str:
    if metrics.get("accept_and_sets_on_out_of_fold"):
        return f"{int(metrics['out_of_fold_photos'])} out-of-fold training photos"
    return "test photos" if metrics.get("thresholds_set_on_test") else "validation photos"


def write_reports(evaluation: Evaluation, classes: list[str], out_dir: Path,
                  image_root: Path | None = None) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        name: path for name, path in EvaluationReports(out_dir).tracked().items()
        if name not in ("calibration", "int8")  # written by evaluation.steps
    }
    clean = {k: (v if np.isfinite(v) else None) for k, v in evaluation.metrics.items()}
    paths["metrics"].write_text(json.dumps(clean, indent=2, sort_keys=True) + "\n")
    choice = evaluation.open_set_choice
    sets = choice.brand_sets
    paths["decision"].write_text(json.dumps({
        "policy": json_safe(evaluation.policy.to_dict()),
        "accept_and_sets_set_on": _certification_set_name(evaluation.metrics),
        "open_set_selected_by": choice.selected_by,
        "selection_brands": list(sets.selection) if sets else [],
        "report_brands": list(sets.report) if sets else []},
        indent=2, default=_json_value) + "\n")
    choice.table.to_csv(paths["open_set"], index=False)
    plot_open_set(evaluation.open_set_scores, evaluation.policy.open_set, paths["open_set_plot"])
    evaluation.per_class.to_csv(paths["per_class"])
    evaluation.audit.to_csv(paths["audit"], index=False)
    index = {c: i for i, c in enumerate(classes)}
    plot_confusion_matrix(evaluation.audit["true_label"].map(index).to_numpy(),
                          evaluation.audit["predicted_label"].map(index).to_numpy(),
                          classes, paths["confusion_matrix"])
    if evaluation.suspects is not None and image_root is not None:
        paths.update(_write_suspects(evaluation.suspects, image_root, out_dir))
    log.info("evaluation reports in %s", out_dir)
    return paths
