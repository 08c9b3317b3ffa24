"""Contact sheets: a grid of captioned thumbnails under a title, the picture a person reads a
cluster, a list of suspected labels or a validation finding from."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

log = logging.getLogger(__name__)

CAPTION_PX = 14


def _thumbnail(path: Path, size: int) -> Image.Image:
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
            return ImageOps.pad(image, (size, size), color=(235, 235, 235))
    except Exception as error:  # noqa: BLE001 - a grey tile, not a failed report; said why
        log.warning("contact sheet: %s is shown as a grey tile (%s: %s)", path,
                    type(error).__name__, error)
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
