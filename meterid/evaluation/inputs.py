"""The sets evaluation reads, through the trained model's frozen stem: validation and test
photos, the held-out brands, generated non-meter scenes and the test photos in each field case.
``meterid evaluate`` and the benchmarks build them with the same calls; nothing here needs MLflow.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from meterid.config import Params
from meterid.data.demo.scenes import non_meter_scenes
from meterid.evaluation.evaluate import (
    EvaluationData,
    OutOfFoldOutputs,
    brands_of,
    model_outputs,
)
from meterid.evaluation.operating_point import HeldOut
from meterid.inference.quality import (
    QualityLimits,
    gate_limits,
    measure_quality,
    quality_issues,
)
from meterid.model.classifier import MeterClassifier
from meterid.photos.field import burn_text_strip, to_grayscale
from meterid.photos.images import load_rgb
from meterid.training.cross_fit import OutOfFoldLogits
from meterid.training.trainer import (
    CachedSplit,
    cache_folder,
    cache_images,
    folder_images,
)

log = logging.getLogger(__name__)

def split_activations(model: MeterClassifier, splits: pd.DataFrame, params: Params, name: str
           ) -> CachedSplit:
    rows = splits[splits["split"] == name]
    index = {c: i for i, c in enumerate(model.classes)}
    paths = [params.paths.raw_dir / p for p in rows["path"]]
    return cache_images(model, paths, [index[c] for c in rows["label"]], params.train,
                        params.validate_.max_pixels, params.paths.raw_dir, f"{name} images")


def _held_out(model: MeterClassifier, params: Params) -> CachedSplit | None:
    folder = params.paths.unknown_dir
    brands = {p.name for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else set()
    # A brand added as a class (`meterid candidates add`) is known now: flagging its photos
    # is what the rule must not learn.
    learnt = frozenset(brands & set(model.classes))
    if learnt:
        log.warning("%s: %s is a class of the model, so its photos are not held out; move it "
                    "out of %s", folder, ", ".join(sorted(learnt)), folder)
    if not folder.is_dir() or not folder_images(folder, learnt):
        log.warning("no held-out brands in %s: the open-set rule cannot be chosen or measured "
                    "on unseen brands", folder)
        return None
    return cache_folder(model, folder, params.train, params.validate_.max_pixels, learnt)


def _non_meter(model: MeterClassifier, params: Params, quality_limits: QualityLimits | None
               ) -> tuple[CachedSplit, np.ndarray]:
    """Generated non-meter scenes, JPEG-encoded as field photos are: their activations and
    whether the quality gate, with the limits the model scores with, already stops each one."""
    limits = gate_limits(quality_limits, params.score.quality)
    with tempfile.TemporaryDirectory(prefix="meterid-scenes-") as tmp:
        paths, poor = [], []
        for i, (kind, image) in enumerate(non_meter_scenes(params.evaluate.non_meter_scenes,
                                                           params.train.seed)):
            paths.append(Path(tmp) / f"{i:03d}-{kind}.jpg")
            image.save(paths[-1], quality=85)
            scored = load_rgb(paths[-1], params.validate_.max_pixels, params.train.photo_size)
            poor.append(bool(quality_issues(measure_quality(scored), limits)))
        cached = cache_images(model, paths, [-1] * len(paths), params.train,
                              params.validate_.max_pixels, Path(tmp), "non-meter scenes")
    return cached, np.array(poor, dtype=bool)


FIELD_CASES = {"grayscale": lambda image, rng: to_grayscale(image),
               "text_strip": burn_text_strip}


def field_case_activations(model: MeterClassifier, photos: list[Path], targets: list[int],
                           case: str, params: Params) -> CachedSplit:
    """``photos`` as night-mode cameras or field apps deliver them (``FIELD_CASES[case]``),
    JPEG-encoded like field photos, through the model's stem."""
    rng = np.random.default_rng(params.train.seed)
    with tempfile.TemporaryDirectory(prefix=f"meterid-{case}-") as tmp:
        paths = []
        for i, source in enumerate(photos):
            paths.append(Path(tmp) / f"{i:05d}.jpg")
            FIELD_CASES[case](load_rgb(source, params.validate_.max_pixels), rng).save(
                paths[-1], quality=90)
        return cache_images(model, paths, targets, params.train, params.validate_.max_pixels,
                            Path(tmp), f"test photos, {case}")


@dataclass(frozen=True)
class EvaluationInputs:
    """The stem activations of every set evaluation reads. They depend on the frozen stem
    alone, so models trained on one cache differently share them (benchmarks do)."""

    val: CachedSplit
    test: CachedSplit
    threshold_set: str  # "test" when there is no validation split
    held_out: CachedSplit | None
    non_meter: CachedSplit | None
    non_meter_poor_quality: np.ndarray | None
    field_cases: dict[str, CachedSplit]


def evaluation_inputs(model: MeterClassifier, splits: pd.DataFrame, params: Params,
                      quality_limits: QualityLimits | None = None) -> EvaluationInputs:
    """Every set evaluation reads, through the model's stem; ``quality_limits``: those the
    model scores with (None: the params' generic limits)."""
    val, test = (split_activations(model, splits, params, name) for name in ("val", "test"))
    threshold_set = "validation"
    if not len(val.targets):
        # Small collections: no class above split.high photos, so no validation split. The
        # thresholds are then set on the test photos, and every report says so.
        log.warning("no validation photos (no class has more than split.high=%d): the open-set "
                    "threshold, accept bound and prediction sets are set on the test photos, "
                    "so their known-photo figures are not independent", params.split.high)
        val, threshold_set = test, "test"
    non_meter, poor = (_non_meter(model, params, quality_limits)
                       if params.evaluate.non_meter_scenes else (None, None))
    test_photos = [params.paths.raw_dir / p for p in test.paths]
    field = {case: field_case_activations(model, test_photos, [-1] * len(test_photos), case,
                                          params) for case in FIELD_CASES}
    return EvaluationInputs(val, test, threshold_set, _held_out(model, params), non_meter,
                            poor, field)


def evaluation_data(model: MeterClassifier, inputs: EvaluationInputs,
                    out_of_fold: OutOfFoldLogits | None = None) -> EvaluationData:
    """The model's outputs on every set of ``inputs`` (and on the training photos through
    cross-fitted models, when training made them)."""
    held_out = (HeldOut(model_outputs(model, inputs.held_out), brands_of(inputs.held_out))
                if inputs.held_out is not None else None)
    return EvaluationData(
        model_outputs(model, inputs.val), inputs.val.targets.numpy(),
        model_outputs(model, inputs.test), inputs.test.targets.numpy(), inputs.test.paths,
        held_out, None if inputs.non_meter is None else model_outputs(model, inputs.non_meter),
        inputs.non_meter_poor_quality, inputs.threshold_set,
        {case: model_outputs(model, cached) for case, cached in inputs.field_cases.items()},
        None if out_of_fold is None else OutOfFoldOutputs.of(model, out_of_fold))
