"""Open-set scores (how "known" an image looks; higher is more like the training classes) and
the rule that turns one of them into UNKNOWN at a stated operating point.

Scores compared on held-out brands: max-softmax probability (MSP) of the calibrated softmax, the
energy score (log-sum-exp of the logits), the cosine similarity to the k-th nearest training
embedding (kNN, OpenOOD's KNN baseline) and a Mahalanobis score (class means with one shared,
Ledoit-Wolf-shrunk covariance of the normalised embeddings; Lee et al. 2018). Two more are
measured by ``benchmarks/real_photos.py`` for near-unseen variants of known brands; neither
beat kNN there (docs/real-photos.md, step 10), so they are not candidates of the rule: the
maximum logit (Vaze et al. 2022: a good closed-set classifier's max logit rivals dedicated
open-set methods on fine-grained classes) and the relative Mahalanobis score (Ren et al. 2021:
the class distance minus the distance under one Gaussian of all training photos, which cancels
the directions every photo varies in).

An operating point is what users live with, not an AUROC: the threshold is the score that accepts
a stated share of known photos the model was not trained on (``threshold_for_known_acceptance``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Literal

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

ScoreName = Literal["msp", "energy", "knn", "mahalanobis", "max_logit", "relative_mahalanobis"]
SCORES: tuple[ScoreName, ...] = ("msp", "energy", "knn", "mahalanobis", "max_logit",
                                 "relative_mahalanobis")
EMBEDDING_SCORES: tuple[ScoreName, ...] = ("knn", "mahalanobis", "relative_mahalanobis")


def normalize(embeddings: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return (embeddings / np.maximum(norms, 1e-12)).astype(np.float32)


def msp_score(probabilities: np.ndarray) -> np.ndarray:
    return probabilities.max(axis=1)


def max_logit_score(logits: np.ndarray) -> np.ndarray:
    return logits.max(axis=1)


def energy_score(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return temperature * torch.logsumexp(torch.as_tensor(logits) / temperature, dim=1).numpy()


def knn_score(
    reference: np.ndarray, queries: np.ndarray, k: int, exclude_self: bool = False
) -> np.ndarray:
    """Cosine similarity to the k-th nearest reference embedding, minus 1 (0 is identical).

    ``exclude_self`` scores the reference set against itself leave-one-out.
    """
    ref = torch.as_tensor(normalize(reference))
    out = []
    for chunk in torch.as_tensor(normalize(queries)).split(1024):
        similarity = chunk @ ref.T
        kth = min(k + int(exclude_self), ref.shape[0])
        out.append(similarity.topk(kth, dim=1).values[:, -1])
    return (torch.cat(out).numpy() - 1.0) if out else np.empty(0)


@dataclass(frozen=True)
class Reference:
    """The training images' eval-view embeddings and labels, what the embedding scores compare
    against (they travel with the model: ``MeterClassifier.reference_embeddings``/``_labels``)."""

    embeddings: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.embeddings)

    @cached_property
    def _unit(self) -> np.ndarray:
        return normalize(self.embeddings)

    @cached_property
    def _whitened(self) -> tuple[np.ndarray, np.ndarray]:
        """(whitening matrix L with L L^T = precision, whitened class means), fitted once."""
        classes = np.unique(self.labels)
        means = np.stack([self._unit[self.labels == c].mean(axis=0) for c in classes])
        centred = self._unit - means[np.searchsorted(classes, self.labels)]
        whitening = _whitening(centred)
        return whitening, means @ whitening

    @cached_property
    def _background(self) -> tuple[np.ndarray, np.ndarray]:
        """(whitening, whitened mean) of one Gaussian fitted to every training photo."""
        mean = self._unit.mean(axis=0, keepdims=True)
        whitening = _whitening(self._unit - mean)
        return whitening, mean @ whitening

    def mahalanobis_score(self, queries: np.ndarray) -> np.ndarray:
        """Minus the smallest squared Mahalanobis distance to a class mean."""
        return -_squared_distances(normalize(queries), *self._whitened).min(axis=1)

    def relative_mahalanobis_score(self, queries: np.ndarray) -> np.ndarray:
        """Minus the smallest class distance less the background distance (Ren et al. 2021)."""
        unit = normalize(queries)
        background = _squared_distances(unit, *self._background)[:, 0]
        return -(_squared_distances(unit, *self._whitened) - background[:, None]).min(axis=1)


def _whitening(centred: np.ndarray) -> np.ndarray:
    precision = LedoitWolf(assume_centered=True).fit(centred).precision_
    return np.linalg.cholesky(precision).astype(np.float32)


def _squared_distances(unit: np.ndarray, whitening: np.ndarray, means: np.ndarray
                       ) -> np.ndarray:
    """Squared Mahalanobis distance of each query to each (whitened) mean."""
    z = unit @ whitening
    return (z ** 2).sum(1, keepdims=True) - 2 * z @ means.T + (means ** 2).sum(1)[None, :]


@dataclass(frozen=True)
class ModelOutputs:
    """What one forward pass gives a batch: raw logits, calibrated probabilities, embeddings;
    and, where the pixels were seen, which photos had no colour (``quality.is_grayscale``)."""

    logits: np.ndarray
    probabilities: np.ndarray
    embeddings: np.ndarray
    temperature: float = 1.0
    grayscale: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.logits)

    def subset(self, mask: np.ndarray) -> ModelOutputs:
        return ModelOutputs(self.logits[mask], self.probabilities[mask], self.embeddings[mask],
                            self.temperature,
                            None if self.grayscale is None else self.grayscale[mask])


def open_set_score(score: ScoreName, outputs: ModelOutputs, reference: Reference,
                   knn_k: int = 5) -> np.ndarray:
    if score == "msp":
        return msp_score(outputs.probabilities)
    if score == "energy":
        return energy_score(outputs.logits, outputs.temperature)
    if score == "max_logit":
        return max_logit_score(outputs.logits)
    if score in EMBEDDING_SCORES and len(reference) == 0:
        raise ValueError(f"the {score} open-set score needs the model's reference embeddings, "
                         "and this model has none")
    if score == "knn":
        return knn_score(reference.embeddings, outputs.embeddings, knn_k)
    if score == "mahalanobis":
        return reference.mahalanobis_score(outputs.embeddings)
    if score == "relative_mahalanobis":
        return reference.relative_mahalanobis_score(outputs.embeddings)
    raise ValueError(f"unknown open-set score {score!r}; one of {SCORES}")


def known_vs_unknown_auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """AUROC of telling known (positive) from unknown images by a score; NaN without both."""
    if len(known) == 0 or len(unknown) == 0:
        return float("nan")
    labels = np.r_[np.ones(len(known)), np.zeros(len(unknown))]
    return float(roc_auc_score(labels, np.r_[known, unknown]))


def threshold_for_known_acceptance(known_scores: np.ndarray, accept_share: float) -> float:
    """The score threshold at which ``accept_share`` of the known images score at or above it
    (the lower quantile; ties never push a known image under it)."""
    if len(known_scores) == 0:
        raise ValueError("no known images to set the open-set threshold on")
    return float(np.quantile(known_scores, 1 - accept_share, method="lower"))


@dataclass(frozen=True)
class OpenSetRule:
    """A photo is UNKNOWN when its ``score`` is under ``threshold``. ``operating_point`` says how
    the threshold was set (a target on known photos, or the design's fixed confidence)."""

    score: ScoreName
    threshold: float
    knn_k: int = 5
    operating_point: str = ""

    @property
    def label(self) -> str:
        return f"knn(k={self.knn_k})" if self.score == "knn" else self.score

    def scores(self, outputs: ModelOutputs, reference: Reference) -> np.ndarray:
        return open_set_score(self.score, outputs, reference, self.knn_k)

    def flags(self, outputs: ModelOutputs, reference: Reference) -> np.ndarray:
        return self.scores(outputs, reference) < self.threshold

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def fixed_confidence(cls, threshold: float) -> OpenSetRule:
        """The design's rule: calibrated top-1 confidence under ``threshold``."""
        return cls("msp", float(threshold), operating_point=f"fixed top-1 confidence {threshold}")
