"""Backbone inference throughput on this CPU at the training image size: each backbone in
NCHW vs channels_last vs bfloat16 autocast, measured side by side (same batch, same threads);
the frozen stem under PyTorch vs ONNX Runtime (the cache pass); and a phase-2 training step
(last stage + head, forward and backward on cached activations) and phase 1's embedding pass
(the frozen last stage, forward only), each in NCHW vs channels_last, the embedding pass also
under ONNX Runtime."""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import onnxruntime as ort
import torch
import torch.nn.functional as F

from meterid.config import load_params
from meterid.inference.engines import export_module, onnx_session
from meterid.model.backbones import build_backbone

BATCH = 32
REPEATS = 3
DESIGN_SIZE = 224  # the design's input: the scoring cost of another size is shown beside it


def images_per_second(model: Callable[[torch.Tensor], object], batch: torch.Tensor,
                      autocast: bool = False, rounds: int = REPEATS) -> float:
    """Images a second on ``batch``: the best of ``rounds`` timed batches after a warm-up (the
    best, because whatever else runs on the machine only ever slows a batch down)."""
    seconds = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        model(batch)  # warm-up
        for _ in range(rounds):
            start = time.perf_counter()
            model(batch)
            seconds.append(time.perf_counter() - start)
    return len(batch) / min(seconds)


def _onnx_run(session: ort.InferenceSession, images: torch.Tensor) -> object:
    return session.run(None, {"images": images.numpy()})


def run() -> dict:
    size = load_params().train.photo_size
    results: dict[str, object] = {}
    for name in ("resnet18", "efficientnet_lite0"):
        backbone = build_backbone(name, "none")
        model = torch.nn.Sequential(backbone.stem, backbone.last_block).eval()
        batch = torch.randn(BATCH, 3, size, size)
        nchw = images_per_second(model, batch, False)
        model = model.to(memory_format=torch.channels_last)
        last = images_per_second(model, batch.contiguous(memory_format=torch.channels_last),
                                 False)
        bf16 = images_per_second(model, batch.contiguous(memory_format=torch.channels_last),
                                 True)
        results[name] = (nchw, last, bf16)
        print(f"{name:20s} NCHW {nchw:6.1f} img/s | channels_last {last:6.1f} "
              f"({last / nchw:.2f}x) | + bf16 autocast {bf16:6.1f} ({bf16 / nchw:.2f}x)")
    results["stem"] = _stem_engines(size)
    results["input_sizes"] = _input_sizes(sorted({DESIGN_SIZE, size}))
    results["phase2"] = _phase2_layouts(size)
    results["phase1_embedding"] = _embedding_layouts(size)
    return results


def _stem_engines(size: int) -> tuple[float, float]:
    backbone = build_backbone("efficientnet_lite0", "imagenet", "last_stage")
    stem = backbone.stem.eval().to(memory_format=torch.channels_last)
    batch = torch.randn(BATCH, 3, size, size)
    eager = images_per_second(stem, batch.contiguous(memory_format=torch.channels_last), False)
    with tempfile.TemporaryDirectory() as tmp:
        session = onnx_session(export_module(stem, Path(tmp) / "stem.onnx", size, ["out"]),
                               torch.get_num_threads())
    onnx = images_per_second(partial(_onnx_run, session), batch)
    print(f"cache pass, EfficientNet-Lite0 stem (to the last stage): PyTorch channels_last "
          f"{eager:6.1f} img/s | ONNX Runtime {onnx:6.1f} ({onnx / eager:.2f}x)")
    return eager, onnx


def _input_sizes(sizes: list[int]) -> dict[int, float]:
    """Scoring's fp32 ONNX Runtime throughput of the whole Lite0 backbone at each input size,
    side by side: what a larger input (``train.eval_image_size``) costs every scored photo."""
    backbone = build_backbone("efficientnet_lite0", "imagenet", "last_stage")
    model = torch.nn.Sequential(backbone.stem, backbone.last_block).eval()
    rates: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            session = onnx_session(export_module(model, Path(tmp) / f"{size}.onnx", size,
                                                 ["embeddings"]), torch.get_num_threads())
            rates[size] = images_per_second(partial(_onnx_run, session),
                                            torch.randn(BATCH, 3, size, size))
    base = rates[sizes[0]]
    print("scoring, EfficientNet-Lite0 fp32 ONNX Runtime by input size: " + " | ".join(
        f"{size} px {rate:6.1f} img/s ({rate / base:.2f}x)" for size, rate in rates.items()))
    return rates


def _phase2_layouts(size: int, steps: int = 6) -> tuple[float, float]:
    """ms per training step of 32 cached activations through the unfrozen last stage."""
    backbone = build_backbone("efficientnet_lite0", "imagenet", "last_stage")
    with torch.inference_mode():
        shape = backbone.stem.eval()(torch.zeros(1, 3, size, size)).shape[1:]
    inputs, targets = torch.randn(BATCH, *shape), torch.randint(0, 38, (BATCH,))
    head = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(backbone.dim, 38))
    times = []
    for layout in (torch.contiguous_format, torch.channels_last):
        net = copy.deepcopy(torch.nn.Sequential(backbone.last_block, head)).train()
        net.to(memory_format=layout)
        optimizer = torch.optim.Adam(net.parameters(), 1e-4)
        batch = inputs.contiguous(memory_format=layout)
        elapsed = []
        for _ in range(steps):
            start = time.perf_counter()
            loss = F.cross_entropy(net(batch), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            elapsed.append(time.perf_counter() - start)
        times.append(1000 * sorted(elapsed[1:])[len(elapsed[1:]) // 2])
    print(f"phase-2 step (last stage + head, batch {BATCH}, forward + backward): NCHW "
          f"{times[0]:.0f} ms | channels_last {times[1]:.0f} ms ({times[0] / times[1]:.2f}x)")
    return times[0], times[1]


def _embedding_layouts(size: int, rows: int = 1024) -> tuple[float, float, float]:
    """ms per cached view through the frozen last stage (phase 1 and the grayscale head embed
    every view once): PyTorch in NCHW and channels_last, and the trainer's ONNX Runtime twin
    (``onnx_twin``, export included)."""
    from meterid.training.activations import onnx_twin

    backbone = build_backbone("efficientnet_lite0", "imagenet", "last_stage")
    with torch.inference_mode():
        shape = backbone.stem.eval()(torch.zeros(1, 3, size, size)).shape[1:]
    inputs, block = torch.randn(rows, *shape), backbone.last_block.eval()
    times = []
    with torch.inference_mode():
        for layout in (torch.contiguous_format, torch.channels_last):
            batch = inputs.contiguous(memory_format=layout)
            block(batch[:BATCH])  # warm-up
            start = time.perf_counter()
            block(batch)
            times.append(1000 * (time.perf_counter() - start) / rows)
        start = time.perf_counter()
        twin = onnx_twin(block, inputs[:BATCH], block, "the benchmark's embedding pass")
        twin(inputs)
        times.append(1000 * (time.perf_counter() - start) / rows)
    print(f"phase-1 embedding (frozen last stage, {rows} cached views): NCHW {times[0]:.1f} "
          f"ms/view | channels_last {times[1]:.1f} ms/view ({times[0] / times[1]:.2f}x) | "
          f"ONNX Runtime, with its export and check {times[2]:.1f} ms/view "
          f"({times[1] / times[2]:.2f}x channels_last)")
    return times[0], times[1], times[2]
