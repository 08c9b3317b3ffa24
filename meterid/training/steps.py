"""Training as a file-level step, shared by the CLI, the Prefect tasks and dvc.

``train_candidate`` trains and writes ``models/candidate/`` (the model bundle, frozen embeddings for
cross-validation, out-of-fold logits when validation is too small, the MLflow run id);
``evaluation.steps.evaluate_candidate`` reads it from there.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from meterid import tracking
from meterid.catalog import candidate_files
from meterid.config import Params
from meterid.data.split import read_splits
from meterid.inference.bundle import ModelBundle, write_bundle
from meterid.training.calibration import Calibration
from meterid.training.outputs import finished_model
from meterid.training.quality_gate import log_quality_limits, training_photo_limits
from meterid.training.trainer import (
    GRAYSCALE_HEAD_PHASE,
    train_two_phase,
)

log = logging.getLogger(__name__)

TRAINING_EXPERIMENT = "meterid-training"


def test_split_id(splits: pd.DataFrame) -> str:
    """Identifies the test set, so that only models measured on the same one are compared."""
    paths = sorted(splits.loc[splits["split"] == "test", "path"])
    return hashlib.sha256("\n".join(paths).encode()).hexdigest()[:16]


def _log_run_context(params: Params, repo: Path) -> None:
    """The effective parameters (params.yaml plus any flow override), data and code versions."""
    import mlflow

    mlflow.log_params(tracking.flatten_params(params.model_dump(mode="json", by_alias=True)))
    # the photos' .dvc file: data.dvc in this repository, data/raw.dvc in a `meterid init` project
    data_version = tracking.photos_version(repo, params.paths.raw_dir) or "not tracked by DVC"
    mlflow.set_tags({tracking.DATA_VERSION_TAG: data_version,
                     "git_commit": tracking.git_commit(repo) or "unknown"})


def train_candidate(params: Params, repo: Path) -> dict:
    """Train the two-phase model on the split and save the candidate; tracked in MLflow."""
    import mlflow

    tracking.use_experiment(TRAINING_EXPERIMENT)  # a store that cannot log it fails first
    splits = read_splits(params.paths.splits)
    files = candidate_files(params)
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
        write_bundle(ModelBundle.of(model, quality_limits=quality), files.bundle)
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
                   "quality_limits": quality.to_dict()}
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
