"""What field cameras and apps do to a photo after it is taken, for training augmentation and
for the evaluation's field cases:

- a burned-in text strip (date, GPS, account number) across the bottom, white on dark;
- grayscale, as night-mode and infrared cameras give (three equal channels).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont


def burn_text_strip(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The photo with a dark strip of 4-9% of its height at the bottom, holding a line of text
    like a field app's stamp."""
    out = image.convert("RGB").copy()
    w, h = out.size
    strip = max(8, int(h * rng.uniform(0.04, 0.09)))
    draw = ImageDraw.Draw(out)
    shade = int(rng.integers(0, 60))
    draw.rectangle((0, h - strip, w, h), fill=(shade, shade, shade))
    stamp = (f"2026-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d} "
             f"{rng.integers(0, 24):02d}:{rng.integers(0, 60):02d}  "
             f"{rng.uniform(-60, 60):.5f},{rng.uniform(-180, 180):.5f}  "
             f"ACC {rng.integers(10**7, 10**8)}")
    font = ImageFont.load_default(size=max(8, int(strip * 0.6)))
    draw.text((int(w * 0.02), h - strip + strip * 0.15), stamp, fill=(240, 240, 235), font=font)
    return out


def to_grayscale(image: Image.Image) -> Image.Image:
    return image.convert("L").convert("RGB")


class RandomTextStrip:
    """Training augmentation: ``burn_text_strip`` with probability ``p`` (PIL in, PIL out).
    It draws from torch's generator, which the view dataset seeds per (image, view), so a view
    is the same on every run and in every worker."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, image: Image.Image) -> Image.Image:
        if self.p <= 0 or float(torch.rand(())) >= self.p:
            return image
        seed = int(torch.randint(0, 2**31 - 1, ()))
        return burn_text_strip(image, np.random.default_rng(seed))
