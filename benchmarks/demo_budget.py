"""The demo's training budget: how many augmented views, how many phase-2 epochs and which
augmentations buy the accuracy targets (>= 97% top-1, >= 95% macro recall) inside a 12-minute
``make demo``, and what grayscale augmentation does for night-mode photos.

Each setting (augmentation, input size) caches the stem's activations once, at the most views
compared; a variant with fewer views trains on the first of them (views are cached view-major),
so every variant of one setting sees the same pixels. Variants are chosen on the validation
photos and reported on the test photos, which no choice looked at. ``DEMO_BUDGET_SETTINGS`` and
``DEMO_BUDGET_VARIANTS`` (names separated by ``;``) pick what runs; the default runs everything.
Needs the demo photos (``make demo``).

Validation photos exist only for classes above ``split.high`` photos, so a setting aimed at the
rare classes (rare-class views) ties there: read it on the test photos of one demo seed and
confirm it on another, which took no part (run this in a project whose params.yaml sets
``demo.seed``, ``split.seed`` and ``train.seed`` to 43, after ``meterid flow data``).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from dataclasses import dataclass

import pandas as pd
import torch

from meterid.config import Params, load_params
from meterid.data.demo.catalog import (
    ACCENTS,
    LED_COLORS,
    PLATE_COLORS,
    MeterSpec,
    build_catalog,
)
from meterid.data.split import read_splits
from meterid.evaluation.inputs import field_case_activations
from meterid.evaluation.metrics import headline_metrics
from meterid.training.trainer import (
    CachedSplit,
    build_model,
    cache_splits,
    fit_on_cache,
    logits_from_activations,
)

SETTINGS = {  # name: train-config updates (``augment``: of the augmentation), one cache each
    "colour": {},
    "grayscale 0.3": {"augment": {"grayscale_prob": 0.3}},
    "colour 192 px": {"image_size": 192},
    "colour 160 px": {"image_size": 160},
    # Rare classes get more views (train.min_views_per_class); their extra views come after
    # every image's first ones, so "4 views" variants of this setting train without them.
    "colour, rare classes 80 views": {"min_views_per_class": 80},
    "grayscale 0.3, rare classes 80 views": {"augment": {"grayscale_prob": 0.3},
                                             "min_views_per_class": 80},
    # A larger pretrained backbone (issue 12's small-data regime asks which one holds)
    "Lite1, rare classes 80 views": {"backbone": "efficientnet_lite1",
                                     "min_views_per_class": 80},
}
VARIANTS = {  # name: (views, phase-2 settings); views None: every cached view
    "all cached views, phase 2 cosine 8 epochs": (None, {"epochs": 8, "patience": 8,
                                                         "lr_schedule": "cosine"}),
    "4 views, phase 2 cosine 4 epochs": (4, {"epochs": 4, "patience": 4, "lr_schedule": "cosine"}),
    "2 views, phase 2 cosine 4 epochs": (2, {"epochs": 4, "patience": 4, "lr_schedule": "cosine"}),
    "4 views, phase 2 cosine 2 epochs": (4, {"epochs": 2, "patience": 2, "lr_schedule": "cosine"}),
    "4 views, phase 2 cosine 6 epochs at 1e-3": (4, {"epochs": 6, "patience": 6, "lr": 1e-3,
                                                      "lr_schedule": "cosine"}),
    "4 views, phase 2 cosine 8 epochs": (4, {"epochs": 8, "patience": 8, "lr_schedule": "cosine"}),
    # One phase-2 budget (~24 k steps of 32) spent three ways
    "8 views, phase 2 cosine 6 epochs": (8, {"epochs": 6, "patience": 6, "lr_schedule": "cosine"}),
    "6 views, phase 2 cosine 8 epochs": (6, {"epochs": 8, "patience": 8, "lr_schedule": "cosine"}),
    "4 views, phase 2 cosine 12 epochs": (4, {"epochs": 12, "patience": 12,
                                              "lr_schedule": "cosine"}),
}


def _chosen(table: dict, variable: str) -> dict:
    """The entries named in the environment ``variable`` (separated by ``;``: names hold
    commas); all when unset."""
    names = [n.strip() for n in os.environ.get(variable, ";".join(table)).split(";") if n]
    return {name: table[name] for name in names}


@dataclass
class Outcome:
    val_accuracy: float
    test_accuracy: float
    macro_recall: float
    grayscale_accuracy: float
    grayscale_up_to_siblings: float  # a colour-only sibling of the true class counts as right
    phase1_s: float
    phase2_s: float
    cache_s: float  # the cache pass at this many views, scaled from the measured one


def _metrics(model, split: CachedSplit, siblings: dict[str, set[str]] | None = None) -> dict:
    """Headline metrics of ``split``; with ``siblings`` also ``up_to_siblings``: top-1 where
    taking a class for its colour-only sibling counts as right, what a grayscale photo can tell
    at best if luminance does not separate the pair."""
    logits, _ = logits_from_activations(model, split.activations)
    metrics = headline_metrics(split.targets.numpy(), torch.softmax(logits, dim=1).numpy(),
                               len(model.classes))
    if siblings is not None:
        pairs = zip(logits.argmax(1).tolist(), split.targets.tolist(), strict=True)
        right = [p == t or model.classes[p] in siblings.get(model.classes[t], ())
                 for p, t in pairs]
        metrics["up_to_siblings"] = sum(right) / max(len(right), 1)
    return metrics


def _grayscale_test(model, splits: pd.DataFrame, params: Params) -> CachedSplit:
    """The test photos as a night-mode camera gives them, as the evaluation's field case."""
    test = splits[splits["split"] == "test"]
    index = {c: i for i, c in enumerate(model.classes)}
    return field_case_activations(model, [params.paths.raw_dir / p for p in test["path"]],
                                  [index[c] for c in test["label"]], "grayscale", params)


def _luminance(color: tuple[int, int, int]) -> int:
    return round(0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2])  # ITU-R 601, as PIL's L


COLOURED_PARTS = {"led": LED_COLORS, "plate": PLATE_COLORS, "accent": ACCENTS}


def colour_only_siblings(params: Params) -> list[tuple[str, str, dict]]:
    """Pairs of demo classes of one family that differ in nothing but the colours of LED, plate
    or accent: what a grayscale photo leaves of them is the luminance of those parts, or the
    part's absence ("none": no LED, no accent stripe)."""
    known, _ = build_catalog(params.demo.n_classes, params.demo.unknown_brands)
    visible = [f.name for f in dataclasses.fields(MeterSpec) if f.name not in ("name", "model")]
    pairs = []
    for a, b in itertools.combinations(known, 2):
        differ = [f for f in visible if getattr(a, f) != getattr(b, f)]
        if differ and set(differ) <= set(COLOURED_PARTS):  # so also one family, one casing
            pairs.append((a.name, b.name, {
                f: tuple("none" if v == "none" else _luminance(COLOURED_PARTS[f][v])
                         for v in (getattr(a, f), getattr(b, f))) for f in differ}))
    return pairs


def sibling_map(params: Params) -> dict[str, set[str]]:
    siblings: dict[str, set[str]] = {}
    for a, b, _ in colour_only_siblings(params):
        siblings.setdefault(a, set()).add(b)
        siblings.setdefault(b, set()).add(a)
    return siblings


def _print_colour_only_siblings(params: Params, splits: pd.DataFrame) -> None:
    pairs = colour_only_siblings(params)
    classes = {name for a, b, _ in pairs for name in (a, b)}
    test = splits[splits["split"] == "test"]
    print(f"{len(pairs)} sibling pairs differ only in colour; their classes hold "
          f"{test['label'].isin(classes).sum()} of {len(test)} test photos. Luminance of the "
          "differing parts (0-255):")
    for a, b, luminance in pairs:
        print(f"  {a} / {b}: " + ", ".join(f"{part} {x} vs {y}"
                                           for part, (x, y) in luminance.items()))


def _subset(cached: dict[str, CachedSplit], views: int | None, n_train: int
            ) -> dict[str, CachedSplit]:
    train = cached["train_views"]
    rows = len(train.targets) if views is None else views * n_train
    return {**cached, "train_views": CachedSplit(train.activations[:rows], train.targets[:rows],
                                                 train.paths[:rows])}


def run() -> dict:
    params = load_params()
    splits = read_splits(params.paths.splits)
    classes = sorted(splits["label"].unique())
    n_train = int((splits["split"] == "train").sum())
    n_eval = len(splits)
    variants = _chosen(VARIANTS, "DEMO_BUDGET_VARIANTS")
    cached_views = max(views or params.train.feature_views for views, _ in variants.values())
    print(f"demo split: {n_train} train photos, {n_eval - n_train} val + test; each setting "
          f"cached at {cached_views} views")
    results: dict[str, Outcome] = {}
    siblings = sibling_map(params)
    for setting_name, setting in _chosen(SETTINGS, "DEMO_BUDGET_SETTINGS").items():
        augment = params.train.augment.model_copy(update=setting.get("augment", {}))
        cfg = params.train.model_copy(update={
            "min_views_per_class": 0, **setting, "feature_views": cached_views,
            "augment": augment})
        torch.manual_seed(cfg.seed)
        model = build_model(classes, cfg)
        start = time.perf_counter()
        cached = cache_splits(model, splits, params.paths.raw_dir, cfg,
                              params.validate_.max_pixels, torch.device("cpu"))
        cache_s = time.perf_counter() - start
        gray = _grayscale_test(model, splits, params)
        for name, (views, phase2) in variants.items():
            train_views = _subset(cached, views, n_train)
            variant_cfg = cfg.model_copy(update={
                "feature_views": views or cached_views,
                "phase2": cfg.phase2.model_copy(update=phase2)})
            torch.manual_seed(cfg.seed)
            fresh = build_model(classes, variant_cfg)
            timings: dict[str, float] = {}
            result = fit_on_cache(fresh, train_views, variant_cfg,
                                  torch.ones(len(classes)), [], timings)
            test = _metrics(result.model, cached["test"])
            grayscale = _metrics(result.model, gray, siblings)
            outcome = Outcome(
                _metrics(result.model, cached["val"])["accuracy"], test["accuracy"],
                test["macro_recall"], grayscale["accuracy"], grayscale["up_to_siblings"],
                timings["phase1_head_s"], timings["phase2_s"],
                cache_s * (len(train_views["train_views"].targets) + n_eval)
                / (len(cached["train_views"].targets) + n_eval))
            results[f"{setting_name}, {name}"] = outcome
            print(f"  {setting_name}, {name}: val {outcome.val_accuracy:.1%} | test top-1 "
                  f"{outcome.test_accuracy:.1%}, macro recall {outcome.macro_recall:.1%}, "
                  f"grayscale {outcome.grayscale_accuracy:.1%} (up to colour-only siblings "
                  f"{outcome.grayscale_up_to_siblings:.1%}) | cache ~{outcome.cache_s:.0f} s, "
                  f"phase 1 {outcome.phase1_s:.0f} s (embedding {timings['phase1_embed_s']:.0f} s)"
                  f", phase 2 {outcome.phase2_s:.0f} s", flush=True)
    _print_colour_only_siblings(params, splits)
    # The most accurate on validation; of equals, the quickest.
    best = max(results, key=lambda k: (results[k].val_accuracy, -results[k].phase2_s))
    print(f"chosen on validation accuracy (then time): {best}")
    return {k: vars(v) for k, v in results.items()}
