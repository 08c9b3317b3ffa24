"""Image transforms in one place: the train preset (field nuisances) and the eval preset.

Evaluation, scoring and the dashboard all use ``eval_preset``; never a copy. Its first step is
the decode: every consumer (training views, evaluation, scoring, clustering, the dashboard) reads a
file with ``photos.images.load_rgb`` / ``rgb_from_bytes`` at ``min_side`` = the input size, so a
JPEG is DCT-scaled to the smallest size that still has both sides >= the input size. The model is
trained and evaluated on exactly what it scores. Photos are squashed
to a square rather than centre-cropped, so a portrait photo keeps the whole meter in view; the
train crops follow each photo's own aspect (``PhotoAspectCrop``), so a crop is squashed as the
whole photo is at evaluation. No horizontal flip: meters carry text, and a mirrored logo is not
a meter that exists.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from meterid.config import AugmentConfig
from meterid.photos.field import RandomTextStrip


def _to_normalized_tensor(mean: tuple[float, ...], std: tuple[float, ...]) -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]


def eval_preset(size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> v2.Compose:
    return v2.Compose([eval_resize(size), BatchNormalizer(mean, std)])


def eval_resize(size: int) -> v2.Compose:
    """The eval preset's per-image half: resized uint8 CHW (a quarter of a float tensor's
    memory; scoring's worker threads run it)."""
    return v2.Compose([v2.Resize((size, size), antialias=True), v2.ToImage()])


class BatchNormalizer:
    """The eval preset's other half, vectorised: uint8 images (CHW or NCHW) to normalised
    float32; on a whole batch at once it costs a fraction of per-image transforms."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        # in place on the one float copy: the same arithmetic, and on a batch of 32 photos
        # 0.035 instead of 0.60 core-ms a photo (measured side by side), as no second 19 MB
        # buffer is allocated and written
        return images.float().div_(255.0).sub_(self.mean).div_(self.std)


def _random_crop(size: int, aug: AugmentConfig) -> v2.RandomResizedCrop:
    if aug.crop_ratio_at_aspect is None:  # a params.yaml from before: one range for every photo
        return v2.RandomResizedCrop((size, size), scale=tuple(aug.crop_scale),
                                    ratio=tuple(aug.crop_ratio), antialias=True)
    return PhotoAspectCrop((size, size), scale=tuple(aug.crop_scale),
                           ratio=tuple(aug.crop_ratio), at_aspect=aug.crop_ratio_at_aspect)


class PhotoAspectCrop(v2.RandomResizedCrop):
    """A random resized crop whose width/height range ``ratio`` holds for a photo of aspect
    ``at_aspect`` and scales with each photo's own aspect.

    The eval preset squashes the whole photo to a square, stretching it by height/width; a crop
    of the photo's own aspect is stretched alike. One fixed range cannot do that for every
    shape: the portrait range suited to the demo's 3:4 photos narrowed every crop of a square
    photo (stretched 1.05-1.67x wider than the photo is ever seen at evaluation), and most crops
    of a landscape photo did not fit, so they fell back to one centre crop that cut its sides
    (62% of a 4:3 photo's crops, all of a 16:9's; ``make bench``: crop_geometry)."""

    def __init__(self, size: tuple[int, int], scale: tuple[float, ...],
                 ratio: tuple[float, ...], at_aspect: float):
        super().__init__(size, scale=scale, ratio=ratio, antialias=True)
        self.at_aspect = at_aspect

    def make_params(self, flat_inputs: list) -> dict:
        height, width = v2.query_size(flat_inputs)
        factor = width / height / self.at_aspect
        # a crop of this photo's range draws as the parent's would (same generator calls)
        this_photo = v2.RandomResizedCrop(self.size, scale=self.scale, antialias=True,
                                          ratio=(self.ratio[0] * factor, self.ratio[1] * factor))
        return this_photo.make_params(flat_inputs)


def train_preset(
    size: int, mean: tuple[float, ...], std: tuple[float, ...], aug: AugmentConfig
) -> v2.Compose:
    """A field app's text strip, zoom/crop, rotation, perspective (angle), lighting, grayscale,
    blur and JPEG, as in field photos."""
    return v2.Compose([
        RandomTextStrip(aug.text_strip_prob),
        _random_crop(size, aug),
        v2.RandomRotation(aug.rotation_deg),
        v2.RandomPerspective(aug.perspective, p=aug.perspective_prob),
        v2.ColorJitter(brightness=aug.brightness, contrast=aug.contrast,
                       saturation=aug.saturation, hue=aug.hue),
        v2.RandomGrayscale(p=aug.grayscale_prob),
        v2.RandomApply([v2.GaussianBlur(kernel_size=9, sigma=tuple(aug.blur_sigma))],
                       p=aug.blur_prob),
        v2.RandomApply([v2.JPEG(quality=tuple(aug.jpeg_quality))], p=aug.jpeg_prob),
        *_to_normalized_tensor(mean, std),
    ])
