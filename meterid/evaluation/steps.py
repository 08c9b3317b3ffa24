"""Evaluation as a file-level step, shared by the CLI, the Prefect tasks and dvc.

``evaluate_candidate`` evaluates the candidate ``training.steps.train_candidate`` wrote, writes
the reports, makes the int8 graph, and logs, registers and (by the promotion rule) promotes it
in MLflow; ``export_champion`` writes the champion as a folder usable without MLflow.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from meterid import registry, tracking
from meterid.catalog import EvaluationReports, candidate_files
from meterid.config import Int8Config, Params
from meterid.data.split import read_splits
from meterid.decision.policy import DecisionPolicy
from meterid.evaluation.evaluate import evaluate, json_safe, write_reports
from meterid.evaluation.field import FieldScore, field_photos, score_field
from meterid.evaluation.inputs import evaluation_data, evaluation_inputs
from meterid.inference.bundle import ModelBundle, read_bundle
from meterid.inference.int8 import Int8Graph
from meterid.inference.predictor import reference_of
from meterid.inference.quality import GRAYSCALE_MAX_CHROMA, image_chroma
from meterid.inference.quantize import Decide, make_int8_graph
from meterid.model.classifier import MeterClassifier
from meterid.model.presets import eval_preset
from meterid.photos.images import load_rgb
from meterid.review.store import open_store
from meterid.training.cross_fit import OutOfFoldLogits
from meterid.training.outputs import FrozenEmbeddings
from meterid.training.steps import TRAINING_EXPERIMENT, test_split_id

log = logging.getLogger(__name__)

INT8_METRICS = ("top1_agreement", "unknown_agreement", "accuracy_int8", "passed")


def _photo_batches(paths: list[Path], model: MeterClassifier, max_pixels: int,
                   batch_size: int = 32) -> Iterator[np.ndarray]:
    """Normalised NCHW float32 batches, read as every engine's input is: the model's decode,
    then its eval preset."""
    pre = model.preprocessing
    preset = eval_preset(pre.image_size, pre.mean, pre.std)
    for start in range(0, len(paths), batch_size):
        yield torch.stack([preset(load_rgb(p, max_pixels, pre.image_size))
                           for p in paths[start:start + batch_size]]).numpy()


@dataclass(frozen=True)
class Int8Inputs:
    """What an int8 graph is calibrated on (training photos) and checked on (the test photos
    and their labels, decided as scoring decides them)."""

    model: MeterClassifier
    calibration_paths: list[Path]
    check: list[np.ndarray]
    check_targets: np.ndarray
    decide: Decide
    max_pixels: int

    def graph(self, cfg: Int8Config) -> Int8Graph:
        calibration = _photo_batches(self.calibration_paths, self.model, self.max_pixels)
        return make_int8_graph(self.model, calibration, self.check, self.check_targets,
                               self.decide, cfg.form, cfg.min_agreement, cfg.float_convs)


def int8_inputs(model: MeterClassifier, policy: DecisionPolicy, splits: pd.DataFrame,
                params: Params) -> Int8Inputs | None:
    """The int8 graph's photos under the evaluated decision ``policy``; None without test
    photos."""
    cfg, raw, max_pixels = params.evaluate.int8, params.paths.raw_dir, params.validate_.max_pixels
    test = splits[splits["split"] == "test"]
    if test.empty:
        return None
    train = splits[splits["split"] == "train"]
    calibration = train.sample(min(cfg.calibration_photos, len(train)),
                               random_state=params.train.seed)
    index = {c: i for i, c in enumerate(model.classes)}
    reference = reference_of(model)
    test_paths = [raw / p for p in test["path"]]
    size = model.preprocessing.image_size
    colourless = np.array([image_chroma(load_rgb(p, max_pixels, size)) < GRAYSCALE_MAX_CHROMA
                           for p in test_paths])

    def decide(logits: np.ndarray, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # As scoring decides: photos without colour read by the grayscale head.
        outputs = model.outputs(logits, embeddings, colourless)
        return outputs.logits.argmax(axis=1), policy.decide(outputs, reference).unknown

    return Int8Inputs(model, [raw / p for p in calibration["path"]],
                      list(_photo_batches(test_paths, model, max_pixels)),
                      np.array([index[c] for c in test["label"]]), decide, max_pixels)


def _int8_graph(model: MeterClassifier, policy: DecisionPolicy, splits: pd.DataFrame,
                params: Params) -> Int8Graph | None:
    """The int8 graph, calibrated on training photos and checked on the test photos."""
    if not params.evaluate.int8.enabled:
        return None
    inputs = int8_inputs(model, policy, splits, params)
    if inputs is None:
        log.warning("no test photos to check an int8 graph on: none made, scoring uses fp32")
        return None
    return inputs.graph(params.evaluate.int8)


def evaluate_candidate(params: Params) -> dict:
    """Evaluate the candidate, write reports, then log, register and maybe promote it."""
    import mlflow

    tracking.use_experiment(TRAINING_EXPERIMENT)  # a store that cannot log it fails first
    files = candidate_files(params)
    candidate = read_bundle(files.bundle)
    model = candidate.model
    splits = read_splits(params.paths.splits)
    frozen = np.load(files.frozen_embeddings)
    if "paths" not in frozen.files:
        raise ValueError(f"{files.frozen_embeddings} predates the suspected-label check (no "
                         "paths): train again (`meterid train`)")
    embeddings = FrozenEmbeddings(frozen["embeddings"], frozen["labels"].astype(str),
                                  [str(p) for p in frozen["paths"]])
    out_of_fold = (OutOfFoldLogits.load(files.out_of_fold) if files.out_of_fold.exists()
                   else None)
    inputs = evaluation_inputs(model, splits, params, candidate.quality_limits)
    evaluation = evaluate(model, evaluation_data(model, inputs, out_of_fold), embeddings,
                          params.evaluate, params.train.seed)
    int8 = _int8_graph(model, evaluation.policy, splits, params)  # metrics.json carries it
    if int8 is not None:
        evaluation.metrics.update({f"int8_{k}": float(v) for k, v in int8.check.to_dict().items()
                                   if k in INT8_METRICS})
    field = _field_test(params, candidate.with_policy(evaluation.policy, int8))
    if field is not None:
        evaluation.metrics.update(field.metrics)
    reports = write_reports(evaluation, model.classes, params.paths.evaluation_reports,
                            params.paths.raw_dir)
    if field is not None:
        reports["field"] = EvaluationReports(params.paths.evaluation_reports).field_per_class
        field.candidate.per_class.to_csv(reports["field"], index=False)
    if int8 is not None:
        reports["int8"] = EvaluationReports(params.paths.evaluation_reports).int8
        reports["int8"].write_text(json.dumps(int8.check.to_dict(), indent=2) + "\n")
    run_info = json.loads(files.run_info.read_text())
    reports["calibration"] = EvaluationReports(params.paths.evaluation_reports).calibration
    reports["calibration"].write_text(json.dumps(json_safe(
        {**run_info["calibration"], "ece_before": evaluation.metrics["ece_uncalibrated"],
         "ece_after": evaluation.metrics["ece"],
         "ece_if_calibrated": evaluation.metrics["ece_if_calibrated"],
         "ece_if_calibrated_p95": evaluation.metrics["ece_if_calibrated_p95"]}),
        indent=2) + "\n")
    run_id = run_info["run_id"]
    tracking.use_experiment(TRAINING_EXPERIMENT)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({k: v for k, v in evaluation.metrics.items() if np.isfinite(v)})
        choice = evaluation.open_set_choice
        mlflow.set_tags({"open_set_rule": choice.rule.label,
                         "open_set_operating_point": choice.rule.operating_point,
                         "open_set_selected_by": choice.selected_by,
                         "open_set_selection_brands": ",".join(choice.brand_sets.selection)
                         if choice.brand_sets else "",
                         "open_set_report_brands": ",".join(choice.brand_sets.report)
                         if choice.brand_sets else ""})
        mlflow.log_artifacts(str(params.paths.evaluation_reports), artifact_path="evaluation")
        info = registry.log_model(candidate.with_policy(evaluation.policy, int8))
        version = registry.register(info.model_uri, run_id, evaluation.metrics,
                                    test_split_id=test_split_id(splits))
    cfg = params.register_
    aliases = registry.apply_promotion_rule(version, evaluation.metrics, cfg.auto_promote,
                                            cfg.promote_margin, cfg.promote_metric,
                                            test_split_id(splits),
                                            field.both if field is not None else None)
    export_champion(params)  # the champion may be this version or an earlier one
    return {"version": version, "aliases": aliases, "metrics": evaluation.metrics,
            "decision": evaluation.policy.to_dict(),
            "open_set_rule": evaluation.open_set_choice.rule.label,
            "reports": {k: str(v) for k, v in reports.items()}}


@dataclass(frozen=True)
class FieldTest:
    candidate: FieldScore
    champion: FieldScore | None  # on the same photos; None without a loadable champion

    @property
    def metrics(self) -> dict[str, float]:
        figures = {"field_accuracy": self.candidate.accuracy,
                   "field_photos": float(self.candidate.photos)}
        if self.champion is not None:
            figures["champion_field_accuracy"] = self.champion.accuracy
        return figures

    @property
    def both(self) -> tuple[float, float] | None:
        return (None if self.champion is None
                else (self.candidate.accuracy, self.champion.accuracy))


def _field_test(params: Params, candidate: ModelBundle) -> FieldTest | None:
    """The candidate, and the champion, on the field test set (None when reviewers have
    labelled no photo of a known class that training never saw)."""
    manifest = pd.read_csv(params.paths.manifest, usecols=["sha256"])
    with field_photos(params, open_store(params), candidate.classes,
                      set(manifest["sha256"])) as photos:
        if not photos:
            return None
        max_pixels = params.validate_.max_pixels
        mine = score_field(candidate, photos, max_pixels)
        try:
            champion = registry.load_classifier(f"models:/{registry.MODEL_NAME}@"
                                                f"{registry.CHAMPION}")
        except Exception as error:  # noqa: BLE001 - no champion yet: nothing to compare
            log.info("field test set: no champion to compare (%s)", error)
            return FieldTest(mine, None)
        theirs = score_field(champion, photos, max_pixels)
    log.info("field test set: %d reviewed photos, candidate %.4f, champion %.4f",
             mine.photos, mine.accuracy, theirs.accuracy)
    return FieldTest(mine, theirs)


def export_champion(params: Params) -> Path:
    """The champion as a self-contained folder under models/, for use without MLflow."""
    out = registry.export_model(f"models:/{registry.MODEL_NAME}@{registry.CHAMPION}",
                                params.paths.models_dir / "champion")
    log.info("champion exported to %s", out)
    return out
