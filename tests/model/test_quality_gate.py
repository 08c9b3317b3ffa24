"""The quality gate's limits at training time: measured on the training photos as scoring decodes
them, kept in the checkpoint, and absent (None) from checkpoints written before them."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import torch

from meterid.inference.quality import DERIVED, GENERIC, gate_limits
from meterid.model.classifier import load_checkpoint, save_checkpoint
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


def test_the_checkpoint_keeps_the_limits_and_older_ones_fall_back(
        tiny_model, params, tmp_path: Path) -> None:
    model = copy.deepcopy(tiny_model.model)
    limits = gate_limits(None, params.score.quality)
    model.quality_limits = {**limits.to_dict(), "source": DERIVED, "photos": 12,
                            "stopped_share": 0.0, "generic_stopped": {"any": 0.25}}
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "model.pt"))
    assert loaded.quality_limits == model.quality_limits
    assert gate_limits(loaded.quality_limits, params.score.quality).photos == 12

    old = torch.load(tmp_path / "model.pt", weights_only=True)
    del old["quality_limits"]  # a checkpoint written before derived limits
    torch.save(old, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt").quality_limits is None
    del model.quality_limits  # a model pickled before them: no attribute at all
    assert load_checkpoint(save_checkpoint(model, tmp_path / "again.pt")).quality_limits is None
    assert gate_limits(getattr(model, "quality_limits", None),
                       params.score.quality).source == GENERIC
