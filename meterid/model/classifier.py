"""The meter classifier: backbone stem, last block, linear head (``inference.bundle`` stores it)."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import cast

import numpy as np
import torch
from torch import nn

from meterid.decision.openset import ModelOutputs
from meterid.model.backbones import Backbone


@dataclass(frozen=True)
class Preprocessing:
    """What inference must do to an image before the model sees it (the eval preset)."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str = "squash"  # the whole photo resized to a square, no centre crop

    def to_dict(self) -> dict:
        return asdict(self)


class MeterClassifier(nn.Module):
    """Images -> logits. ``temperature`` (fitted on validation data) calibrates the softmax."""

    # buffers (declared for the type checker: nn.Module's attribute lookup is untyped)
    temperature: torch.Tensor
    reference_embeddings: torch.Tensor
    reference_labels: torch.Tensor

    def __init__(self, backbone: Backbone, classes: list[str], dropout: float = 0.2):
        super().__init__()
        self.backbone_name = backbone.name
        self.unfreeze = backbone.unfreeze  # where stem ends: part of the weights' names
        self.classes = list(classes)
        self.stem = backbone.stem
        self.last_block = backbone.last_block
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(backbone.dim, len(classes)))
        self.preprocessing = Preprocessing(224, backbone.mean, backbone.std)
        self.register_buffer("temperature", torch.ones(()))
        # Eval-view embeddings of the training images and their class indices, for the
        # embedding-based open-set scores (kNN, Mahalanobis) at inference.
        self.register_buffer("reference_embeddings", torch.empty(0, backbone.dim))
        self.register_buffer("reference_labels", torch.empty(0, dtype=torch.long))
        # A second head for photos without colour (``with_grayscale_head``); None: the one head
        # reads every photo.
        self.gray_head: nn.Sequential | None = None

    def with_grayscale_head(self) -> nn.Sequential:
        """Add the grayscale head, as a copy of the trained head (its starting point)."""
        self.gray_head = copy.deepcopy(self.head)
        return self.gray_head

    def route_grayscale(self, logits: np.ndarray, embeddings: np.ndarray,
                        grayscale: np.ndarray | None) -> np.ndarray:
        """``logits`` with the grayscale head's in the rows of photos without colour. It reads
        the same embeddings, so the engines and their speed are those of the colour model."""
        head = self.gray_head
        if head is None or grayscale is None or not grayscale.any():
            return logits
        routed = logits.copy()
        with torch.no_grad():
            routed[grayscale] = head.eval()(torch.from_numpy(embeddings[grayscale])).numpy()
        return routed

    @property
    def embedding_dim(self) -> int:
        return cast(nn.Linear, self.head[1]).in_features

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The penultimate layer: pooled backbone embeddings used for open-set scores/clustering."""
        return self.last_block(self.stem(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(images))

    def calibrated_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits / self.temperature, dim=-1)

    def outputs(self, logits: np.ndarray, embeddings: np.ndarray,
                grayscale: np.ndarray | None = None) -> ModelOutputs:
        """What the decision policy reads, from any engine's (logits, embeddings): the
        grayscale head's logits for photos without colour, calibrated probabilities. Scoring,
        evaluation and the int8 check all build their outputs here."""
        routed = self.route_grayscale(logits, embeddings, grayscale)
        probabilities = self.calibrated_probabilities(torch.from_numpy(routed)).numpy()
        return ModelOutputs(routed, probabilities, embeddings, float(self.temperature), grayscale)


def set_phase(model: MeterClassifier, phase: int, pretrained: bool) -> list[str]:
    """Freeze per the two-phase design; returns the names of the trainable parameters.

    Phase 1: head only when the backbone is pretrained; the whole network when it is not (a frozen
    random backbone is meaningless). Phase 2: the last block and the head.
    """
    trainable_prefixes = {
        (1, True): ("head.",),
        (1, False): ("stem.", "last_block.", "head."),
        (2, True): ("last_block.", "head."),
        (2, False): ("last_block.", "head."),
    }[(phase, pretrained)]
    names = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.startswith(trainable_prefixes)
        if parameter.requires_grad:
            names.append(name)
    return names
