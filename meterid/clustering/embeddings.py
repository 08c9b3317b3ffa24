"""Backbone embeddings of photos, cached per (photo sha256, model).

The embedding is the classifier's penultimate layer (pooled backbone features), computed with
the same eval preprocessing as inference. Each model gets its own cache folder
(``<root>/<model key>/embeddings.npy`` + ``index.parquet``, the key a hash of the weights), so
embeddings of two models are never mixed: a new champion starts an empty cache and its first
weekly run re-embeds. The weekly run only embeds photos the cache lacks. ``.npy`` + Parquet,
never pickles.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from meterid.files import atomic_path
from meterid.inference.engines import weights_digest
from meterid.inference.predictor import Predictor
from meterid.photos.images import ImageError, load_rgb
from meterid.progress import progress

log = logging.getLogger(__name__)


def model_key(predictor: Predictor) -> str:
    """The cache folder name: a hash of the weights and input size, after the registry version
    for people to read. A version number alone is not an identity: two registries (a laptop's
    SQLite store, the team's server) each have a "version 1", with other weights."""
    digest = weights_digest(predictor.model)
    version = f"v{predictor.version}-" if predictor.version is not None else ""
    return f"{version}{digest}-{predictor.image_size}px"


class EmbeddingCache:
    def __init__(self, root: Path, key: str):
        self.folder = Path(root) / key
        self._index_path = self.folder / "index.parquet"
        self._vectors_path = self.folder / "embeddings.npy"

    def load(self) -> tuple[pd.DataFrame, np.ndarray]:
        if not self._index_path.is_file():
            return pd.DataFrame({"sha256": pd.Series([], dtype=str)}), np.empty((0, 0), "float32")
        return pd.read_parquet(self._index_path), np.load(self._vectors_path)

    def save(self, index: pd.DataFrame, vectors: np.ndarray) -> None:
        # Vectors first: a kill between the two leaves extra rows, never missing ones.
        with atomic_path(self._vectors_path) as tmp, open(tmp, "wb") as out:
            np.save(out, vectors.astype(np.float32))
        with atomic_path(self._index_path) as tmp:
            index.to_parquet(tmp, index=False)


def _embed_batch(predictor: Predictor, paths: list[Path], max_pixels: int) -> list[np.ndarray]:
    tensors, slots = [], []
    for slot, path in enumerate(paths):
        try:
            tensors.append(predictor.preprocess(load_rgb(path, max_pixels, predictor.image_size)))
            slots.append(slot)
        except ImageError as error:
            log.warning("not embedded: %s", error)
    vectors: list[np.ndarray] = [np.full(predictor.model.embedding_dim, np.nan, np.float32)
                                 for _ in paths]
    if tensors:
        for slot, vector in zip(slots, predictor.embed(torch.stack(tensors)), strict=True):
            vectors[slot] = vector
    return vectors


def embed_photos(photos: pd.DataFrame, predictor: Predictor, cache_root: Path, batch_size: int,
                 max_pixels: int) -> np.ndarray:
    """Embeddings for ``photos`` (columns ``sha256``, ``path``), one row each, in order;
    only photos missing from this model's cache are computed. Unreadable photos get NaN rows."""
    cache = EmbeddingCache(cache_root, model_key(predictor))
    index, vectors = cache.load()
    known = dict(zip(index["sha256"], range(len(index)), strict=True))
    missing = photos.drop_duplicates("sha256")
    missing = missing[~missing["sha256"].isin(known)]
    if len(missing):
        log.info("embedding %d new photos with model %s (%d cached)", len(missing),
                 model_key(predictor), len(known))
        new = []
        paths = [Path(p) for p in missing["path"]]
        for start in progress(range(0, len(paths), batch_size), "embedding", "batch"):
            new.extend(_embed_batch(predictor, paths[start:start + batch_size], max_pixels))
        vectors = np.vstack([vectors, np.stack(new)]) if len(vectors) else np.stack(new)
        index = pd.concat([index, missing[["sha256"]]], ignore_index=True)
        cache.save(index, vectors)
        known = dict(zip(index["sha256"], range(len(index)), strict=True))
    return vectors[[known[sha] for sha in photos["sha256"]]]
