"""Embeddings of the pretrained backbone alone (no head, no training): what a photo looks like
to ImageNet features. Validation uses them to confirm near-duplicates before any model exists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from meterid.model.backbones import build_backbone
from meterid.model.presets import eval_preset
from meterid.photos.images import load_rgb

BATCH = 16


class PretrainedEmbedder:
    """Unit-length pooled embeddings of image files at the eval preset."""

    def __init__(self, backbone: str, image_size: int, max_pixels: int,
                 weights: str = "imagenet"):
        parts = build_backbone(backbone, weights)
        self.net = nn.Sequential(parts.stem, parts.last_block).eval()
        self.preset = eval_preset(image_size, parts.mean, parts.std)
        self.max_pixels, self.image_size = max_pixels, image_size

    @torch.no_grad()
    def __call__(self, paths: list[Path]) -> np.ndarray:
        chunks = []
        for start in range(0, len(paths), BATCH):
            batch = torch.stack([self.preset(load_rgb(p, self.max_pixels, self.image_size))
                                 for p in paths[start:start + BATCH]])
            chunks.append(torch.nn.functional.normalize(self.net(batch), dim=1))
        return torch.cat(chunks).numpy() if chunks else np.empty((0, 0), np.float32)
