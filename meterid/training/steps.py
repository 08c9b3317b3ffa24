"""Training and evaluation as file-level steps, shared by the CLI, the Prefect tasks and dvc.

``train_candidate`` trains and writes ``models/candidate/`` (checkpoint, frozen embeddings for
cross-validation, the MLflow run id); ``evaluate_candidate`` evaluates it, writes the reports, and
logs, registers and (by the promotion rule) promotes it in MLflow.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from meterid import registry, tracking
from meterid.config import Params
from meterid.data.images import load_rgb
from meterid.data.split import read_splits
from meterid.evaluation.decision import DecisionPolicy
from meterid.evaluation.evaluate import (
    FrozenEmbeddings,
    evaluate,
    json_safe,
    write_reports,
)
from meterid.evaluation.inputs import evaluation_data, evaluation_inputs, finished_model
from meterid.evaluation.openset import ModelOutputs
from meterid.inference.predictor import reference_of
from meterid.inference.quantize import Int8Graph, make_int8_graph
from meterid.model.classifier import MeterClassifier, load_checkpoint, save_checkpoint
from meterid.model.presets import eval_preset
from meterid.training.calibration import Calibration
from meterid.training.cross_fit import OutOfFoldLogits
from meterid.training.quality_gate import log_quality_limits, training_photo_limits
from meterid.training.trainer import (
    GRAYSCALE_HEAD_PHASE,
    train_two_phase,
)

log = logging.getLogger(__name__)

TRAINING_EXPERIMENT = "meterid-training"
INT8_METRICS = ("top1_agreement", "unknown_agreement", "accuracy_int8", "passed")


@dataclass(frozen=True)
class CandidateFiles:
    """What ``meterid train`` leaves for ``meterid evaluate`` (a dvc output)."""

    folder: Path

    @property
    def checkpoint(self) -> Path:
        return self.folder / "model.pt"

    @property
    def frozen_embeddings(self) -> Path:
        return self.folder / "frozen_embeddings.npz"

    @property
    def out_of_fold(self) -> Path:
        """Cross-fitted logits of the training photos; only when validation was too small."""
        return self.folder / "out_of_fold.npz"

    @property
    def run_info(self) -> Path:
        return self.folder / "run.json"


def candidate_files(params: Params) -> CandidateFiles:
    return CandidateFiles(params.paths.models_dir / "candidate")


def test_split_id(splits: pd.DataFrame) -> str:
    """Identifies the test set, so that only models measured on the same one are compared."""
    paths = sorted(splits.loc[splits["split"] == "test", "path"])
    return hashlib.sha256("\n".join(paths).encode()).hexdigest()[:16]


def _log_run_context(params: Params, repo: Path) -> None:
    """The effective parameters (params.yaml plus any flow override), data and code versions."""
    import mlflow

    mlflow.log_params(tracking.flatten_params(params.model_dump(mode="json", by_alias=True)))
    mlflow.set_tags({"data_version": tracking.dvc_data_version(repo / "data.dvc") or "unknown",
                     "git_commit": tracking.git_commit(repo) or "unknown"})


def train_candidate(params: Params, repo: Path) -> dict:
    """Train the two-phase model on the split and save the candidate; tracked in MLflow."""
    import mlflow

    splits = read_splits(params.paths.splits)
    files = candidate_files(params)
    tracking.use_experiment(TRAINING_EXPERIMENT)
    with mlflow.start_run(run_name=f"train-{params.train.backbone}") as run:
        _log_run_context(params, repo)
        mlflow.set_tag("phase1", "head only" if params.train.weights != "none"
                       else "whole network (weights=none)")
        result = train_two_phase(splits, params.paths.raw_dir, params.train,
                                 params.validate_.max_pixels)
        tracking.log_epoch_history(result.history)
        mlflow.log_metrics({f"time_{k}": v for k, v in result.timings.items()})
        _log_calibration(result.calibration)
        model, frozen = finished_model(result)
        quality = training_photo_limits(splits, params.paths.raw_dir,
                                        model.preprocessing.image_size,
                                        params.validate_.max_pixels, params.score.quality)
        log_quality_limits(quality)
        model.quality_limits = quality.to_dict()
        save_checkpoint(model, files.checkpoint)
        np.savez_compressed(files.frozen_embeddings, embeddings=frozen.embeddings,
                            labels=frozen.labels, paths=np.array(frozen.paths))
        files.out_of_fold.unlink(missing_ok=True)  # a previous candidate's
        if result.out_of_fold is not None:
            result.out_of_fold.save(files.out_of_fold)
        summary = {"run_id": run.info.run_id, "timings": result.timings,
                   "epochs": {name: sum(r["phase"] == p for r in result.history)
                              for name, p in (("phase1", 1), ("phase2", 2),
                                              ("grayscale_head", GRAYSCALE_HEAD_PHASE))},
                   "temperature": float(model.temperature),
                   "calibration": result.calibration.to_dict(),
                   "grayscale_head_calibration": None if result.grayscale_calibration is None
                   else result.grayscale_calibration.to_dict(),
                   "classes": list(model.classes),
                   "quality_limits": model.quality_limits}
        files.run_info.write_text(json.dumps(summary, indent=2) + "\n")
    log.info("candidate model in %s (MLflow run %s)", files.folder, summary["run_id"])
    return summary


def _log_calibration(calibration: Calibration) -> None:
    import mlflow

    mlflow.set_tags({"calibration_method": calibration.method,
                     "calibration_fitted_on": calibration.fitted_on,
                     "calibration_reason": calibration.reason})
    mlflow.log_metrics({key: value for key, value in (
        ("calibration_cv_nll_uncalibrated", calibration.cv_nll_uncalibrated),
        ("calibration_cv_nll_calibrated", calibration.cv_nll_calibrated)) if not np.isnan(value)})


def _photo_batches(paths: list[Path], model: MeterClassifier, max_pixels: int,
                   batch_size: int = 32) -> Iterator[np.ndarray]:
    """Normalised NCHW float32 batches, read as every engine's input is: the model's decode,
    then its eval preset."""
    pre = model.preprocessing
    preset = eval_preset(pre.image_size, pre.mean, pre.std)
    for start in range(0, len(paths), batch_size):
        yield torch.stack([preset(load_rgb(p, max_pixels, pre.image_size))
                           for p in paths[start:start + batch_size]]).numpy()


def _int8_graph(model: MeterClassifier, splits: pd.DataFrame, params: Params
                ) -> Int8Graph | None:
    """The int8 graph, calibrated on training photos and checked on the test photos under the
    model's decision policy (which must be set)."""
    cfg, raw, max_pixels = params.evaluate.int8, params.paths.raw_dir, params.validate_.max_pixels
    test = splits[splits["split"] == "test"]
    if not cfg.enabled or test.empty:
        if cfg.enabled:
            log.warning("no test photos to check an int8 graph on: none made, scoring uses fp32")
        return None
    train = splits[splits["split"] == "train"]
    calibration = train.sample(min(cfg.calibration_photos, len(train)),
                               random_state=params.train.seed)
    index = {c: i for i, c in enumerate(model.classes)}
    policy, reference = DecisionPolicy.from_dict(model.decision), reference_of(model)
    temperature = float(model.temperature)

    def decide(logits: np.ndarray, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probabilities = torch.softmax(torch.from_numpy(logits) / temperature, dim=-1).numpy()
        outputs = ModelOutputs(logits, probabilities, embeddings, temperature)
        return logits.argmax(axis=1), policy.decide(outputs, reference).unknown

    return make_int8_graph(
        model, _photo_batches([raw / p for p in calibration["path"]], model, max_pixels),
        list(_photo_batches([raw / p for p in test["path"]], model, max_pixels)),
        np.array([index[c] for c in test["label"]]), decide, cfg.form, cfg.min_agreement)


def evaluate_candidate(params: Params) -> dict:
    """Evaluate the candidate, write reports, then log, register and maybe promote it."""
    import mlflow

    files = candidate_files(params)
    model = load_checkpoint(files.checkpoint)
    splits = read_splits(params.paths.splits)
    frozen = np.load(files.frozen_embeddings)
    if "paths" not in frozen.files:
        raise ValueError(f"{files.frozen_embeddings} predates the suspected-label check (no "
                         "paths): train again (`meterid train`)")
    embeddings = FrozenEmbeddings(frozen["embeddings"], frozen["labels"].astype(str),
                                  [str(p) for p in frozen["paths"]])
    out_of_fold = (OutOfFoldLogits.load(files.out_of_fold) if files.out_of_fold.exists()
                   else None)
    evaluation = evaluate(model, evaluation_data(model, evaluation_inputs(model, splits, params),
                                                 out_of_fold),
                          embeddings, params.evaluate, params.train.seed)
    model.decision = evaluation.policy.to_dict()
    int8 = _int8_graph(model, splits, params)  # before the reports: metrics.json carries it
    if int8 is not None:
        evaluation.metrics.update({f"int8_{k}": float(v) for k, v in int8.check.to_dict().items()
                                   if k in INT8_METRICS})
    reports = write_reports(evaluation, model.classes, params.paths.evaluation_reports,
                            params.paths.raw_dir)
    if int8 is not None:
        reports["int8"] = params.paths.evaluation_reports / "int8.json"
        reports["int8"].write_text(json.dumps(int8.check.to_dict(), indent=2) + "\n")
    run_info = json.loads(files.run_info.read_text())
    reports["calibration"] = params.paths.evaluation_reports / "calibration.json"
    reports["calibration"].write_text(json.dumps(json_safe(
        {**run_info["calibration"], "ece_before": evaluation.metrics["ece_uncalibrated"],
         "ece_after": evaluation.metrics["ece"]}), indent=2) + "\n")
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
        info = registry.log_model(model, params.evaluate.threshold, int8)
        version = registry.register(info.model_uri, run_id, evaluation.metrics,
                                    test_split_id=test_split_id(splits))
    cfg = params.register_
    aliases = registry.apply_promotion_rule(version, evaluation.metrics, cfg.auto_promote,
                                            cfg.promote_margin, cfg.promote_metric,
                                            test_split_id(splits))
    export_champion(params)  # the champion may be this version or an earlier one
    return {"version": version, "aliases": aliases, "metrics": evaluation.metrics,
            "decision": model.decision, "open_set_rule": evaluation.open_set_choice.rule.label,
            "reports": {k: str(v) for k, v in reports.items()}}


def export_champion(params: Params) -> Path:
    """The champion as a self-contained folder under models/, for use without MLflow."""
    out = registry.export_model(f"models:/{registry.MODEL_NAME}@{registry.CHAMPION}",
                                params.paths.models_dir / "champion")
    log.info("champion exported to %s", out)
    return out
