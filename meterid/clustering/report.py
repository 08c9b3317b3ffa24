"""Pictures for the person who reviews clusters: contact sheets and a map of all clusters."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after the headless backend is chosen)
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageOps  # noqa: E402

from meterid.clustering.cluster import NOISE  # noqa: E402

CAPTION_PX = 14


def _thumbnail(path: Path, size: int) -> Image.Image:
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image).convert("RGB")
            return ImageOps.pad(image, (size, size), color=(235, 235, 235))
    except Exception:  # noqa: BLE001 - a broken file becomes a grey tile, not a failed report
        return Image.new("RGB", (size, size), (160, 160, 160))


def contact_sheet(paths: list[Path], captions: list[str], title: str, out: Path,
                  max_images: int, thumb: int) -> Path:
    """A grid of up to ``max_images`` thumbnails, each captioned, under a title line."""
    paths, captions = paths[:max_images], captions[:max_images]
    columns = max(1, min(6, len(paths)))
    rows = max(1, math.ceil(len(paths) / columns))
    cell = thumb + CAPTION_PX
    sheet = Image.new("RGB", (columns * thumb, 22 + rows * cell), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((6, 4), title, fill="black")
    for i, (path, caption) in enumerate(zip(paths, captions, strict=True)):
        x, y = (i % columns) * thumb, 22 + (i // columns) * cell
        sheet.paste(_thumbnail(path, thumb), (x, y))
        draw.text((x + 3, y + thumb + 1), caption[: thumb // 6], fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


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
