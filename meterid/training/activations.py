"""Backbone-stem activations for every (image, view) pair, computed once and cached in memory.

View 0 is the eval preset; views 1..K are augmented with the train preset. Each item seeds its own
augmentation from (seed, view, index), so the cache is deterministic whatever the DataLoader
workers do, and one loader pass computes everything a training run needs.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from meterid.data.images import load_rgb


@dataclass(frozen=True)
class ViewItem:
    path: Path
    target: int
    view: int  # 0: eval preset; >= 1: an augmented view


class ViewDataset(Dataset):
    def __init__(self, items: Sequence[ViewItem], eval_transform: Callable,
                 train_transform: Callable | None, seed: int, max_pixels: int, min_side: int):
        self.items = list(items)
        self.eval_transform, self.train_transform = eval_transform, train_transform
        self.seed, self.max_pixels, self.min_side = seed, max_pixels, min_side

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item = self.items[index]
        image = load_rgb(item.path, self.max_pixels, self.min_side)  # the model's decode
        if item.view == 0 or self.train_transform is None:
            return self.eval_transform(image), item.target
        torch.manual_seed(zlib.crc32(f"{self.seed}|{item.view}|{item.path}".encode()))
        return self.train_transform(image), item.target


def stem_activations(
    stem: nn.Module, dataset: Dataset, batch_size: int, workers: int, device: torch.device,
    channels_last: bool, bf16: bool = False, desc: str = "backbone",
) -> torch.Tensor:
    """Run the frozen stem over ``dataset`` in order; returns float32 activations on the CPU.

    ``bf16`` runs the frozen forward pass under bfloat16 autocast (6.5x faster for
    EfficientNet-Lite0 on this CPU, see benchmarks/model_throughput.py); training stays float32.
    """
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        multiprocessing_context="forkserver" if workers else None)
    stem.eval().to(device)
    chunks = []
    with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
        for images, _ in tqdm(loader, desc=desc, unit="batch"):
            images = images.to(device)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            chunks.append(stem(images).float().cpu())
    return torch.cat(chunks) if chunks else torch.empty(0)
