"""Where the quality gate's limits sit, measured on what it measures: the model's decode.

The gate measures the photo as the model reads it (a JPEG DCT-scaled to the input size, then
brought to ``MEASURE_SIDE``), so the limits must be derived there, not on the full image. Demo
photos are drawn at three camera sizes (480x640, phone 720x1280, 1000x1333; hard but readable by
design), and each is also degraded past readability (a 4 px Gaussian blur, underexposed, fogged):
the printed ranges show that the params' limits pass the first and stop the second, whatever
the camera's size. Runs on generated photos only (no ``make demo`` needed).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from meterid.config import load_params
from meterid.data.demo.catalog import build_catalog
from meterid.data.demo.photo import compose_photo
from meterid.data.demo.render import render_meter
from meterid.inference.quality import Quality, measure_quality, quality_issues
from meterid.photos.images import rgb_from_bytes

SIZES = ((480, 640), (720, 1280), (1000, 1333))
PHOTOS = 60
DEGRADED = {
    # blur radii in pixels of a 480x640 photo, scaled with the longest side
    "blur 4 px": lambda im: im.filter(ImageFilter.GaussianBlur(4 * max(im.size) / 640)),
    "blur 8 px": lambda im: im.filter(ImageFilter.GaussianBlur(8 * max(im.size) / 640)),
    "underexposed": lambda im: ImageEnhance.Brightness(im).enhance(0.12),
    "fogged": lambda im: ImageEnhance.Contrast(im).enhance(0.12),
}


def _as_scored(image: Image.Image, min_side: int, max_pixels: int) -> Quality:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return measure_quality(rgb_from_bytes(buffer.getvalue(), max_pixels, min_side))


def _range(values: list[Quality]) -> str:
    table = {k: [getattr(q, k) for q in values] for k in Quality.__dataclass_fields__}
    return ", ".join(f"{k} {min(v):.3g}-{max(v):.3g}" for k, v in table.items())


def run() -> dict:
    params = load_params()
    limits, min_side = params.score.quality, params.train.photo_size
    specs, _ = build_catalog(params.demo.n_classes, 0)
    print(f"gate limits: {limits}; measured on the decode at min_side {min_side}")
    out = {}
    for size in SIZES:
        readable: list[Quality] = []
        degraded: dict[str, list[Quality]] = {k: [] for k in DEGRADED}
        for i in range(PHOTOS):
            rng = np.random.default_rng([size[0], i])
            photo = compose_photo(render_meter(specs[i % len(specs)], rng), rng,
                                  params.demo.nuisance, size)
            readable.append(_as_scored(photo, min_side, params.validate_.max_pixels))
            for kind, degrade in DEGRADED.items():
                degraded[kind].append(_as_scored(degrade(photo), min_side,
                                                 params.validate_.max_pixels))
        passed = np.mean([not quality_issues(q, limits) for q in readable])
        print(f"{size[0]}x{size[1]}: demo photos pass {passed:.0%} ({_range(readable)})")
        out[size] = {"readable_pass": float(passed)}
        for kind, values in degraded.items():
            stopped = np.mean([bool(quality_issues(q, limits)) for q in values])
            print(f"  {kind}: stopped {stopped:.0%} ({_range(values)})")
            out[size][kind] = float(stopped)
    return out
