"""The EfficientNet-Lite0 package's explicit "same" paddings against the same paddings folded
into the convolutions (``backbones.fold_symmetric_padding``, what the product builds), side by
side on one CPU: a phase-2 epoch through the trainer's own ``_run_phase`` (the last stage and
the head on cached 288 px activations, validation loss on 352 px ones, as ``meterid train``
runs it) and an eager forward pass of whole 352 px photos. Prints each ratio and how far the
losses and outputs differ (the same arithmetic: 0).

Needs no data: the weights are the package's ImageNet ones, the inputs random.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

from meterid.config import load_params
from meterid.model.classifier import set_phase
from meterid.training.trainer import _Fit, _run_phase, build_model

CLASSES = 27
VIEWS = 960       # training views a phase-2 epoch (30 batches of 32)
ROUNDS = 3        # alternating, so that both see the same machine state
PHOTOS = 32       # whole photos a forward batch


def with_package_padding(module: nn.Module) -> tuple[nn.Module, int]:
    """A copy with each folded padding put back in front of its convolution, as the package
    builds it."""
    package = copy.deepcopy(module)
    restored = 0
    for conv in package.modules():
        if isinstance(conv, nn.Conv2d) and conv.padding != (0, 0):
            pad_h, pad_w = (int(side) for side in conv.padding)  # ints once folded
            conv.static_padding, conv.padding = nn.ZeroPad2d((pad_w, pad_w, pad_h, pad_h)), (0, 0)
            restored += 1
    return package, restored


def _epoch(module: nn.Module, fit: _Fit, cfg, seed: int) -> tuple[float, list[float]]:
    """Seconds of one phase-2 epoch of a fresh copy of ``module``, and its losses."""
    history: list[dict] = []
    torch.manual_seed(seed)  # the same sampler and drop-connect draws for both
    start = time.perf_counter()
    _run_phase(_Fit(2, copy.deepcopy(module), fit.inputs, fit.targets, fit.val_inputs,
                    fit.val_targets), cfg.phase2.model_copy(update={"epochs": 1}), cfg,
               CLASSES, torch.ones(CLASSES), history)
    return time.perf_counter() - start, [h["train_loss"] for h in history] + [
        h["val_loss"] for h in history]


@torch.no_grad()
def _forward(net: nn.Module, photos: torch.Tensor) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    outputs = net(photos)
    return time.perf_counter() - start, outputs


def run() -> dict:
    cfg = load_params().train
    torch.manual_seed(0)
    model = build_model([str(i) for i in range(CLASSES)], cfg)
    set_phase(model, 2, pretrained=True)
    with torch.no_grad():
        def stem_shape(size: int) -> torch.Size:
            return model.stem.eval()(torch.zeros(1, 3, size, size)).shape[1:]
        fit = _Fit(2, nn.Identity(), torch.randn(VIEWS, *stem_shape(cfg.image_size)),
                   torch.arange(VIEWS) % CLASSES, torch.randn(64, *stem_shape(cfg.photo_size)),
                   torch.arange(64) % CLASSES)
    phase2 = nn.Sequential(model.last_block, model.head)
    whole = nn.Sequential(model.stem, model.last_block).eval()
    package_phase2, count = with_package_padding(phase2)
    trainable = {"package": package_phase2, "folded": phase2}
    nets = {"package": with_package_padding(whole)[0].to(memory_format=torch.channels_last),
            "folded": copy.deepcopy(whole).to(memory_format=torch.channels_last)}
    photos = torch.randn(PHOTOS, 3, cfg.photo_size, cfg.photo_size).contiguous(
        memory_format=torch.channels_last)
    epoch_s: dict[str, list[float]] = {name: [] for name in trainable}
    forward_s: dict[str, list[float]] = {name: [] for name in nets}
    losses, outputs = {}, {}
    for round_ in range(ROUNDS):
        for name in trainable:
            seconds, losses[name] = _epoch(trainable[name], fit, cfg, round_)
            epoch_s[name].append(seconds)
            seconds, outputs[name] = _forward(nets[name], photos)
            forward_s[name].append(seconds)
    epoch = {name: min(times) for name, times in epoch_s.items()}
    forward = {name: min(times) for name, times in forward_s.items()}
    loss_gap = max(abs(a - b) for a, b in zip(losses["package"], losses["folded"], strict=True))
    output_gap = float((outputs["package"] - outputs["folded"]).abs().max())
    print(f"EfficientNet-Lite0, {count} paddings folded in phase 2's part; "
          f"{torch.get_num_threads()} threads, best of {ROUNDS} rounds")
    print(f"  phase-2 epoch ({VIEWS} views at {cfg.image_size} px, _run_phase): package "
          f"{epoch['package']:.1f} s, folded {epoch['folded']:.1f} s: "
          f"{epoch['package'] / epoch['folded']:.2f}x; largest loss difference {loss_gap:.2g}")
    print(f"  forward ({PHOTOS} photos at {cfg.photo_size} px, eager): package "
          f"{forward['package'] * 1e3:.0f} ms, folded {forward['folded'] * 1e3:.0f} ms: "
          f"{forward['package'] / forward['folded']:.2f}x; largest output difference "
          f"{output_gap:.2g}")
    return {"phase2_speedup": epoch["package"] / epoch["folded"],
            "forward_speedup": forward["package"] / forward["folded"],
            "loss_gap": loss_gap, "output_gap": output_gap}
