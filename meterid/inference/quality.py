"""The image quality gate: is a field photo usable at all?

Measured on the image as the model decodes it (a JPEG DCT-scaled to the input size, see
``model.presets``), in grey, brought to a longest side of ``MEASURE_SIDE`` pixels, so the sharpness
limit means the same for a 12 MP phone photo and a 640 px thumbnail (smaller images are measured
as they are). The limits are derived on that image by ``benchmarks/quality_limits.py``:
- brightness: mean grey level (0-1); too dark or washed out;
- contrast: grey standard deviation (0-1); fog, flat light;
- sharpness: variance of the Laplacian (Pech-Pacheco et al.), low for blurred photos;
- glare: share of saturated pixels (>= 250), flash on the meter's glass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
from PIL import Image

from meterid.config import QualityConfig

MEASURE_SIDE = 320  # a 480x640 photo decoded at 224 px is 240x320: no resampling there
SATURATED = 250
# Mean |R-G| + |G-B| (0-255) under which a photo has no colour (night-mode and infrared cameras).
# benchmarks/grayscale_branch.py: the 311 demo test photos measure >= 10.7 (median 46), their
# grayscale copies, JPEG-encoded, 0.0.
GRAYSCALE_MAX_CHROMA = 2.0


@dataclass(frozen=True)
class Quality:
    brightness: float
    contrast: float
    sharpness: float
    glare: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def measure_quality(image: Image.Image) -> Quality:
    grey = image.convert("L")
    scale = MEASURE_SIDE / max(grey.size)
    if scale < 1:
        grey = grey.resize((max(1, round(grey.width * scale)), max(1, round(grey.height * scale))),
                           Image.Resampling.BILINEAR)
    pixels = np.asarray(grey)
    mean, std = cv2.meanStdDev(pixels)
    # int16 holds the Laplacian of 8-bit pixels exactly, and is ~5x faster than float64.
    _, laplacian_std = cv2.meanStdDev(cv2.Laplacian(pixels, cv2.CV_16S))
    return Quality(
        brightness=float(mean[0, 0] / 255.0),
        contrast=float(std[0, 0] / 255.0),
        sharpness=float(laplacian_std[0, 0] ** 2),
        glare=float(np.count_nonzero(pixels >= SATURATED) / pixels.size),
    )


CHROMA_STRIDE = 4  # every 4th pixel of every 4th row: 0.01 instead of 0.24 ms a 224 px photo


def chroma(images: np.ndarray) -> np.ndarray:
    """Mean |R-G| + |G-B| (0-255) of each uint8 image of ``images`` (N, 3, H, W), over a grid
    of its pixels (a mean of thousands of them either way)."""
    pixels = images[:, :, ::CHROMA_STRIDE, ::CHROMA_STRIDE].astype(np.int16)
    return (np.abs(pixels[:, 0] - pixels[:, 1])
            + np.abs(pixels[:, 1] - pixels[:, 2])).mean(axis=(1, 2))


def grayscale(images: np.ndarray) -> np.ndarray:
    """Per uint8 image of ``images`` (N, 3, H, W): True when it has no colour to speak of."""
    return chroma(images) < GRAYSCALE_MAX_CHROMA


def image_chroma(image: Image.Image) -> float:
    """``chroma`` of one PIL image."""
    return float(chroma(np.asarray(image.convert("RGB")).transpose(2, 0, 1)[None])[0])


def quality_issues(quality: Quality, limits: QualityConfig) -> list[str]:
    """Why a photo is POOR_QUALITY (empty when it is fine), each reason with value and limit."""
    checks = [
        (quality.brightness < limits.min_brightness,
         f"too dark (brightness {quality.brightness:.2f} < {limits.min_brightness})"),
        (quality.brightness > limits.max_brightness,
         f"overexposed (brightness {quality.brightness:.2f} > {limits.max_brightness})"),
        (quality.contrast < limits.min_contrast,
         f"low contrast ({quality.contrast:.3f} < {limits.min_contrast})"),
        (quality.sharpness < limits.min_sharpness,
         f"blurred (sharpness {quality.sharpness:.1f} < {limits.min_sharpness})"),
        (quality.glare > limits.max_glare,
         f"glare ({quality.glare:.0%} saturated > {limits.max_glare:.0%})"),
    ]
    return [reason for failed, reason in checks if failed]
