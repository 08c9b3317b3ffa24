"""The training crops by photo shape: one fixed width/height range against the range scaled to
each photo's aspect (``train.augment.crop_ratio_at_aspect``, ``model.presets.PhotoAspectCrop``).

For each photo shape it draws ``DRAWS`` crops as the cache pass does and prints how many are
distinct, the share taken by the most frequent one (RandomResizedCrop falls back to one centre
crop when ten draws do not fit the photo), and the crop's aspect over the photo's: 1.0 is a crop
squashed to the square input as the whole photo is at evaluation. No training; seconds.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from meterid.config import load_params
from meterid.model.presets import PhotoAspectCrop

DRAWS = 300
SHAPES = ((200, 500), (250, 500), (300, 500), (360, 480), (400, 400), (480, 360), (500, 333),
          (640, 360))  # width x height: tall digit crops to landscape phone photos


def crop_stats(crop: v2.RandomResizedCrop, photo: Image.Image) -> dict:
    boxes = []
    for seed in range(DRAWS):
        torch.manual_seed(seed)
        boxes.append(tuple(crop.make_params([photo]).values()))
    stretch = np.array([(width / height) / (photo.width / photo.height)
                        for _, _, height, width in boxes])
    return {"distinct": len(set(boxes)), "top": Counter(boxes).most_common(1)[0][1] / DRAWS,
            "stretch": np.percentile(stretch, [5, 50, 95])}


def run() -> None:
    aug = load_params().train.augment
    at_aspect = aug.crop_ratio_at_aspect or 0.75
    fixed = v2.RandomResizedCrop(224, scale=tuple(aug.crop_scale), ratio=tuple(aug.crop_ratio))
    following = PhotoAspectCrop((224, 224), scale=tuple(aug.crop_scale),
                                ratio=tuple(aug.crop_ratio), at_aspect=at_aspect)
    print(f"crop_ratio {list(aug.crop_ratio)} (fixed) against the same range for a photo of "
          f"aspect {at_aspect}, scaled to each photo's; {DRAWS} crops each")
    print("distinct: distinct crops of the photo; top: the most frequent crop's share; "
          "stretch: crop aspect / photo aspect, 5th-50th-95th percentile")
    print(f"{'photo w x h':>11} {'aspect':>6} | {'fixed range':^30} | {'scaled to the photo':^30}")
    print(f"{'':>18} | {'distinct':>8} {'top':>6} {'stretch':>15} | "
          f"{'distinct':>8} {'top':>6} {'stretch':>15}")
    for width, height in SHAPES:
        photo = Image.new("RGB", (width, height))
        cells = []
        for crop in (fixed, following):
            stats = crop_stats(crop, photo)
            stretch = " ".join(f"{v:.2f}" for v in stats["stretch"])
            cells.append(f"{stats['distinct']:>8} {stats['top']:>6.1%} {stretch:>15}")
        print(f"{f'{width} x {height}':>11} {width / height:>6.2f} | {cells[0]} | {cells[1]}")
