"""Backbone-stem activations for every (image, view) pair, computed once and cached in memory.

View 0 is the eval preset; views 1..K are augmented with the train preset. Each item seeds its own
augmentation from (seed, view, index), so the cache is deterministic whatever the DataLoader
workers do, and one loader pass computes everything a training run needs.
"""

from __future__ import annotations

import logging
import multiprocessing
import tempfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from meterid.photos.field import to_grayscale
from meterid.photos.images import load_rgb
from meterid.progress import progress

log = logging.getLogger(__name__)

STEM_TOLERANCE = 1e-4  # of the activations' largest value (ONNX Runtime: ~3e-6 here)


@dataclass(frozen=True)
class ViewItem:
    path: Path
    target: int
    view: int  # 0: eval preset; >= 1: an augmented view
    grayscale: bool = False  # as a night-mode camera gives it (the same crop as in colour)


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
        if item.grayscale:
            image = to_grayscale(image)
        if item.view == 0 or self.train_transform is None:
            return self.eval_transform(image), item.target
        torch.manual_seed(zlib.crc32(f"{self.seed}|{item.view}|{item.path}".encode()))
        return self.train_transform(image), item.target


def worker_context() -> multiprocessing.context.BaseContext:
    """Loader workers forked from a server that has imported this module (torch, torchvision,
    the decode) once: each loader's workers then start in a fraction of a second instead of
    importing it all again, which cost a GPU machine's 14 workers ~1 min per pass."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])  # no effect once the server runs
    return context


BatchRun = Callable[[torch.Tensor], torch.Tensor]  # a batch in, its outputs out


def _torch_stem(stem: nn.Module, device: torch.device, channels_last: bool, bf16: bool
                ) -> BatchRun:
    def run(images: torch.Tensor) -> torch.Tensor:
        images = images.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            return stem(images).float().cpu()
    return run


def onnx_twin(module: nn.Module, first: torch.Tensor, fallback: BatchRun, what: str
              ) -> BatchRun:
    """``module`` (eval mode) under ONNX Runtime, once its outputs on the batch ``first``
    match ``fallback``'s to ``STEM_TOLERANCE`` of their largest value; else ``fallback``, with
    a warning naming ``what`` runs on PyTorch."""
    from meterid.inference.engines import engine_threads, export_module, onnx_session

    with (tempfile.TemporaryDirectory(prefix="meterid-twin-") as tmp,
          torch.inference_mode(False), torch.no_grad()):  # the exporter traces outside it
        graph = export_module(module, Path(tmp) / "module.onnx", 0, ["outputs"],
                              tuple(first.shape[1:]))
        session = onnx_session(graph, engine_threads())

    def run(inputs: torch.Tensor) -> torch.Tensor:
        # a channels_last tensor's numpy view is not C-ordered, as ONNX Runtime reads it
        return torch.from_numpy(session.run(None, {"images": inputs.contiguous().numpy()})[0])

    expected = fallback(first)
    difference = float((run(first) - expected).abs().max())
    if difference > STEM_TOLERANCE * max(1.0, float(expected.abs().max())):
        log.warning("%s under ONNX Runtime differs from PyTorch by %.2g: it runs on PyTorch",
                    what, difference)
        return fallback
    return run


def stem_activations(
    stem: nn.Module, dataset: Dataset, batch_size: int, workers: int, device: torch.device,
    channels_last: bool, bf16: bool = False, desc: str = "backbone", engine: str = "torch",
) -> torch.Tensor:
    """Run the frozen stem over ``dataset`` in order; returns float32 activations on the CPU.

    ``engine="onnxruntime"`` (CPU, float32) runs it ~5x faster than eager PyTorch here, with
    activations equal to ~1e-6 of their range (checked on the first batch). ``bf16`` runs
    PyTorch under bfloat16 autocast (faster, but it cost accuracy: docs/scoring-and-speed.md);
    training stays float32 either way.
    """
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        multiprocessing_context=worker_context() if workers else None)
    stem.eval().to(device)
    run = _torch_stem(stem, device, channels_last, bf16)
    use_onnx = engine == "onnxruntime" and device.type == "cpu" and not bf16
    chunks = []
    with torch.inference_mode():
        for images, _ in progress(loader, desc, "batch"):
            if use_onnx:
                run, use_onnx = onnx_twin(stem, images, run, "the cache pass's stem"), False
            chunks.append(run(images))
    return torch.cat(chunks) if chunks else torch.empty(0)
