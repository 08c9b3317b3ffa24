"""A small collection, as users start with: the shop-photo collection of issue 12 had 8 brands,
179 training and 49 test photos. Here the demo is cut to 8 of its classes (drawn per seed, so
siblings come and go), 22 training and 6 test photos each, for several seeds. Each run trains
the two-phase model as ``meterid train`` does (no validation split: with 22 photos a class the
adaptive split has none either) and is scored on its own test photos, which it never saw.

``SMALL_DATA_VARIANTS`` (comma-separated names of ``VARIANTS``) picks the settings compared;
the default runs all of them. Target: >= 96% top-1, the best a published transfer-learning
baseline reached on a collection of this size (BatSort, ResNet-50V2). Needs the demo photos
(``make demo``).
"""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import torch

from benchmarks.model_throughput import images_per_second
from meterid.config import TrainConfig, load_params
from meterid.data.split import read_splits
from meterid.evaluation.metrics import headline_metrics
from meterid.model.backbones import build_backbone
from meterid.training.trainer import logits_from_activations, train_two_phase

CLASSES, TRAIN_PER_CLASS, TEST_PER_CLASS = 8, 22, 6
SEEDS = (0, 1, 2)
TARGET = 0.96
VARIANTS: dict[str, dict] = {
    "defaults": {},
    "last_block": {"unfreeze": "last_block"},
    # Larger pretrained backbones from the same offline wheels, at the same input size
    "efficientnet_lite1": {"backbone": "efficientnet_lite1"},
    "efficientnet_lite2": {"backbone": "efficientnet_lite2"},
}
SPEED_BATCH, SPEED_ROUNDS = 32, 5


def small_collection(splits: pd.DataFrame, seed: int) -> pd.DataFrame:
    """8 classes with enough photos, 22 train and 6 test photos each, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    counts = splits["label"].value_counts()
    eligible = sorted(counts[counts >= TRAIN_PER_CLASS + TEST_PER_CLASS].index)
    chosen = rng.choice(eligible, size=CLASSES, replace=False)
    rows = []
    for label in sorted(chosen):
        photos = splits.loc[splits["label"] == label, "path"].to_numpy()
        photos = rng.permutation(photos)[:TRAIN_PER_CLASS + TEST_PER_CLASS]
        rows += [{"path": p, "label": label,
                  "split": "train" if i < TRAIN_PER_CLASS else "test"}
                 for i, p in enumerate(photos)]
    return pd.DataFrame(rows)


def _one_run(collection: pd.DataFrame, cfg: TrainConfig, params) -> dict:
    start = time.perf_counter()
    result = train_two_phase(collection, params.paths.raw_dir, cfg, params.validate_.max_pixels)
    test = result.cached["test"]
    logits, _ = logits_from_activations(result.model, test.activations)
    metrics = headline_metrics(test.targets.numpy(), torch.softmax(logits, dim=1).numpy(),
                               len(result.model.classes))
    return {"accuracy": metrics["accuracy"], "macro_recall": metrics["macro_recall"],
            "seconds": time.perf_counter() - start}


def inference_rate(cfg: TrainConfig) -> float:
    """Images a second through the whole backbone (PyTorch, channels_last, batch 32, the best
    of ``SPEED_ROUNDS`` batches): the price of a variant at scoring time, compared side by side
    within one run."""
    backbone = build_backbone(cfg.backbone, "none", cfg.unfreeze)
    model = torch.nn.Sequential(backbone.stem, backbone.last_block).eval()
    model = model.to(memory_format=torch.channels_last)
    batch = torch.randn(SPEED_BATCH, 3, cfg.image_size, cfg.image_size).contiguous(
        memory_format=torch.channels_last)
    return images_per_second(model, batch, rounds=SPEED_ROUNDS)


def run() -> dict:
    params = load_params()
    splits = read_splits(params.paths.splits)
    names = [n for n in os.environ.get("SMALL_DATA_VARIANTS", ",".join(VARIANTS)).split(",") if n]
    print(f"{CLASSES} classes x ({TRAIN_PER_CLASS} train + {TEST_PER_CLASS} test) photos, seeds "
          f"{SEEDS}; target >= {TARGET:.0%} top-1")
    out = {}
    rates = {name: inference_rate(params.train.model_copy(update=VARIANTS[name]))
             for name in names}
    for name in names:
        print(f"{name}: backbone inference {rates[name]:.1f} img/s "
              f"({rates[name] / rates[names[0]]:.2f}x {names[0]})")
    for name in names:
        runs = []
        for seed in SEEDS:
            cfg = params.train.model_copy(update={**VARIANTS[name], "seed": seed})
            torch.manual_seed(seed)
            runs.append(_one_run(small_collection(splits, seed), cfg, params))
            print(f"  {name}, seed {seed}: top-1 {runs[-1]['accuracy']:.1%}, macro recall "
                  f"{runs[-1]['macro_recall']:.1%} ({runs[-1]['seconds']:.0f} s)", flush=True)
        accuracy = np.array([r["accuracy"] for r in runs])
        print(f"{name}: top-1 {accuracy.mean():.1%} mean, {accuracy.min():.1%} worst seed; "
              f"macro recall {np.mean([r['macro_recall'] for r in runs]):.1%}; "
              f"{'meets' if accuracy.mean() >= TARGET else 'misses'} the {TARGET:.0%} target")
        out[name] = runs
    return out
