"""The single_group benchmark's measures: when a week's new type counts as found, and when a
cluster of a week without one counts as impure (what a reviewer would reject)."""

from __future__ import annotations

import numpy as np

from benchmarks.single_group import _found, _impure
from meterid.clustering.cluster import NOISE


def test_a_new_type_is_found_by_a_cluster_of_three_mostly_its_photos():
    brands = np.array(["new", "new", "new", "milk", "new", "juice"])
    assert _found(np.array([0, 0, 0, 0, NOISE, NOISE]), brands, "new")  # 3 of 4: 75%
    assert not _found(np.array([0, 0, 1, 1, 1, NOISE]), brands, "new")  # 2 of 2; 2 of 3
    assert not _found(np.full(6, NOISE), brands, "new")


def test_a_cluster_under_seventy_percent_one_class_is_impure():
    brands = np.array(["milk", "milk", "juice", "milk", "juice", "juice"])
    assert _impure(np.array([0, 0, 0, 1, 1, NOISE]), brands)  # cluster 1: half and half
    assert not _impure(np.array([0, 0, NOISE, 0, 1, 1]), brands)
    assert not _impure(np.full(6, NOISE), brands)  # all noise: no cluster to reject
