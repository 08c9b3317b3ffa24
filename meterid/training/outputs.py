"""What training hands on: the finished model with its reference embeddings, and the
pretrained backbone's embeddings of every split (for evaluation's cross-validation)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from meterid.model.classifier import MeterClassifier
from meterid.training.trainer import TrainResult, logits_from_activations


@dataclass(frozen=True)
class FrozenEmbeddings:
    """Embeddings of every split's photos by the pretrained backbone before phase 2 (saved by
    training), with labels and paths relative to the image folder."""

    embeddings: np.ndarray
    labels: np.ndarray
    paths: list[str]


SPLITS = ("train", "val", "test")


def finished_model(result: TrainResult) -> tuple[MeterClassifier, FrozenEmbeddings]:
    """The trained model with its reference embeddings (the open-set rule's training photos),
    and every split's pretrained-backbone embeddings for evaluation's cross-validation."""
    model = result.model
    model.reference_embeddings = logits_from_activations(
        model, result.cached["train"].activations)[1]
    model.reference_labels = result.cached["train"].targets.clone()
    frozen = FrozenEmbeddings(
        torch.cat([result.frozen_embeddings[s] for s in SPLITS]).numpy(),
        np.array([model.classes[t] for s in SPLITS for t in result.cached[s].targets.tolist()]),
        [p for s in SPLITS for p in result.cached[s].paths])
    return model, frozen


