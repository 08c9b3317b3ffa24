"""The quality gate's limits at training time: measured on the training photos as scoring decodes
them, kept in the model bundle, and absent (None) from bundles written before them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd

from meterid.inference.bundle import CARD_FILE, ModelBundle, read_bundle, write_bundle
from meterid.inference.quality import DERIVED, GENERIC, gate_limits
from meterid.training.quality_gate import training_photo_limits


def test_limits_come_from_the_training_photos_only(small_demo: Path, params) -> None:
    raw = small_demo / "raw"
    paths = sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*.jpg"))
    splits = pd.DataFrame({"path": paths, "split": ["train", "train", "test"] * (len(paths) // 3)
                           + ["train"] * (len(paths) % 3)})
    limits = training_photo_limits(splits, raw, 64, params.validate_.max_pixels,
                                   params.score.quality)
    assert limits.source == DERIVED and limits.photos == int((splits["split"] == "train").sum())
    assert 0.0 <= limits.stopped_share <= 0.01
    assert set(limits.generic_stopped) == {"min_brightness", "max_brightness", "min_contrast",
                                           "min_sharpness", "max_glare", "any"}


def test_the_bundle_keeps_the_limits_and_older_ones_fall_back(
        tiny_model, params, tmp_path: Path) -> None:
    generic = gate_limits(None, params.score.quality)
    limits = dataclasses.replace(generic, source=DERIVED, photos=12, stopped_share=0.0,
                                 generic_stopped={"any": 0.25})
    written = write_bundle(ModelBundle.of(tiny_model.model, quality_limits=limits), tmp_path)
    assert read_bundle(written).quality_limits == limits
    assert gate_limits(read_bundle(written).quality_limits, params.score.quality).photos == 12

    card = json.loads((tmp_path / CARD_FILE).read_text())
    del card["quality_limits"]  # a bundle written before derived limits
    (tmp_path / CARD_FILE).write_text(json.dumps(card))
    assert read_bundle(tmp_path).quality_limits is None
    assert gate_limits(None, params.score.quality).source == GENERIC
