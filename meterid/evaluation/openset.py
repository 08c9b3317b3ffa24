"""Open-set scores: how "known" an image looks. Higher means more like the training classes.

Compared on the demo's held-out brands: the plain max-softmax probability (MSP), the energy score,
and the cosine distance to the k-th nearest training embedding (kNN, as in OpenOOD's KNN baseline).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score


def msp_score(probabilities: np.ndarray) -> np.ndarray:
    return probabilities.max(axis=1)


def energy_score(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return temperature * torch.logsumexp(torch.as_tensor(logits) / temperature, dim=1).numpy()


def _normalize(embeddings: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


def knn_score(
    reference: np.ndarray, queries: np.ndarray, k: int, exclude_self: bool = False
) -> np.ndarray:
    """Negative cosine distance to the k-th nearest reference embedding.

    ``exclude_self`` scores the reference set against itself leave-one-out (to set thresholds
    on known images without a held-out set).
    """
    ref = torch.as_tensor(_normalize(reference), dtype=torch.float32)
    out = []
    for chunk in torch.as_tensor(_normalize(queries), dtype=torch.float32).split(1024):
        similarity = chunk @ ref.T
        kth = min(k + int(exclude_self), ref.shape[0])
        out.append(similarity.topk(kth, dim=1).values[:, -1])
    return (torch.cat(out).numpy() - 1.0) if out else np.empty(0)


def known_vs_unknown_auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """AUROC of telling known (positive) from unknown images by a score; NaN without both."""
    if len(known) == 0 or len(unknown) == 0:
        return float("nan")
    labels = np.r_[np.ones(len(known)), np.zeros(len(unknown))]
    return float(roc_auc_score(labels, np.r_[known, unknown]))


def threshold_for_known_acceptance(known_scores: np.ndarray, accept_share: float) -> float:
    """The score threshold that accepts ``accept_share`` of known images."""
    return float(np.quantile(known_scores, 1 - accept_share)) if len(known_scores) else -np.inf


@dataclass(frozen=True)
class OpenSetRule:
    """When a prediction becomes UNKNOWN. ``msp``: calibrated top-1 below ``threshold``.
    ``knn``: that, or an embedding farther from the training images than ``knn_threshold``."""

    name: str
    threshold: float
    knn_k: int = 10
    knn_threshold: float = -np.inf

    def flags(self, probabilities: np.ndarray, embeddings: np.ndarray,
              reference: np.ndarray) -> np.ndarray:
        unknown = msp_score(probabilities) < self.threshold
        if self.name == "knn" and len(reference):
            unknown |= knn_score(reference, embeddings, self.knn_k) < self.knn_threshold
        return unknown

    def to_dict(self) -> dict:
        return asdict(self)
