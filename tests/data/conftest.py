"""Image factories for the data tests: every good and bad file kind, written with Pillow."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meterid.config import ValidateConfig

CLASSES = ("acme-a1", "beta-b2", "gamma-g3")
PER_CLASS = 3


def noise_image(seed: int, size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Image.Image:
    """Random blocks: distinct seeds give perceptual hashes far apart."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(blocks).resize((size[0], size[1]), Image.Resampling.NEAREST)
    return image.convert(mode)


def save(image: Image.Image, path: Path, fmt: str | None = None, **kwargs: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt, **kwargs)
    return path


def truncated_jpeg(path: Path, seed: int = 1) -> Path:
    buffer = io.BytesIO()
    noise_image(seed, (200, 150)).save(buffer, "JPEG", quality=90)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims ``width`` x ``height`` (a decompression bomb header)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = 8 + 8  # signature, then length + type of the IHDR chunk
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def exif_rotated_jpeg(path: Path, orientation: int = 6, seed: int = 2) -> Path:
    """A 300x200 stored JPEG that should display rotated (Orientation 6: 90 degrees CW)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return save(noise_image(seed, (300, 200)), path, "JPEG", exif=exif.tobytes(), quality=95)


def sixteen_bit_png(path: Path) -> Path:
    """A 16-bit grey PNG with a left half at 65535 and a right half at 32896 (= 128 * 257)."""
    values = np.full((40, 60), 32896, dtype=np.uint16)
    values[:, :30] = 65535
    return save(Image.fromarray(values), path, "PNG")


def html_named_jpg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("<!doctype html><html><body>404 Not Found</body></html>")
    return path


def make_dataset(root: Path, classes: tuple[str, ...] = CLASSES, per_class: int = PER_CLASS,
                 size: tuple[int, int] = (64, 48)) -> Path:
    """A clean ImageFolder tree: JPEGs and PNGs with unrelated content."""
    for c, name in enumerate(classes):
        for i in range(per_class):
            fmt = "PNG" if i % 2 else "JPEG"
            save(noise_image(100 * c + i, size), root / name / f"img_{i}.{fmt.lower()}", fmt)
    return root


@pytest.fixture(scope="session")
def rules(params) -> ValidateConfig:
    """The repo's rules with a small size minimum, to keep test images small."""
    return params.validate_.model_copy(update=dict(
        min_width=32, min_height=32, min_images_per_class=PER_CLASS, expected_classes=[],
        max_pixels=1_000_000, workers=2))
