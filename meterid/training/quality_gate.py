"""The quality gate's limits for a trained model, derived from the photos it was trained on.

Each training photo is decoded and measured exactly as scoring does (``load_rgb`` at the model's
input size, then ``measure_quality``), so a photo like the training photos passes the gate
(``quality.derive_limits`` has the rule). The limits travel with the model
(``MeterClassifier.quality_limits``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from meterid.config import QualityConfig
from meterid.inference.quality import QualityLimits, derive_limits, measure_quality
from meterid.photos.images import load_rgb

log = logging.getLogger(__name__)


def training_photo_limits(splits: pd.DataFrame, raw_dir: Path, image_size: int,
                          max_pixels: int, generic: QualityConfig) -> QualityLimits:
    """The limits derived from the split's training photos, as the model at ``image_size``
    scores them."""
    paths = [raw_dir / path for path in splits.loc[splits["split"] == "train", "path"]]
    limits = derive_limits([measure_quality(load_rgb(path, max_pixels, image_size))
                            for path in paths], generic)
    log.info("quality gate %s; limits %s", limits.describe(), limit_values(limits))
    return limits


def limit_values(limits: QualityLimits) -> dict[str, float]:
    return {key: value for key, value in limits.to_dict().items()
            if key.startswith(("min_", "max_"))}


def log_quality_limits(limits: QualityLimits) -> None:
    """Into the active MLflow run: the limits, and the share of the training photos that they
    and the generic limits stop."""
    import mlflow

    mlflow.log_metrics({**{f"quality_{k}": v for k, v in limit_values(limits).items()},
                        "quality_training_photos": limits.photos,
                        "quality_training_stopped_share": float("nan")
                        if limits.stopped_share is None else limits.stopped_share,
                        **{"quality_generic_stopped_share" + ("" if k == "any" else f"_{k}"): v
                           for k, v in limits.generic_stopped.items()}})
