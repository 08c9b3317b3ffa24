"""Photos of things that are not meters, as field apps receive them by mistake: a bare wall with
its clutter, a hand close to the lens, a printed page, a blank (overexposed) and a black
(lens-covered) frame. The product must answer UNKNOWN or POOR_QUALITY for each.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
from PIL import Image

from meterid.data.demo.photo import _background

KINDS = ("wall", "hand", "page", "blank", "black")


def _hand(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A skin-toned palm and fingers filling most of a wall photo, out of focus."""
    w, h = size
    img = _background(rng, size, int(rng.integers(2, 8))).astype(np.float32)
    skin = np.array([rng.uniform(150, 235), rng.uniform(105, 180), rng.uniform(80, 150)])
    centre = (int(w * rng.uniform(0.3, 0.7)), int(h * rng.uniform(0.45, 0.8)))
    cv2.ellipse(img, centre, (int(w * 0.35), int(h * 0.28)), rng.uniform(-30, 30), 0, 360,
                skin.tolist(), -1)
    for finger in range(4):
        x = centre[0] + int((finger - 1.5) * w * 0.14)
        cv2.line(img, (x, centre[1]), (x + int(rng.integers(-30, 30)), int(h * 0.12)),
                 (skin * rng.uniform(0.9, 1.05)).tolist(), int(w * 0.11))
    return cv2.GaussianBlur(img, (0, 0), rng.uniform(2, 6))


def _page(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A printed page: off-white paper with lines of dark text blocks, slightly rotated."""
    w, h = size
    img = np.full((h, w, 3), rng.uniform(215, 250), dtype=np.float32)
    for y in range(int(h * 0.08), int(h * 0.92), int(rng.integers(18, 32))):
        x = int(w * 0.08)
        while x < w * 0.9:
            word = int(rng.integers(15, 70))
            cv2.rectangle(img, (x, y), (x + word, y + 9), (40, 40, 45), -1)
            x += word + int(rng.integers(6, 14))
    rotation = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-12, 12), 1.0)
    return cv2.warpAffine(img, rotation, (w, h), borderMode=cv2.BORDER_REFLECT)


def _flat(rng: np.random.Generator, size: tuple[int, int], level: tuple[float, float]
          ) -> np.ndarray:
    w, h = size
    return np.full((h, w, 3), rng.uniform(*level), dtype=np.float32)


def draw_scene(kind: str, rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    if kind == "wall":
        img = _background(rng, size, int(rng.integers(4, 14))).astype(np.float32)
    elif kind == "hand":
        img = _hand(rng, size)
    elif kind == "page":
        img = _page(rng, size)
    elif kind == "blank":
        img = _flat(rng, size, (235, 255))
    elif kind == "black":
        img = _flat(rng, size, (0, 18))
    else:
        raise ValueError(f"unknown scene kind {kind!r}; one of {KINDS}")
    noisy = img + rng.normal(0, rng.uniform(1.5, 6.0), img.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def non_meter_scenes(count: int, seed: int, size: tuple[int, int] = (480, 640)
                     ) -> Iterator[tuple[str, Image.Image]]:
    """``count`` scenes, the kinds in turn: (kind, image)."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        yield kind, draw_scene(kind, rng, size)
