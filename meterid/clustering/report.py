"""The map of all clusters, for the person who reviews them (contact sheets: ``photos.sheets``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after the headless backend is chosen)
import numpy as np  # noqa: E402

from meterid.clustering.cluster import NOISE  # noqa: E402


def cluster_map(reduced: np.ndarray, ids: np.ndarray, out: Path) -> Path:
    """All photos on the first two reduced axes, coloured by cluster id; noise in grey."""
    fig, ax = plt.subplots(figsize=(8, 6.5))
    xy = reduced[:, :2] if reduced.shape[1] >= 2 else np.c_[reduced, np.zeros(len(reduced))]
    noise = ids == NOISE
    ax.scatter(xy[noise, 0], xy[noise, 1], s=8, c="lightgrey", label="noise (-1)")
    palette = plt.get_cmap("tab20")
    for n, cluster_id in enumerate(sorted(set(ids[~noise].tolist()))):
        members = ids == cluster_id
        ax.scatter(xy[members, 0], xy[members, 1], s=12, color=palette(n % 20))
        cx, cy = xy[members, 0].mean(), xy[members, 1].mean()
        ax.annotate(str(cluster_id), (cx, cy), fontsize=9, weight="bold")
    ax.set_title(f"UNKNOWN photos: {int((~noise).sum())} in {len(set(ids[~noise].tolist()))} "
                 f"clusters, {int(noise.sum())} noise")
    ax.set_xlabel("reduced axis 1")
    ax.set_ylabel("reduced axis 2")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
