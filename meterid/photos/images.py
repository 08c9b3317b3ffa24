"""Safe image reading: the one place that decides how a file becomes an RGB image.

Both ``inspect_image`` (the manifest) and ``load_rgb`` (training and scoring) go through the same
steps, so a file the manifest accepts is one the model can read, and vice versa:

1. open the header only, and refuse files whose header claims more than ``max_pixels`` (or more
   than Pillow's own ``Image.MAX_IMAGE_PIXELS``) before any pixel is decoded;
2. decode, then apply the EXIF orientation (width and height are reported after rotation);
3. convert to 8-bit RGB: 16-bit and 32-bit grey are scaled (Pillow would clip them to white),
   transparent pixels are composited onto white.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import imagehash
import numpy as np
from PIL import ExifTags, Image, ImageOps

log = logging.getLogger(__name__)

_ORIENTATION = ExifTags.Base.Orientation
_SWAPS_AXES = frozenset({5, 6, 7, 8})  # EXIF orientations that rotate by 90 or 270 degrees
_SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_HAS_ALPHA = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_WHITE = (255, 255, 255, 255)


class ImageError(ValueError):
    """A file cannot be read as an RGB image; the message names the file and the cause."""


@dataclass(frozen=True)
class ImageFacts:
    """What one file is; ``error`` is None when the file decodes."""

    width: int | None = None
    height: int | None = None
    mode: str | None = None
    format: str | None = None
    bytes: int = 0
    sha256: str | None = None
    phash: str | None = None
    exif_orientation: int | None = None
    rgb_convertible: bool = False
    error: str | None = None


def pixel_limit(max_pixels: int) -> int:
    """The effective limit: ours, or Pillow's when lower (above it Pillow warns or refuses)."""
    pillow = Image.MAX_IMAGE_PIXELS
    return max_pixels if pillow is None else min(max_pixels, int(pillow))


def _bomb_message(pixels: str, limit: int) -> str:
    return f"decompression bomb: {pixels} pixels > limit {limit}"


def _sniff(fp: BinaryIO) -> str:
    """A hint of what a non-image holds when it starts as text (HTML error pages, notes)."""
    fp.seek(0)
    head = fp.read(24)
    try:
        text = head.decode("utf-8").strip()
    except UnicodeDecodeError:
        return ""
    return f"; starts with {text!r}" if text and text.isprintable() else ""


def open_image(fp: BinaryIO, max_pixels: int) -> Image.Image:
    """Open the header only (Pillow refuses far oversized images here); no pixel is decoded."""
    try:
        image = Image.open(fp)
    except Image.UnidentifiedImageError as error:
        raise ImageError(f"not an image (cannot identify image file{_sniff(fp)})") from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        found = re.search(r"\((\d+) pixels\)", str(error))
        pixels = found.group(1) if found else "too many"
        raise ImageError(_bomb_message(pixels, pixel_limit(max_pixels))) from error
    except Exception as error:  # Pillow's plugins raise many types on malformed headers
        raise ImageError(f"corrupt image header: {error}") from error
    return image


def check_size(image: Image.Image, max_pixels: int) -> None:
    """Refuse an image whose header claims too many pixels, before it is decoded."""
    width, height = image.size
    limit = pixel_limit(max_pixels)
    if width * height > limit:
        raise ImageError(_bomb_message(f"{width}x{height} = {width * height}", limit))


def exif_orientation(image: Image.Image, header_only: bool = False) -> int | None:
    """The EXIF Orientation tag (1-8), or None when absent or unreadable.

    ``header_only`` reads only EXIF already parsed from the header: Pillow's ``getexif`` decodes
    a whole PNG to find a trailing eXIf chunk, which must not happen before the size check.
    """
    try:
        if header_only:
            raw = image.info.get("exif")
            exif = Image.Exif()
            if raw:
                exif.load(raw)
        else:
            exif = image.getexif()
        value = exif.get(_ORIENTATION)
    except Exception as error:  # a malformed EXIF block must not hide a readable photo
        log.debug("unreadable EXIF in a %s image: %s", image.format, error)
        return None
    return int(value) if isinstance(value, int) else None


def oriented_size(size: tuple[int, int], orientation: int | None) -> tuple[int, int]:
    """Width and height as displayed, i.e. after the EXIF rotation."""
    width, height = size
    return (height, width) if orientation in _SWAPS_AXES else (width, height)


def decode(image: Image.Image) -> tuple[Image.Image, int | None]:
    """Decode all pixels and apply the EXIF orientation; returns (image, orientation)."""
    try:
        image.load()
    except Exception as error:  # truncated streams raise OSError, SyntaxError, struct.error, ...
        raise ImageError(f"truncated or corrupt image data: {error}") from error
    orientation = exif_orientation(image)
    if orientation is not None and orientation != 1:
        try:
            image = ImageOps.exif_transpose(image)
        except Exception as error:
            raise ImageError(f"cannot apply EXIF orientation {orientation}: {error}") from error
    return image, orientation


def _to_8bit_grey(image: Image.Image) -> Image.Image:
    """Scale 16-bit (and 16-bit data in 32-bit "I") to 0-255; float images in 0-1 too."""
    values = np.asarray(image, dtype=np.float64)
    peak = float(values.max()) if values.size else 0.0
    if image.mode in _SIXTEEN_BIT or (image.mode == "I" and peak > 255):
        values = values / 257.0
    elif image.mode == "F" and peak <= 1.0:
        values = values * 255.0
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB; transparency is composited onto white so hidden pixels do not show."""
    mode = image.mode
    try:
        if mode in _SIXTEEN_BIT or mode in ("I", "F"):
            image = _to_8bit_grey(image)
        if mode in _HAS_ALPHA or "transparency" in image.info:
            rgba = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba)
        return image.convert("RGB")
    except Exception as error:
        raise ImageError(f"cannot convert mode {mode} to RGB: {error}") from error


def _rgb(fp: BinaryIO, max_pixels: int, min_side: int | None) -> Image.Image:
    with open_image(fp, max_pixels) as image:
        check_size(image, max_pixels)
        if min_side and image.format in ("JPEG", "MPO"):
            # DCT scaling (1/2, 1/4, 1/8) that keeps both sides >= min_side; before the EXIF
            # rotation, which only swaps the sides.
            image.draft("RGB", (min_side, min_side))
        decoded, _ = decode(image)
        return to_rgb(decoded)


def rgb_from_bytes(data: bytes, max_pixels: int, min_side: int | None = None) -> Image.Image:
    """Encoded bytes as an EXIF-rotated 8-bit RGB image; raises ``ImageError`` with the cause.

    ``min_side``: the model's decode (see ``model.presets.decode_side``). A JPEG decodes at the
    largest reduced scale that keeps both sides at least that large: a 12 MP field photo decodes
    ~10x faster, and the model sees 224 px anyway. None decodes every pixel (validation).
    """
    if not data:
        raise ImageError("empty file")
    return _rgb(io.BytesIO(data), max_pixels, min_side)


def load_rgb(path: Path, max_pixels: int, min_side: int | None = None) -> Image.Image:
    """``rgb_from_bytes`` for a file; the ``ImageError`` names the path and the cause."""
    path = Path(path)
    try:
        with path.open("rb") as fp:
            if path.stat().st_size == 0:
                raise ImageError("empty file")
            return _rgb(fp, max_pixels, min_side)
    except ImageError as error:
        raise ImageError(f"{path}: {error}") from error
    except OSError as error:
        raise ImageError(f"{path}: cannot read file: {error.strerror or error}") from error


def _facts_of(data: bytes, max_pixels: int) -> dict[str, Any]:
    """Header facts, then decode and RGB facts; stops at the first failure, recording it."""
    facts: dict[str, Any] = {}
    try:
        with open_image(io.BytesIO(data), max_pixels) as image:
            header_orientation = exif_orientation(image, header_only=True)
            facts["width"], facts["height"] = oriented_size(image.size, header_orientation)
            facts.update(mode=image.mode, format=image.format,
                         exif_orientation=header_orientation)
            check_size(image, max_pixels)
            decoded, orientation = decode(image)
            facts["width"], facts["height"] = decoded.size
            facts["exif_orientation"] = orientation
            try:
                rgb = to_rgb(decoded)
            except ImageError as error:
                log.debug("%s", error)
                return facts
            facts.update(rgb_convertible=True, phash=str(imagehash.phash(rgb)))
    except ImageError as error:
        facts["error"] = str(error)
    return facts


def file_sha256(path: Path) -> str:
    """The file's sha256, read in 1 MiB blocks (lists and photos of any size)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fp:
        for block in iter(lambda: fp.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inspect_image(path: Path, max_pixels: int) -> ImageFacts:
    """Facts about one file. Never raises on a bad file: the cause goes to ``error``."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        return ImageFacts(error=f"cannot read file: {error.strerror or error}")
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return ImageFacts(bytes=0, sha256=digest, error="empty file")
    try:
        facts = _facts_of(data, max_pixels)
    except Exception as error:  # a bad file is a recorded row, never a crashed scan
        facts = {"error": f"unreadable image: {type(error).__name__}: {error}"}
    return ImageFacts(bytes=len(data), sha256=digest, **facts)
