"""Image transforms in one place: the train preset (field nuisances) and the eval preset.

Evaluation, scoring and the dashboard all use ``eval_preset``; never a copy. Photos are squashed
to a square rather than centre-cropped, so a portrait photo keeps the whole meter in view; the
train crops keep roughly the photo's aspect for the same reason. No horizontal flip: meters carry
text, and a mirrored logo is not a meter that exists.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from meterid.config import AugmentConfig


def _to_normalized_tensor(mean: tuple[float, ...], std: tuple[float, ...]) -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]


def eval_preset(size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> v2.Compose:
    return v2.Compose([v2.Resize((size, size), antialias=True), *_to_normalized_tensor(mean, std)])


def train_preset(
    size: int, mean: tuple[float, ...], std: tuple[float, ...], aug: AugmentConfig
) -> v2.Compose:
    """Zoom/crop, rotation, perspective (angle), lighting, blur and JPEG, as in field photos."""
    return v2.Compose([
        v2.RandomResizedCrop((size, size), scale=tuple(aug.crop_scale),
                             ratio=tuple(aug.crop_ratio), antialias=True),
        v2.RandomRotation(aug.rotation_deg),
        v2.RandomPerspective(aug.perspective, p=aug.perspective_prob),
        v2.ColorJitter(brightness=aug.brightness, contrast=aug.contrast,
                       saturation=aug.saturation, hue=aug.hue),
        v2.RandomApply([v2.GaussianBlur(kernel_size=9, sigma=tuple(aug.blur_sigma))],
                       p=aug.blur_prob),
        v2.RandomApply([v2.JPEG(quality=tuple(aug.jpeg_quality))], p=aug.jpeg_prob),
        *_to_normalized_tensor(mean, std),
    ])
