"""The training pipeline on the demo data: accuracy and calibration targets, open-set AUROC,
training throughput, the feature-cache speed-up, and the wall time of the whole training flow.

Runs the real training flow once (as `make demo` does), then measures the phase-1 epoch cost
with cached features against recomputing the frozen backbone on a sample of images.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch

from meterid.config import load_params
from meterid.training.activations import ViewItem, stem_activations
from meterid.training.trainer import build_model, view_dataset

TARGETS = {  # metric: (target, higher is better)
    "accuracy": (0.97, True),
    "macro_recall": (0.95, True),
    "ece": (0.02, False),
    "selective_accuracy": (0.99, True),
    "coverage": (0.95, True),
    "unknown_auroc": (0.95, True),
    "unknown_flagged_share": (0.80, True),
    "unknown_flagged_share_report": (0.80, True),
    "known_flagged_share": (0.05, False),
}
SAMPLE = 64  # images for the cached-vs-uncached epoch measurement


def _uncached_epoch_seconds(n_train: int, sample_paths: list[Path]) -> float:
    """A phase-1 epoch without the cache: the frozen backbone runs on every augmented image."""
    params = load_params()
    cfg = params.train
    model = build_model(["a", "b"], cfg)
    dataset = view_dataset(model, [ViewItem(p, 0, 1) for p in sample_paths], cfg,
                           params.validate_.max_pixels)
    start = time.perf_counter()
    activations = stem_activations(model.stem, dataset, cfg.batch_size, cfg.workers,
                                   torch.device("cpu"), cfg.channels_last, cfg.bf16,
                                   desc="uncached sample", engine=cfg.cache_engine)
    with torch.no_grad():
        model.head(model.last_block(activations))
    return (time.perf_counter() - start) / len(sample_paths) * n_train


def run() -> dict:
    from meterid.flows.training import training

    params = load_params()
    start = time.perf_counter()
    outcome = training(params_file="params.yaml")
    wall = time.perf_counter() - start
    metrics = outcome["metrics"]
    timings = outcome["training"]["timings"]
    splits = pd.read_csv(params.paths.splits)
    train_paths = [params.paths.raw_dir / p for p in splits.loc[splits["split"] == "train", "path"]]
    n_views = len(train_paths) * params.train.feature_views
    phase1_epochs = outcome["training"]["epochs"]["phase1"]
    cached_epoch = timings.get("phase1_head_s", float("nan")) / max(phase1_epochs, 1)
    uncached_epoch = _uncached_epoch_seconds(n_views, train_paths[:SAMPLE])
    print(f"backbone {params.train.backbone} ({params.train.weights}), "
          f"{params.train.feature_views} augmented views, image size {params.train.image_size}")
    for key, (target, higher) in TARGETS.items():
        value = metrics[key]
        ok = value >= target if higher else value <= target
        print(f"  {key:20s} {value:.4f}  target {'>=' if higher else '<='} {target}  "
              f"{'PASS' if ok else 'MISS'}")
    print(f"  open-set rule {outcome['decision']['open_set']['score']}: flags "
          f"{metrics['unknown_flagged_share_report']:.1%} of report-brand photos (AUROC "
          f"{metrics['unknown_auroc_report']:.4f}), {metrics['known_flagged_share']:.1%} of "
          f"known test photos")
    print(f"  ECE before/after temperature scaling: {metrics['ece_uncalibrated']:.4f} / "
          f"{metrics['ece']:.4f} (T = {metrics['temperature']:.2f})")
    print(f"feature cache: {timings['feature_cache_s']:.0f} s for {n_views} augmented views "
          f"+ eval views ({n_views / timings['feature_cache_s']:.1f} img/s incl. decode)")
    print(f"phase-2 training on cached activations: {timings['phase2_s']:.0f} s")
    print(f"phase-1 epoch: cached {cached_epoch:.2f} s vs recomputing the backbone "
          f"{uncached_epoch:.0f} s ({uncached_epoch / cached_epoch:.0f}x)")
    print(f"whole training flow (data check, split, train, evaluate, register): {wall:.0f} s")
    return {"metrics": metrics, "wall_s": wall}
