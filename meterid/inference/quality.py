"""The image quality gate: is a field photo usable at all?

Measured on the image as the model decodes it (a JPEG DCT-scaled to the input size, see
``model.presets``), in grey, brought to a longest side of ``MEASURE_SIDE`` pixels, so the sharpness
limit means the same for a 12 MP phone photo and a 640 px thumbnail (smaller images are measured
as they are). The measures:
- brightness: mean grey level (0-1); too dark or washed out;
- contrast: grey standard deviation (0-1); fog, flat light;
- sharpness: variance of the Laplacian (Pech-Pacheco et al.), low for blurred photos;
- glare: share of saturated pixels (>= 250), flash on the meter's glass.

The limits a model scores with are derived from its own training photos at training time
(``derive_limits``, kept on the model): a photo like the training photos must pass. Models
trained before that use the params' generic limits (``gate_limits``), which
``benchmarks/quality_limits.py`` places just outside the generated demo photos.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np
from PIL import Image

from meterid.config import QualityBounds, QualityConfig

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


def is_grayscale(images: np.ndarray) -> np.ndarray:
    """Per uint8 image of ``images`` (N, 3, H, W): True when it has no colour to speak of."""
    return chroma(images) < GRAYSCALE_MAX_CHROMA


def image_chroma(image: Image.Image) -> float:
    """``chroma`` of one PIL image."""
    return float(chroma(np.asarray(image.convert("RGB")).transpose(2, 0, 1)[None])[0])


def quality_issues(quality: Quality, limits: QualityBounds | QualityLimits) -> list[str]:
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


# --- the limits, derived from the training photos -----------------------------------------------

QUANTILE = 0.002  # each limit may stop at most this share of the training photos: 5 limits, <= 1%
MARGIN = 0.10     # beyond the collection's tail: this share of the room left to the measure's end
GENERIC, DERIVED = "params", "training photos"
# (limit, measure, side): "min" stops photos under the limit, "max" over it.
BOUNDS = (("min_brightness", "brightness", "min"), ("max_brightness", "brightness", "max"),
          ("min_contrast", "contrast", "min"), ("min_sharpness", "sharpness", "min"),
          ("max_glare", "glare", "max"))


@dataclass(frozen=True)
class QualityLimits:
    """The gate's limits as a model scores with them: derived from its training photos
    (``source`` DERIVED, with how many were measured, the share of them these limits stop and the
    share each generic limit would have stopped), or the params' generic limits (GENERIC)."""

    min_brightness: float
    max_brightness: float
    min_contrast: float
    min_sharpness: float
    max_glare: float
    source: str = GENERIC
    photos: int = 0
    stopped_share: float | None = None  # None: not measured (the generic limits)
    generic_stopped: dict[str, float] = field(default_factory=dict)  # by limit, and "any"

    @classmethod
    def generic(cls, cfg: QualityBounds) -> QualityLimits:
        return cls(**{limit: getattr(cfg, limit) for limit, _, _ in BOUNDS})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> QualityLimits:
        return cls(**{**values, "generic_stopped": dict(values.get("generic_stopped") or {})})

    def describe(self) -> str:
        if self.source != DERIVED:
            return "the params' generic limits (the model carries none of its own)"
        return (f"derived from {self.photos} training photos (stop {self.stopped_share:.1%} of "
                f"them; the generic limits would stop {self.generic_stopped.get('any', 0):.1%})")


def _stops(table: dict[str, np.ndarray], limits: QualityBounds | QualityLimits
           ) -> dict[str, np.ndarray]:
    """Per limit, which photos it stops (as ``quality_issues`` decides)."""
    return {limit: table[measure] < getattr(limits, limit) if side == "min"
            else table[measure] > getattr(limits, limit) for limit, measure, side in BOUNDS}


def _collection_limit(values: np.ndarray, side: str) -> float:
    if side == "min":
        return float(np.quantile(values, QUANTILE, method="lower")) * (1 - MARGIN)
    tail = float(np.quantile(values, 1 - QUANTILE, method="higher"))
    return tail + MARGIN * (1 - tail)


def derive_limits(measures: Sequence[Quality], generic: QualityConfig) -> QualityLimits:
    """The gate's limits for a model trained on photos measuring ``measures``.

    Per limit: the collection's tail (the 0.2% quantile for a lower limit, 99.8% for an upper
    one, taken at a measured photo) moved outward by ``MARGIN`` (10%) of the room left to the
    measure's end (x0.9 for a lower limit; tail + 0.1 x (1 - tail) for brightness and glare).
    The limit is then the looser of that and the generic limit, but never looser than the
    generic ``outer`` bound (black, white, blank, blurred frames that no collection makes
    readable). So the gate only loosens, and only where the collection itself goes beyond the
    generic limits (white backgrounds: glare up to 0.95); each limit stops at most 0.2% of the
    training photos, all five together at most 1%, unless the collection reaches past ``outer``.
    """
    if not measures:
        raise ValueError("no training photos were measured: the quality gate's limits cannot be "
                         "derived from an empty collection")
    table = {name: np.array([getattr(q, name) for q in measures], dtype=np.float64)
             for name in Quality.__dataclass_fields__}
    limits = {}
    for limit, measure, side in BOUNDS:
        own = _collection_limit(table[measure], side)
        general, outer = getattr(generic, limit), getattr(generic.outer, limit)
        if side == "min":  # a generic limit looser than its bound (0: off) stays as it is
            value = max(min(outer, general), min(general, own))
        else:
            value = min(max(outer, general), max(general, own))
        limits[limit] = round(value, 2 if measure == "sharpness" else 4)
    derived = QualityLimits(**limits, source=DERIVED, photos=len(measures))
    generic_stops = _stops(table, generic)
    return QualityLimits(
        **limits, source=DERIVED, photos=len(measures),
        stopped_share=float(np.logical_or.reduce(list(_stops(table, derived).values())).mean()),
        generic_stopped={**{k: float(v.mean()) for k, v in generic_stops.items()},
                         "any": float(np.logical_or.reduce(list(generic_stops.values())).mean())})


def gate_limits(derived: QualityLimits | None, generic: QualityConfig) -> QualityLimits:
    """The limits a model scores with: those its bundle carries, else, for a model trained
    before them, the generic ones."""
    return QualityLimits.generic(generic) if derived is None else derived
