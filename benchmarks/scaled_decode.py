"""The model's decode (JPEG DCT-scaled to the input size) against the full decode, side by side:

- the champion's test accuracy and UNKNOWN share under each decode, and the share of test photos
  whose top-1 label changes: a model trained on full decodes loses here, one trained on the
  scaled decode (every consumer's since issue 13) is measured on exactly what it scores;
- decode + resize time per photo for the demo's 480x640 and for generated 720x1280 and 1000x1333
  phone photos stored turned with an EXIF orientation tag, and the ratio.

Needs the demo split and its champion (``make demo``).
"""

from __future__ import annotations

import io
import time

import numpy as np
import torch
from PIL import Image

from meterid.config import load_params
from meterid.core import UNKNOWN
from meterid.data.split import read_splits
from meterid.inference.predictor import Predictor
from meterid.model.presets import eval_resize
from meterid.photos.images import load_rgb, rgb_from_bytes
from meterid.registry import load_classifier

PHONE_SIZES = ((480, 640), (720, 1280), (1000, 1333))
TIMED_PHOTOS = 40


def _predict(predictor: Predictor, paths: list, max_pixels: int, min_side: int | None) -> list:
    out = []
    for start in range(0, len(paths), 32):
        batch = torch.stack([predictor.preprocess(load_rgb(p, max_pixels, min_side))
                             for p in paths[start:start + 32]])
        out.extend(predictor.predict(batch))
    return out


def accuracy_by_decode(params) -> None:
    splits = read_splits(params.paths.splits)
    test = splits[splits["split"] == "test"]
    if test.empty:
        raise SystemExit("no test split: run `make demo` first")
    paths = [params.paths.raw_dir / p for p in test["path"]]
    predictor = Predictor(load_classifier(str(params.paths.models_dir / "champion")))
    size, max_pixels = predictor.image_size, params.validate_.max_pixels
    results = {"full": _predict(predictor, paths, max_pixels, None),
               f"scaled to >= {size}": _predict(predictor, paths, max_pixels, size)}
    truth = test["label"].to_numpy()
    full_top1 = np.array([p.top_labels[0] for p in results["full"]])
    print(f"champion v{predictor.version} on {len(paths)} test photos:")
    for name, predictions in results.items():
        top1 = np.array([p.top_labels[0] for p in predictions])
        unknown = np.mean([p.label == UNKNOWN for p in predictions])
        print(f"  {name:>16} decode: top-1 {np.mean(top1 == truth):.2%}, UNKNOWN {unknown:.1%}, "
              f"top-1 changed vs full {np.mean(top1 != full_top1):.1%}")


def phone_jpeg(source: Image.Image, size: tuple[int, int]) -> bytes:
    """The photo at a phone's size, stored turned with EXIF orientation 6."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    source.resize(size, Image.Resampling.BICUBIC).transpose(Image.Transpose.ROTATE_90).save(
        buffer, "JPEG", quality=90, exif=exif.tobytes())
    return buffer.getvalue()


def decode_time(params) -> None:
    size, max_pixels = params.train.photo_size, params.validate_.max_pixels
    sources = sorted(params.paths.raw_dir.rglob("*.jpg"))[:TIMED_PHOTOS]
    resize = eval_resize(size)  # the scoring pipeline's per-photo work
    print(f"decode + resize to {size}x{size}, ms per photo (best of 3):")
    for phone in PHONE_SIZES:
        blobs = [phone_jpeg(load_rgb(p, max_pixels), phone) for p in sources]
        times = {}
        for name, min_side in (("full", None), ("scaled", size)):
            best = np.inf
            for _ in range(3):
                start = time.perf_counter()
                for blob in blobs:
                    resize(rgb_from_bytes(blob, max_pixels, min_side))
                best = min(best, (time.perf_counter() - start) / len(blobs))
            times[name] = best * 1000
        print(f"  {phone[0]}x{phone[1]} EXIF-rotated: full {times['full']:.2f}, scaled "
              f"{times['scaled']:.2f} ({times['full'] / times['scaled']:.1f}x)")


def run() -> None:
    params = load_params()
    decode_time(params)
    accuracy_by_decode(params)
