"""The held-out brands: a brand added as a class since is known, so it is not held out."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PIL import Image

from meterid.config import Params
from meterid.evaluation.inputs import _held_out


def _brand(folder: Path, photos: int) -> None:
    folder.mkdir(parents=True)
    for i in range(photos):
        Image.new("RGB", (80, 80), (40 * i, 90, 160)).save(folder / f"{i}.jpg")


def test_a_held_out_brand_that_became_a_class_is_left_out_and_named(
        tmp_path: Path, params: Params, tiny_model, caplog: pytest.LogCaptureFixture):
    unknown = tmp_path / "unknown"
    _brand(unknown / "beta", 2)     # `meterid candidates add ... --label beta` made it a class
    _brand(unknown / "zeta", 3)     # still a brand the model must not know
    paths = params.paths.model_copy(update={"unknown_dir": unknown})
    project = params.model_copy(update={"paths": paths})

    with caplog.at_level(logging.WARNING):
        held = _held_out(tiny_model.model, project)

    assert held is not None and len(held.targets) == 3 and set(held.targets.tolist()) == {-1}
    assert {Path(p).parts[0] for p in held.paths} == {"zeta"}
    assert "beta is a class of the model" in caplog.text
    # only learnt brands left: nothing is held out, and the log says so
    _brand(tmp_path / "only-learnt" / "alpha", 2)
    only = params.model_copy(update={"paths": paths.model_copy(
        update={"unknown_dir": tmp_path / "only-learnt"})})
    assert _held_out(tiny_model.model, only) is None
