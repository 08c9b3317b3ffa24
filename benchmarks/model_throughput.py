"""Backbone inference throughput on this CPU at the training image size: each backbone in
NCHW vs channels_last vs bfloat16 autocast, measured side by side (same batch, same threads)."""

from __future__ import annotations

import time

import torch

from meterid.config import load_params
from meterid.model.backbones import build_backbone

BATCH = 32
REPEATS = 3


def _images_per_second(model: torch.nn.Module, batch: torch.Tensor, autocast: bool) -> float:
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        model(batch)  # warm-up
        start = time.perf_counter()
        for _ in range(REPEATS):
            model(batch)
    return REPEATS * len(batch) / (time.perf_counter() - start)


def run() -> dict:
    size = load_params().train.image_size
    results = {}
    for name in ("resnet18", "efficientnet_lite0"):
        backbone = build_backbone(name, "none")
        model = torch.nn.Sequential(backbone.stem, backbone.last_block).eval()
        batch = torch.randn(BATCH, 3, size, size)
        nchw = _images_per_second(model, batch, False)
        model = model.to(memory_format=torch.channels_last)
        last = _images_per_second(model, batch.contiguous(memory_format=torch.channels_last),
                                  False)
        bf16 = _images_per_second(model, batch.contiguous(memory_format=torch.channels_last),
                                  True)
        results[name] = (nchw, last, bf16)
        print(f"{name:20s} NCHW {nchw:6.1f} img/s | channels_last {last:6.1f} "
              f"({last / nchw:.2f}x) | + bf16 autocast {bf16:6.1f} ({bf16 / nchw:.2f}x)")
    return results
