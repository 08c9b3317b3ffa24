"""HDBSCAN on L2-normalised embeddings, with cluster ids that persist week to week.

- Embeddings are L2-normalised (cosine geometry, as the kNN open-set rule), optionally reduced
  with PCA: HDBSCAN's tree-based algorithms lose their speed above ~50 dimensions.
- HDBSCAN (the ``hdbscan`` package: GLOSH outlier scores, membership probabilities); label -1
  is noise, >= 0 a candidate new meter type.
- A week whose photos hold one group and a few strays has no second cluster to split from, so
  HDBSCAN calls it all noise. Then, with ``single_group``, it may keep that one group, but only
  when its photos are as alike as the photos of the model's least cohesive known class.
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


def mean_pairwise_cosine(unit: np.ndarray) -> float:
    """Mean cosine similarity over the distinct pairs of rows of L2-normalised ``unit``."""
    n = len(unit)
    return float(((unit @ unit.T).sum() - n) / (n * (n - 1)))


def class_cohesion_floor(reference: np.ndarray, labels: np.ndarray) -> float | None:
    """How alike a type's photos are for this model: the lowest mean pairwise cosine of one
    known class's training photos (embeddings stored with the model). None without them."""
    unit = normalize(reference)
    cohesion = [mean_pairwise_cosine(unit[labels == c]) for c in np.unique(labels)
                if (labels == c).sum() > 1]
    return min(cohesion) if cohesion else None


def _hdbscan(reduced: np.ndarray, size: int, cfg: ClusterConfig,
             single_cluster: bool) -> hdbscan.HDBSCAN:
    model = hdbscan.HDBSCAN(min_cluster_size=size,
                            min_samples=min(cfg.min_samples, size, len(reduced) - 1),
                            cluster_selection_method=cfg.selection_method,
                            allow_single_cluster=single_cluster, core_dist_n_jobs=1)
    model.fit(reduced)
    return model


def cluster_embeddings(embeddings: np.ndarray, cfg: ClusterConfig,
                       single_group_cohesion: float | None = None) -> Clustering:
    """Cluster rows of ``embeddings``; fewer rows than the minimum cluster size are all noise.
    ``single_group_cohesion``: when HDBSCAN finds no cluster, one group at least this cohesive
    (mean pairwise cosine) is kept (see the module's docstring); None: never."""
    n = len(embeddings)
    size = min_cluster_size(n, cfg)
    if n < max(size, 2):
        return Clustering(np.full(n, NOISE), np.zeros(n), np.ones(n), embeddings[:, :2])
    unit = normalize(embeddings)
    reduced = reduce(unit, cfg)
    model = _hdbscan(reduced, size, cfg, single_cluster=False)
    if (model.labels_ == NOISE).all() and single_group_cohesion is not None:
        single = _hdbscan(reduced, size, cfg, single_cluster=True)
        group = single.labels_ == 0
        if group.sum() > 1 and mean_pairwise_cosine(unit[group]) >= single_group_cohesion:
            model = single
    scores = np.nan_to_num(model.outlier_scores_, nan=1.0)
    return Clustering(model.labels_, model.probabilities_, scores, reduced)


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
