"""Exact and near-duplicate detection shared by validation and splitting.

Near-duplicates are found by the Hamming distance between 64-bit perceptual hashes
(``imagehash.phash`` hex strings). Pairs are searched in row blocks so memory stays
bounded (block x n comparisons at a time) on large manifests.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

_BLOCK_ROWS = 2048


def phash_to_uint64(phashes: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """Parse hex phashes; returns (values, valid mask). Missing/invalid hashes are masked out."""
    values = np.zeros(len(phashes), dtype=np.uint64)
    valid = np.zeros(len(phashes), dtype=bool)
    unreadable = []
    for i, text in enumerate(phashes):
        if isinstance(text, str) and text:
            try:
                values[i] = np.uint64(int(text, 16))
                valid[i] = True
            except ValueError:
                unreadable.append(text)
    if unreadable:
        log.warning("%d perceptual hash(es) are not hex (%s): those photos are left out of the "
                    "near-duplicate check", len(unreadable), ", ".join(map(repr, unreadable[:3])))
    return values, valid


def near_duplicate_pairs(phashes: Sequence[str | None], max_distance: int) -> np.ndarray:
    """Index pairs (i < j) whose perceptual hashes differ in at most ``max_distance`` bits."""
    values, valid = phash_to_uint64(phashes)
    index = np.flatnonzero(valid)
    hashes = values[index]
    pairs: list[np.ndarray] = []
    for start in range(0, len(hashes), _BLOCK_ROWS):
        block = hashes[start : start + _BLOCK_ROWS]
        distances = np.bitwise_count(block[:, None] ^ hashes[None, :])
        rows, cols = np.nonzero(distances <= max_distance)
        rows = rows + start
        keep = rows < cols
        pairs.append(np.stack([index[rows[keep]], index[cols[keep]]], axis=1))
    if not pairs:
        return np.empty((0, 2), dtype=np.int64)
    return np.concatenate(pairs).astype(np.int64)


def duplicate_groups(manifest: pd.DataFrame, max_distance: int) -> np.ndarray:
    """Group id per manifest row: rows linked by equal sha256 or near phash share a group.

    Linking is transitive (union-find), so a chain of near-duplicates forms one group;
    that is what a split needs, since any member in another split would leak.
    """
    n = len(manifest)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        root_a, root_b = find(a), find(b)
        if root_a != root_b:
            parent[max(root_a, root_b)] = min(root_a, root_b)

    for a, b in near_duplicate_pairs(manifest["phash"].tolist(), max_distance):
        union(int(a), int(b))
    sha = manifest["sha256"].to_numpy()
    first_row_of_sha: dict[str, int] = {}
    for i, digest in enumerate(sha):
        if isinstance(digest, str) and digest:
            union(i, first_row_of_sha.setdefault(digest, i))
    return np.array([find(i) for i in range(n)], dtype=np.int64)
