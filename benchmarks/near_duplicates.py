"""The cosine threshold that confirms a near-duplicate, measured on both of its failure modes:

- recall: demo photos against altered copies of themselves (re-encoded at JPEG quality 35,
  resized to half, cropped to 80%, recoloured), which must stay near-duplicates;
- false positives: different meters on plain white backgrounds (the look of shop photos), each
  class's render against other classes' renders, which must not.

Pretrained backbone embeddings (``validate.near_duplicate_backbone``, ImageNet weights); the
phash distance of each pair is printed too, to show why phash alone flags such pairs. Runs on
generated photos only (no ``make demo`` needed).
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from meterid.config import load_params
from meterid.data.demo.catalog import MeterSpec, build_catalog
from meterid.data.demo.generate import PhotoJob, draw_photo
from meterid.data.demo.render import render_meter
from meterid.model.pretrained import PretrainedEmbedder

THRESHOLDS = (0.80, 0.85, 0.90, 0.93, 0.95)
PHOTOS, WHITE = 40, 30


def _altered(image: Image.Image, kind: str) -> Image.Image:
    if kind == "jpeg q35":
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=35)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if kind == "half size":
        return image.resize((image.width // 2, image.height // 2), Image.Resampling.BILINEAR)
    if kind == "crop 80%":
        w, h = image.size
        return image.crop((w // 10, h // 10, w - w // 10, h - h // 10))
    return ImageEnhance.Color(ImageEnhance.Brightness(image).enhance(1.25)).enhance(0.6)


def _on_white(spec: MeterSpec, seed: int) -> Image.Image:
    meter = render_meter(spec, np.random.default_rng(seed))
    canvas = Image.new("RGB", (480, 640), (250, 250, 250))
    meter.thumbnail((360, 520))
    canvas.paste(meter, ((480 - meter.width) // 2, (640 - meter.height) // 2),
                 meter if meter.mode == "RGBA" else None)
    return canvas


def run() -> dict:
    params = load_params()
    cfg = params.validate_
    embed = PretrainedEmbedder(cfg.near_duplicate_backbone, 224, cfg.max_pixels)
    specs, _ = build_catalog(params.demo.n_classes, 0)
    kinds = ("jpeg q35", "half size", "crop 80%", "recoloured")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        originals: list[Path] = []
        copies: dict[str, list[Path]] = {k: [] for k in kinds}
        for i in range(PHOTOS):
            job = PhotoJob(specs[i % len(specs)], i % len(specs), i, folder / f"photo_{i}.jpg")
            draw_photo(job, 1, params.demo.nuisance, (480, 640))
            originals.append(job.path)
            with Image.open(job.path) as photo:
                for kind in kinds:
                    path = folder / f"photo_{i}_{kind.replace(' ', '_')}.png"
                    _altered(photo.convert("RGB"), kind).save(path)
                    copies[kind].append(path)
        white = []
        for i in range(WHITE):
            path = folder / f"white_{i}.png"
            _on_white(specs[i % len(specs)], i).save(path)
            white.append(path)
        base, w = embed(originals), embed(white)
        same = {k: (embed(v) * base).sum(axis=1) for k, v in copies.items()}
        different = (w @ w.T)[np.triu_indices(len(w), 1)]
        hashes = {"base": _phashes(originals), "white": _phashes(white),
                  **{k: _phashes(v) for k, v in copies.items()}}
    near = cfg.near_duplicate_max_distance
    copy_near = {k: _bits(hashes[k], hashes["base"]) <= near for k in kinds}
    first, second = np.triu_indices(len(white), 1)
    white_near = _bits(hashes["white"][first], hashes["white"][second]) <= near
    print(f"copies of {PHOTOS} demo photos (recall) vs {len(different)} pairs of different "
          f"meters on white (false positives); phash first pass <= {near} bits, cosine in use "
          f"{cfg.near_duplicate_min_cosine}")
    print("  phash alone: recall " + ", ".join(f"{k} {v.mean():.0%}" for k, v in
                                               copy_near.items())
          + f"; false positives {white_near.mean():.1%}")
    for threshold in THRESHOLDS:
        recall = {k: float((copy_near[k] & (v >= threshold)).mean()) for k, v in same.items()}
        fp = float((white_near & (different >= threshold)).mean())
        alone = float((different >= threshold).mean())
        print(f"  phash and cosine >= {threshold:.2f}: recall " + ", ".join(
            f"{k} {r:.0%}" for k, r in recall.items()) + f"; false positives {fp:.1%} "
            f"(cosine alone: {alone:.1%})")
    return {"copies": {k: v.tolist() for k, v in same.items()}, "different": different.tolist()}


def _phashes(paths: list[Path]) -> np.ndarray:
    import imagehash

    out = []
    for path in paths:
        with Image.open(path) as image:
            out.append(int(str(imagehash.phash(image)), 16))
    return np.array(out, dtype=np.uint64)


def _bits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.bitwise_count(a ^ b)
