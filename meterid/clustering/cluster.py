"""HDBSCAN on L2-normalised embeddings, with cluster ids that persist week to week.

- Embeddings are L2-normalised (cosine geometry, as the kNN open-set rule), optionally reduced
  with PCA: HDBSCAN's tree-based algorithms lose their speed above ~50 dimensions.
- HDBSCAN (the ``hdbscan`` package: GLOSH outlier scores, membership probabilities); label -1
  is noise, >= 0 a candidate new meter type.
- Ids are stable: each cluster's centroid (mean normalised embedding, in the model's full
  embedding space) is matched one-to-one (Hungarian assignment) to the known clusters' centroids
  of the same model; a match at cosine similarity >= ``match_min_similarity`` keeps the old id,
  others get new ids, never reused. Centroids of another model are not comparable, so a new
  champion starts new ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import hdbscan
import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.decomposition import PCA

from meterid.config import ClusterConfig
from meterid.decision.openset import normalize  # the kNN rule's cosine geometry

NOISE = -1


@dataclass
class Clustering:
    labels: np.ndarray           # HDBSCAN's own labels, -1 noise
    probabilities: np.ndarray    # membership strength in [0, 1]
    outlier_scores: np.ndarray   # GLOSH: higher is more of an outlier
    reduced: np.ndarray          # what HDBSCAN saw (for the scatter plot)


def reduce(embeddings: np.ndarray, cfg: ClusterConfig, seed: int = 0) -> np.ndarray:
    components = min(cfg.pca_components, *embeddings.shape)
    if cfg.reduction == "none" or components >= embeddings.shape[1]:
        return embeddings
    return PCA(components, random_state=seed).fit_transform(embeddings).astype(np.float32)


def min_cluster_size(n: int, cfg: ClusterConfig) -> int:
    """The smallest cluster for a window of ``n`` photos: a share of them, within bounds. A
    fixed size loses small weeks (8 of 29 photos left 4 brands all noise) and splits big ones."""
    return int(min(max(cfg.min_cluster_size, round(cfg.min_cluster_share * n)),
                   max(cfg.max_min_cluster_size, cfg.min_cluster_size)))


def cluster_embeddings(embeddings: np.ndarray, cfg: ClusterConfig) -> Clustering:
    """Cluster rows of ``embeddings``; fewer rows than the minimum cluster size are all noise."""
    n = len(embeddings)
    size = min_cluster_size(n, cfg)
    if n < max(size, 2):
        return Clustering(np.full(n, NOISE), np.zeros(n), np.ones(n), embeddings[:, :2])
    reduced = reduce(normalize(embeddings), cfg)
    model = hdbscan.HDBSCAN(min_cluster_size=size,
                            min_samples=min(cfg.min_samples, size, n - 1),
                            cluster_selection_method=cfg.selection_method,
                            core_dist_n_jobs=1)
    labels = model.fit_predict(reduced)
    scores = np.nan_to_num(model.outlier_scores_, nan=1.0)
    return Clustering(labels, model.probabilities_, scores, reduced)


def centroids(embeddings: np.ndarray, labels: np.ndarray) -> dict[int, np.ndarray]:
    """Unit-length mean of each cluster's normalised embeddings."""
    unit = normalize(embeddings)
    return {int(label): normalize(unit[labels == label].mean(axis=0, keepdims=True))[0]
            for label in np.unique(labels) if label != NOISE}


def stable_ids(current: dict[int, np.ndarray], known: dict[int, np.ndarray],
               min_similarity: float, next_id: int) -> dict[int, int]:
    """Map each current cluster label to a persistent id: the matched known id, or a new one."""
    mapping: dict[int, int] = {}
    labels, ids = list(current), list(known)
    if labels and ids:
        similarity = np.stack([current[c] for c in labels]) @ np.stack([known[k] for k in ids]).T
        rows, cols = linear_sum_assignment(-similarity)
        for r, c in zip(rows, cols, strict=True):
            if similarity[r, c] >= min_similarity:
                mapping[labels[r]] = ids[c]
    # New clusters numbered in order of size (by label order HDBSCAN gives): deterministic.
    for label in labels:
        if label not in mapping:
            mapping[label] = next_id
            next_id += 1
    return mapping


def assign_ids(labels: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    return np.array([mapping.get(int(label), NOISE) for label in labels], dtype=int)
