"""Field-photo alterations: a burned-in text strip and grayscale, as augmentation and as the
evaluation's field cases."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from meterid.photos.field import RandomTextStrip, burn_text_strip, to_grayscale


def _photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (200, 160, 3), dtype=np.uint8))


def test_the_text_strip_covers_only_the_bottom_and_holds_text():
    photo = _photo()
    stamped = np.asarray(burn_text_strip(photo, np.random.default_rng(1)), np.int16)
    original = np.asarray(photo, np.int16)
    changed_rows = np.flatnonzero(np.abs(stamped - original).sum(axis=(1, 2)))
    assert changed_rows.min() >= 200 * 0.9 and changed_rows.max() == 199
    strip = stamped[changed_rows.min():]
    assert strip.max() >= 200 and np.median(strip) < 80  # light text on a dark strip


def test_grayscale_keeps_three_equal_channels():
    pixels = np.asarray(to_grayscale(_photo()))
    assert pixels.shape == (200, 160, 3)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()


def test_the_strip_augmentation_follows_the_torch_seed():
    strip = RandomTextStrip(p=1.0)
    torch.manual_seed(5)
    first = np.asarray(strip(_photo()))
    torch.manual_seed(5)
    assert (np.asarray(strip(_photo())) == first).all()
    assert RandomTextStrip(p=0.0)(_photo()) is not None
