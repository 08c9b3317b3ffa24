"""Draw one meter (RGBA, transparent outside the casing) from its spec plus per-photo variation.

Per-photo variation is what a class looks like in the field: a different reading, serial number,
casing tint, wear (scratches, dirt) and the odd utility sticker. Layout positions are fractions of
the casing's inner box, so every shape shares the same drawing code.
"""

from __future__ import annotations

import colorsys
import zlib
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from meterid.data.demo.catalog import (
    ACCENTS,
    BRANDS,
    LED_COLORS,
    PLATE_COLORS,
    UNKNOWN_BRANDS,
    Color,
    MeterSpec,
)

# Canvas size (width, height) and inner layout box (x0, y0, x1, y1 as fractions) per shape.
SHAPE_CANVAS: dict[str, tuple[int, int]] = {
    "slab": (300, 480), "dome": (300, 480), "square": (400, 420), "wide": (460, 340),
    "capsule": (280, 480), "stepped": (320, 480), "chamfer": (320, 460), "round": (420, 420),
    "hexagon": (360, 440), "arch": (300, 480), "twin": (340, 480), "tall": (220, 480),
}
INNER_BOX: dict[str, tuple[float, float, float, float]] = {
    "dome": (0.1, 0.24, 0.9, 0.96), "round": (0.2, 0.16, 0.8, 0.84),
    "capsule": (0.12, 0.1, 0.88, 0.9), "hexagon": (0.2, 0.1, 0.8, 0.9),
    "arch": (0.1, 0.2, 0.9, 0.96), "stepped": (0.14, 0.04, 0.86, 0.96),
}
DEFAULT_INNER_BOX = (0.08, 0.05, 0.92, 0.95)

# Seven-segment patterns: segments a, b, c, d, e, f, g.
SEGMENTS = {
    "0": "abcdef", "1": "bc", "2": "abdeg", "3": "abcdg", "4": "bcfg",
    "5": "acdfg", "6": "acdefg", "7": "abc", "8": "abcdefg", "9": "abcdfg",
}


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(size, 6))


def _jitter(color: Color, rng: np.random.Generator, amount: int) -> Color:
    r, g, b = (int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in color)
    return r, g, b


def brand_color(brand: str) -> Color:
    """A stable, saturated logo colour per brand name."""
    names = (*BRANDS, *UNKNOWN_BRANDS)
    index = names.index(brand) if brand in names else zlib.crc32(brand.encode())
    hue = (index * 0.618034) % 1.0  # golden-ratio steps keep neighbouring brands apart
    r, g, b = (int(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.85, 0.7))
    return r, g, b


def _darker(color: Color, factor: float = 0.6) -> Color:
    r, g, b = (int(c * factor) for c in color)
    return r, g, b


def _casing_mask(shape: str, size: tuple[int, int]) -> Image.Image:
    """Opaque where the casing is."""
    w, h = size
    mask = Image.new("L", size, 0)
    d = ImageDraw.Draw(mask)
    if shape in ("slab", "square", "wide", "tall"):
        d.rounded_rectangle((0, 0, w - 1, h - 1), radius=int(0.06 * w), fill=255)
    elif shape == "capsule":
        d.rounded_rectangle((0, 0, w - 1, h - 1), radius=int(0.45 * w), fill=255)
    elif shape == "dome":
        d.ellipse((0, 0, w - 1, int(0.5 * h)), fill=255)
        d.rectangle((0, int(0.25 * h), w - 1, h - 1), fill=255)
    elif shape == "arch":
        d.polygon([(0, int(0.22 * h)), (w // 2, 0), (w - 1, int(0.22 * h)), (w - 1, h - 1),
                   (0, h - 1)], fill=255)
    elif shape == "stepped":
        d.rectangle((int(0.12 * w), 0, int(0.88 * w), int(0.55 * h)), fill=255)
        d.rounded_rectangle((0, int(0.45 * h), w - 1, h - 1), radius=int(0.04 * w), fill=255)
    elif shape == "chamfer":
        c = int(0.16 * w)
        d.polygon([(c, 0), (w - 1 - c, 0), (w - 1, c), (w - 1, h - 1 - c), (w - 1 - c, h - 1),
                   (c, h - 1), (0, h - 1 - c), (0, c)], fill=255)
    elif shape == "round":
        d.ellipse((0, 0, w - 1, h - 1), fill=255)
    elif shape == "hexagon":
        q = int(0.25 * h)
        d.polygon([(w // 2, 0), (w - 1, q), (w - 1, h - 1 - q), (w // 2, h - 1), (0, h - 1 - q),
                   (0, q)], fill=255)
    elif shape == "twin":
        d.rounded_rectangle((0, 0, w - 1, int(0.48 * h)), radius=int(0.05 * w), fill=255)
        d.rounded_rectangle((0, int(0.52 * h), w - 1, h - 1), radius=int(0.05 * w), fill=255)
    else:
        raise ValueError(f"unknown casing shape {shape!r}")
    return mask


class _Layout:
    """Maps fractions of the inner box to canvas pixels."""

    def __init__(self, shape: str, size: tuple[int, int]):
        x0, y0, x1, y1 = INNER_BOX.get(shape, DEFAULT_INNER_BOX)
        self.x0, self.y0 = x0 * size[0], y0 * size[1]
        self.w, self.h = (x1 - x0) * size[0], (y1 - y0) * size[1]

    def box(self, fx0: float, fy0: float, fx1: float, fy1: float) -> tuple[int, int, int, int]:
        return (int(self.x0 + fx0 * self.w), int(self.y0 + fy0 * self.h),
                int(self.x0 + fx1 * self.w), int(self.y0 + fy1 * self.h))


def _draw_seven_segment(d: ImageDraw.ImageDraw, box: tuple, text: str, color: Color) -> None:
    x0, y0, x1, y1 = box
    cell = (x1 - x0) / len(text)
    t = max(2, int(cell * 0.16))
    for i, char in enumerate(text):
        left, right = x0 + i * cell + cell * 0.15, x0 + (i + 1) * cell - cell * 0.15
        top, bottom, mid = y0, y1, (y0 + y1) / 2
        seg = {
            "a": (left, top, right, top + t), "d": (left, bottom - t, right, bottom),
            "g": (left, mid - t / 2, right, mid + t / 2),
            "f": (left, top, left + t, mid), "b": (right - t, top, right, mid),
            "e": (left, mid, left + t, bottom), "c": (right - t, mid, right, bottom),
        }
        for name in SEGMENTS[char]:
            d.rectangle(tuple(int(v) for v in seg[name]), fill=color)


def _draw_display(d: ImageDraw.ImageDraw, spec: MeterSpec, box: tuple, rng: np.random.Generator):
    x0, y0, x1, y1 = box
    reading = "".join(str(v) for v in rng.integers(0, 10, 6))
    if spec.display == "lcd":
        d.rectangle(box, fill=_jitter((168, 186, 150), rng, 10), outline=(40, 40, 40), width=3)
        inner = (x0 + 8, y0 + 8, x1 - 8, int(y1 - (y1 - y0) * 0.25))
        _draw_seven_segment(d, inner, reading, (35, 45, 35))
        d.text((x1 - 40, y1 - (y1 - y0) * 0.24), "kWh", fill=(35, 45, 35),
               font=_font(int((y1 - y0) * 0.18)))
    elif spec.display == "counter":
        d.rectangle(box, fill=(20, 20, 22), outline=(90, 90, 90), width=3)
        cells = len(reading) + 1
        cell_w = (x1 - x0 - 8) / cells
        for i, char in enumerate(reading + str(rng.integers(0, 10))):
            cx0 = x0 + 4 + i * cell_w
            fill = (170, 30, 30) if i == cells - 1 else (245, 245, 240)
            d.rectangle((int(cx0 + 2), y0 + 6, int(cx0 + cell_w - 2), y1 - 6), fill=fill)
            d.text((cx0 + cell_w * 0.2, y0 + 8), char, fill=(10, 10, 10),
                   font=_font(int((y1 - y0) * 0.7)))
    else:  # dials
        d.rectangle(box, fill=(240, 238, 230), outline=(60, 60, 60), width=2)
        n = 5
        r = min((x1 - x0) / (2 * n) - 3, (y1 - y0) / 2 - 4)
        for i in range(n):
            cx, cy = x0 + (2 * i + 1) * (x1 - x0) / (2 * n), (y0 + y1) / 2
            d.ellipse((cx - r, cy - r, cx + r, cy + r), outline=(30, 30, 30), width=2)
            angle = rng.uniform(0, 2 * np.pi)
            d.line((cx, cy, cx + 0.85 * r * np.sin(angle), cy - 0.85 * r * np.cos(angle)),
                   fill=(20, 20, 20), width=3)


def _draw_buttons(d: ImageDraw.ImageDraw, spec: MeterSpec, display: tuple, layout: _Layout):
    x0, y0, x1, y1 = display
    for i in range(spec.buttons):
        if spec.button_side == "right":
            cx = layout.box(0.9, 0, 0.9, 0)[0]
            cy = y0 + (i + 0.5) * (y1 - y0) / max(spec.buttons, 1)
        else:
            cx, cy = x0 + (i + 0.5) * (x1 - x0) / spec.buttons, y1 + 0.05 * layout.h
        r = 0.065 * layout.w
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(30, 60, 140), outline=(15, 15, 15),
                  width=2)


def _draw_plate(d: ImageDraw.ImageDraw, spec: MeterSpec, box: tuple, rng: np.random.Generator):
    color = _jitter(PLATE_COLORS[spec.plate], rng, 12)
    ink = (20, 20, 20) if spec.plate != "blue" else (240, 240, 240)
    x0, y0, x1, y1 = box
    d.rectangle(box, fill=color, outline=_darker(color), width=2)
    line_h = (y1 - y0) / 4
    d.text((x0 + 6, y0 + 3), f"{spec.model}  50Hz", fill=ink, font=_font(int(line_h * 0.8)))
    serial = "SN " + "".join(str(v) for v in rng.integers(0, 10, 9))
    d.text((x0 + 6, y0 + line_h + 3), serial, fill=ink, font=_font(int(line_h * 0.7)))
    x = x0 + 6
    while x < x0 + (x1 - x0) * 0.7:  # barcode with a per-photo pattern
        bar = int(rng.integers(1, 4))
        d.rectangle((int(x), int(y0 + 2.2 * line_h), int(x + bar), int(y1 - 4)), fill=ink)
        x += bar + int(rng.integers(1, 4))


def _draw_wear(img: Image.Image, mask: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Scratches, dirt and the odd sticker; kept inside the casing."""
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(overlay)
    w, h = img.size
    for _ in range(int(rng.integers(0, 12))):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        dx, dy = rng.normal(0, 30, 2)
        d.line((x, y, x + dx, y + dy), fill=(255, 255, 255, int(rng.integers(40, 120))), width=1)
    for _ in range(int(rng.integers(0, 6))):
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(4, 30)
        d.ellipse((x - r, y - r, x + r, y + r), fill=(90, 70, 40, int(rng.integers(20, 80))))
    if rng.random() < 0.3:
        x, y = rng.uniform(0.1, 0.7) * w, rng.uniform(0.5, 0.85) * h
        d.rectangle((x, y, x + 0.22 * w, y + 0.08 * h), fill=(250, 250, 250, 230))
        d.text((x + 4, y + 2), "CHECKED", fill=(200, 0, 0, 255), font=_font(int(0.035 * h)))
    overlay.putalpha(Image.fromarray(np.minimum(np.asarray(overlay)[..., 3], np.asarray(mask))))
    return Image.alpha_composite(img, overlay)


def render_meter(spec: MeterSpec, rng: np.random.Generator) -> Image.Image:
    """The meter as an RGBA image; alpha is the casing silhouette."""
    size = SHAPE_CANVAS[spec.shape]
    mask = _casing_mask(spec.shape, size)
    casing = np.array(_jitter(spec.casing, rng, 8), dtype=np.float32)
    shade = np.linspace(1.08, 0.88, size[1], dtype=np.float32)[:, None, None]  # top-lit casing
    body = np.clip(casing[None, None, :] * shade * np.ones((1, size[0], 1)), 0, 255)
    img = Image.fromarray(body.astype(np.uint8), "RGB").convert("RGBA")
    d = ImageDraw.Draw(img)
    layout = _Layout(spec.shape, size)

    logo_y = 0.17 if spec.plate_side == "top" else 0.03
    # Each brand has its own logo badge colour, as real brands do.
    d.rectangle(layout.box(0.0, logo_y - 0.01, 0.82, logo_y + 0.11), fill=brand_color(spec.brand))
    d.text(layout.box(0.03, logo_y, 0, 0)[:2], spec.brand, fill=(250, 250, 250),
           font=_font(int(0.09 * layout.h)))
    if spec.led != "none":
        cx, cy = layout.box(0.92, logo_y + 0.04, 0, 0)[:2]
        r = 0.06 * layout.w
        d.ellipse((cx - 1.5 * r, cy - 1.5 * r, cx + 1.5 * r, cy + 1.5 * r), fill=(20, 20, 20))
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=LED_COLORS[spec.led])
    right = 0.78 if spec.buttons and spec.button_side == "right" else 0.98
    display_y = (0.3, 0.44) if spec.plate_side == "top" else (0.2, 0.36)
    display = layout.box(0.02, display_y[0], right, display_y[1])
    _draw_display(d, spec, display, rng)
    _draw_buttons(d, spec, display, layout)
    if spec.disc_window:
        d.rectangle(layout.box(0.25, 0.5, 0.75, 0.58), fill=(25, 25, 25))
        d.rectangle(layout.box(0.3, 0.535, 0.7, 0.545), fill=(200, 200, 205))
    plate_y = (0.02, 0.15) if spec.plate_side == "top" else (0.62, 0.8)
    _draw_plate(d, spec, layout.box(0.04, plate_y[0], 0.96, plate_y[1]), rng)
    if spec.accent != "none":
        d.rectangle(layout.box(-0.2, 0.82, 1.2, 0.89), fill=ACCENTS[spec.accent])
    d.rectangle(layout.box(-0.2, 0.9, 1.2, 1.2), fill=_darker(spec.casing, 0.8))  # terminal cover
    img.putalpha(mask)
    return _draw_wear(img, mask, rng)
