"""The EfficientNet-Lite0 package's explicit "same" paddings against the same paddings folded
into the convolutions (``backbones.fold_symmetric_padding``, what the product builds), side by
side on one CPU: a phase-2 step (the last stage and the head, forward, backward and Adam, on
cached 288 px activations, as ``meterid train`` runs it) and an eager forward pass of whole
352 px photos. Prints each ratio and how far the outputs differ (the same arithmetic: 0).

Needs no data: the weights are the package's ImageNet ones, the inputs random.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

from meterid.model.backbones import build_backbone

BATCH = 32
ROUNDS = 4        # alternating, so that both see the same machine state
STEPS = 12        # phase-2 steps a round
FORWARDS = 4      # forward batches a round


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


def _trainable(last_block: nn.Module, classes: int) -> nn.Module:
    """Phase 2's module as ``meterid train`` runs it: batch-norm statistics frozen,
    channels_last."""
    module = nn.Sequential(last_block, nn.Linear(1280, classes))
    module.train()
    for part in module.modules():
        if isinstance(part, nn.modules.batchnorm._BatchNorm):
            part.eval()
    return module.to(memory_format=torch.channels_last)


def _phase2_seconds(module: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> tuple:
    optimizer = torch.optim.Adam(module.parameters(), lr=5e-4)
    losses, start = [], time.perf_counter()
    for step in range(STEPS):
        rows = slice(step % 4 * BATCH, (step % 4 + 1) * BATCH)
        loss = F.cross_entropy(module(inputs[rows].contiguous(memory_format=torch.channels_last)),
                               targets[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return (time.perf_counter() - start) / STEPS, losses


@torch.no_grad()
def _forward_seconds(net: nn.Module, photos: torch.Tensor) -> tuple:
    start = time.perf_counter()
    outputs = [net(photos) for _ in range(FORWARDS)]
    return (time.perf_counter() - start) / FORWARDS, outputs[0]


def run() -> dict:
    torch.manual_seed(0)
    backbone = build_backbone("efficientnet_lite0", "imagenet", "last_stage")
    phase2 = _trainable(copy.deepcopy(backbone.last_block), 27)
    whole = nn.Sequential(backbone.stem, backbone.last_block).eval()
    package_phase2, count = with_package_padding(phase2)
    package_whole, _ = with_package_padding(whole)
    stages = {"package": package_phase2, "folded": phase2}
    nets = {"package": package_whole.to(memory_format=torch.channels_last),
            "folded": whole.to(memory_format=torch.channels_last)}
    with torch.no_grad():
        shape = backbone.stem.eval()(torch.zeros(1, 3, 288, 288)).shape[1:]
    inputs = torch.randn(4 * BATCH, *shape)
    targets = torch.randint(0, 27, (4 * BATCH,))
    photos = torch.randn(BATCH, 3, 352, 352).contiguous(memory_format=torch.channels_last)
    step_s: dict[str, list[float]] = {name: [] for name in stages}
    forward_s: dict[str, list[float]] = {name: [] for name in nets}
    losses, outputs = {}, {}
    for round_ in range(ROUNDS):
        for name in stages:
            torch.manual_seed(round_)  # the same drop-connect draws for both
            seconds, losses[name] = _phase2_seconds(stages[name], inputs, targets)
            step_s[name].append(seconds)
            seconds, outputs[name] = _forward_seconds(nets[name], photos)
            forward_s[name].append(seconds)
    step = {name: min(times) for name, times in step_s.items()}
    forward = {name: min(times) for name, times in forward_s.items()}
    loss_gap = max(abs(a - b) for a, b in zip(losses["package"], losses["folded"], strict=True))
    output_gap = float((outputs["package"] - outputs["folded"]).abs().max())
    print(f"EfficientNet-Lite0, {count} paddings folded in its last stage; "
          f"{torch.get_num_threads()} threads, best of {ROUNDS} rounds")
    print(f"  phase-2 step (batch {BATCH}, 288 px views): package {step['package'] * 1e3:.0f} ms,"
          f" folded {step['folded'] * 1e3:.0f} ms: {step['package'] / step['folded']:.2f}x; "
          f"largest loss difference {loss_gap:.2g}")
    print(f"  forward (batch {BATCH}, 352 px photos, eager): package "
          f"{forward['package'] * 1e3:.0f} ms, folded {forward['folded'] * 1e3:.0f} ms: "
          f"{forward['package'] / forward['folded']:.2f}x; largest output difference "
          f"{output_gap:.2g}")
    return {"phase2_speedup": step["package"] / step["folded"],
            "forward_speedup": forward["package"] / forward["folded"],
            "loss_gap": loss_gap, "output_gap": output_gap}
