"""Meter classes of the demo dataset.

Classes come in families: a family fixes the casing (shape, proportions, colour) and each class in
it varies a few details (brand text, display, buttons, LED, label plate, accent colour). Classes of
one family can differ in a single detail, which is what makes some of them genuinely hard to tell
apart. The catalog is fixed (its own constant seed), so class identities do not change with the
data seed; only the photos do.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

Color = tuple[int, int, int]

CATALOG_SEED = 20261124

# Casing shapes known to the 38 classes, and shapes only the held-out brands use.
KNOWN_SHAPES = ("slab", "dome", "square", "wide", "capsule", "stepped", "chamfer", "round")
NEW_SHAPES = ("hexagon", "arch", "twin", "tall")
DISPLAYS = ("lcd", "counter", "dials")
PLATE_COLORS: dict[str, Color] = {
    "white": (236, 236, 230),
    "yellow": (232, 200, 60),
    "blue": (60, 100, 180),
    "silver": (180, 184, 190),
}
LED_COLORS: dict[str, Color] = {
    "red": (230, 40, 30), "green": (40, 200, 70), "amber": (245, 160, 20),
}
ACCENTS: dict[str, Color] = {
    "none": (0, 0, 0),
    "red": (190, 40, 40),
    "blue": (40, 80, 170),
    "green": (40, 140, 70),
    "orange": (225, 120, 30),
}
CASING_COLORS: list[Color] = [
    (200, 203, 206), (60, 62, 66), (232, 228, 214), (96, 104, 112),
    (238, 238, 240), (150, 160, 150), (120, 100, 80), (210, 205, 190),
    (80, 90, 120), (170, 60, 50), (40, 40, 44), (220, 215, 160),
]
BRANDS = (
    "VOLTARA", "OHMSTEAD", "KESTREL", "NORVIK", "AMPORA", "GRIDLEY", "FLUXMERE", "JOULIEN",
    "CORVANE", "MERIDYN", "TARNOVA", "BELLWICK", "QUORRA", "ELSTRAND", "RUNEMARK", "ZEPHYRA",
)
UNKNOWN_BRANDS = ("OSTRAVEN", "PYLONIX", "HALDEN", "VIREO", "MARLOW", "SOLENNE", "TRAXEL", "KAVRIN",
                  "DUNMORE", "ISKRAVA", "PELLION", "WENDRA")


@dataclass(frozen=True)
class MeterSpec:
    """Everything that identifies a meter type; per-photo variation lives in ``render``."""

    name: str
    family: str
    shape: str
    casing: Color
    brand: str
    model: str
    display: str
    buttons: int
    button_side: str  # "right" | "below"
    led: str  # "none" or a LED_COLORS key
    plate: str  # a PLATE_COLORS key
    plate_side: str  # "bottom" | "top"
    accent: str  # an ACCENTS key
    disc_window: bool  # rotating Ferraris disc window (mechanical meters)

    @property
    def signature(self) -> tuple:
        """The visible details; two classes never share one."""
        return (self.shape, self.casing, self.brand, self.display, self.buttons, self.button_side,
                self.led, self.plate, self.plate_side, self.accent, self.disc_window)


def _variant_options(rng: np.random.Generator, shape: str) -> list[dict]:
    """All detail combinations for a family, shuffled; mechanical displays get fewer buttons."""
    combos = []
    for display, buttons, led, plate, accent in itertools.product(
        DISPLAYS, (0, 1, 2, 3), ("none", *LED_COLORS), PLATE_COLORS, ACCENTS
    ):
        if display != "lcd" and buttons > 1:
            continue
        combos.append(dict(display=display, buttons=buttons, led=led, plate=plate, accent=accent,
                           button_side=str(rng.choice(["right", "below"])),
                           plate_side=str(rng.choice(["bottom", "top"])),
                           disc_window=display != "lcd" and shape in ("dome", "round", "square")))
    order = rng.permutation(len(combos))
    return [combos[i] for i in order]


def _family_classes(
    rng: np.random.Generator, shape: str, casing: Color, brands: list[str], count: int,
    taken: set[tuple], model_prefix: str,
) -> list[MeterSpec]:
    """``count`` classes of one family; consecutive classes differ in one or two details."""
    options = _variant_options(rng, shape)
    base = options[0]
    specs: list[MeterSpec] = []
    for option in options:
        if len(specs) == count:
            break
        # Keep most of the base design: siblings differ in 1-2 fields, like real product lines.
        changed = [k for k in ("display", "buttons", "led", "plate", "accent")
                   if option[k] != base[k]]
        if specs and len(changed) > 2:
            continue
        brand = brands[len(specs) % len(brands)]
        details = dict(base, **{k: option[k] for k in changed})
        model = f"{model_prefix}{100 + 10 * len(specs)}{details['display'][0]}"
        spec = MeterSpec(name=f"{brand.lower()}-{model}", family=shape, shape=shape,
                         casing=casing, brand=brand, model=model.upper(), **details)
        if spec.signature not in taken and spec.name not in {s.name for s in specs}:
            taken.add(spec.signature)
            specs.append(spec)
    return specs


def build_catalog(n_classes: int, n_unknown: int) -> tuple[list[MeterSpec], list[MeterSpec]]:
    """The known classes and the held-out brands (some new families, some close to known ones)."""
    if n_unknown > len(UNKNOWN_BRANDS):
        raise ValueError(f"unknown_brands={n_unknown}: at most {len(UNKNOWN_BRANDS)} are defined")
    rng = np.random.default_rng(CATALOG_SEED)
    taken: set[tuple] = set()
    families = len(KNOWN_SHAPES)
    per_family = [n_classes // families + (i < n_classes % families) for i in range(families)]
    known: list[MeterSpec] = []
    for i, (shape, count) in enumerate(zip(KNOWN_SHAPES, per_family, strict=True)):
        brands = [BRANDS[(2 * i) % len(BRANDS)], BRANDS[(2 * i + 1) % len(BRANDS)]]
        known += _family_classes(rng, shape, CASING_COLORS[i], brands, count, taken, shape[:2])
    unknown: list[MeterSpec] = []
    for j, brand in enumerate(UNKNOWN_BRANDS[:n_unknown]):
        # Even indices: a new casing family; odd: a known casing with a new brand (near-known).
        if j % 2 == 0:
            shape, casing = NEW_SHAPES[(j // 2) % len(NEW_SHAPES)], CASING_COLORS[8 + (j // 2) % 4]
        else:
            shape, casing = KNOWN_SHAPES[j % families], CASING_COLORS[j % families]
        unknown += _family_classes(rng, shape, casing, [brand], 1, taken, "x")
    return known, [_as_brand(spec) for spec in unknown]


def _as_brand(spec: MeterSpec) -> MeterSpec:
    """Held-out folders are named by brand only: that is what a reviewer would learn."""
    return MeterSpec(**{**spec.__dict__, "name": spec.brand.lower()})


def class_counts(n_classes: int, total: int, imbalance_ratio: float) -> list[int]:
    """Geometric class sizes from smallest to largest, summing exactly to ``total``.

    With 38 classes, 1,975 images and a ratio of 50 this gives 4 to ~200 images per class:
    several classes under 10 and several over 100, like the reference dataset.
    """
    weights = imbalance_ratio ** (np.arange(n_classes) / max(n_classes - 1, 1))
    exact = weights / weights.sum() * total
    counts = np.maximum(np.floor(exact).astype(int), 1)
    remainder = total - counts.sum()
    # Largest remainders first; ties go to the larger classes so sizes stay sorted.
    order = np.lexsort((-np.arange(n_classes), -(exact - np.floor(exact))))
    for i in order[: max(remainder, 0)]:
        counts[i] += 1
    return counts.tolist()
