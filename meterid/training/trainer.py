"""Two-phase training of the meter classifier.

Phase 1 trains the head on frozen-backbone features; phase 2 unfreezes the last block at a lower
learning rate. Both run on cached stem activations (see ``activations``), so neither recomputes
the frozen part of the backbone per epoch. With ``weights: none`` phase 1 trains the whole network
on images instead (a frozen random backbone is meaningless), then the cache is built from it.
A grayscale head may follow (``fit_grayscale_head``): a second head, for photos without colour,
on the trained model's own embeddings of grayscale views.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

from meterid.config import PhaseConfig, TrainConfig
from meterid.inference.quality import GRAYSCALE_MAX_CHROMA, image_chroma
from meterid.model.backbones import build_backbone
from meterid.model.classifier import MeterClassifier, Preprocessing, set_phase
from meterid.model.presets import eval_preset, train_preset
from meterid.photos.images import load_rgb
from meterid.training.activations import (
    BatchRun,
    ViewDataset,
    ViewItem,
    onnx_twin,
    stem_activations,
    worker_context,
)
from meterid.training.calibration import MIN_CALIBRATION_PHOTOS, Calibration, calibrate
from meterid.training.cross_fit import OutOfFoldLogits, fold_count, out_of_fold_logits

log = logging.getLogger(__name__)


@dataclass
class CachedSplit:
    """Stem activations of one split (one row per image and view) with their targets; for
    photos cached whole (``cache_images``), which of them have no colour."""

    activations: torch.Tensor
    targets: torch.Tensor
    paths: list[str] = field(default_factory=list)
    grayscale: np.ndarray | None = None
    views: np.ndarray | None = None  # each row's view number (cache_splits)

    def rows(self, keep: np.ndarray) -> CachedSplit:
        pick = torch.from_numpy(np.flatnonzero(keep))
        return CachedSplit(self.activations[pick], self.targets[pick],
                           [self.paths[i] for i in pick.tolist()],
                           None if self.grayscale is None else self.grayscale[keep],
                           None if self.views is None else self.views[keep])


MAX_VIEWS = 32  # augmented views of one image, whatever its class's size
MAX_BUDGET_VIEWS = 16  # views a photo that the view budget may give a small collection
GRAYSCALE_HEAD_PHASE = 3  # the grayscale head's epochs in the training history
ONNX_MIN_ROWS = 1024  # fewer activations: the export (1-3 s) costs more than ONNX Runtime saves


@dataclass
class TrainResult:
    model: MeterClassifier
    history: list[dict]
    # train_views (augmented, trained on), train/val/test (eval preset): stem activations
    cached: dict[str, CachedSplit]
    # Embeddings of train/val/test from the backbone before phase 2 changed it (for CV)
    frozen_embeddings: dict[str, torch.Tensor]
    timings: dict[str, float]
    calibration: Calibration
    grayscale_calibration: Calibration | None = None  # the grayscale head's, when trained
    out_of_fold: OutOfFoldLogits | None = None  # when validation is too small to calibrate on


def choose_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def class_weights(targets: torch.Tensor, n_classes: int, power: float) -> torch.Tensor:
    """(n_max / n_class) ** power: rare classes count more without dominating."""
    counts = torch.bincount(targets, minlength=n_classes).clamp(min=1).float()
    return (counts.max() / counts) ** power


def _view_items(splits: pd.DataFrame, data_dir: Path, split: str, views: range,
                index: dict[str, int], views_by_label: dict[str, int] | None = None,
                grayscale: bool = False) -> list[ViewItem]:
    """View-major order; ``views_by_label`` caps a class's views below ``views.stop - 1``."""
    rows = splits[splits["split"] == split]
    pairs = list(zip(rows["path"], rows["label"], strict=True))
    return [ViewItem(data_dir / path, index[label], view, grayscale) for view in views
            for path, label in pairs if views_by_label is None or view <= views_by_label[label]]


def views_per_photo(train_photos: int, cfg: TrainConfig) -> int:
    """``feature_views``, raised for a small collection so that it trains on about
    ``view_budget`` views in all (at most ``MAX_BUDGET_VIEWS`` a photo): a small collection
    then gets from augmentation the variety a large one has from its photos, for no more
    phase-2 time than the large one. The demo (1,407 training photos) keeps 4 views; the
    grocery collection (761) gets 7."""
    if not cfg.view_budget or not train_photos:
        return cfg.feature_views
    return max(cfg.feature_views, min(MAX_BUDGET_VIEWS, cfg.view_budget // train_photos))


def augmented_views(splits: pd.DataFrame, cfg: TrainConfig) -> dict[str, int]:
    """Augmented views per train image of each class: ``views_per_photo``, raised for rare
    classes so that each class has at least ``min_views_per_class`` of them (at most MAX_VIEWS
    per image). The weighted sampler balances how often classes are drawn; these extra views
    give a rare class's draws variety instead of the same few crops again and again."""
    counts = splits.loc[splits["split"] == "train", "label"].value_counts()
    per_photo = views_per_photo(int(counts.sum()), cfg)
    return {label: max(per_photo, min(MAX_VIEWS, math.ceil(cfg.min_views_per_class / n)))
            for label, n in counts.items()}


def grayscale_views(splits: pd.DataFrame, cfg: TrainConfig) -> dict[str, int]:
    """Grayscale views per train image of each class: the colour recipe at
    ``grayscale_head_views`` a photo (rare classes more, no view budget)."""
    return augmented_views(splits, cfg.model_copy(
        update={"feature_views": cfg.grayscale_head_views, "view_budget": 0}))


def grayscale_view_items(splits: pd.DataFrame, data_dir: Path, index: dict[str, int],
                         cfg: TrainConfig) -> list[ViewItem]:
    """Grayscale augmented views of the training photos (``grayscale_views``), each the same
    crop as the colour view of its number."""
    by_label = grayscale_views(splits, cfg)
    return _view_items(splits, data_dir, "train", range(1, max(by_label.values()) + 1), index,
                       by_label, grayscale=True)


def cache_splits(
    model: MeterClassifier, splits: pd.DataFrame, data_dir: Path, cfg: TrainConfig,
    max_pixels: int, device: torch.device,
) -> dict[str, CachedSplit]:
    """The frozen stem over the train views and the train/val/test whole photos: one pass, or
    two when the model reads whole photos at another size than it trains on (eval_image_size)."""
    index = {c: i for i, c in enumerate(model.classes)}
    pre = model.preprocessing
    views = augmented_views(splits, cfg)
    parts = {
        "train_views": _view_items(splits, data_dir, "train", range(1, max(views.values()) + 1),
                                   index, views),
        "train": _view_items(splits, data_dir, "train", range(0, 1), index),
        "val": _view_items(splits, data_dir, "val", range(0, 1), index),
        "test": _view_items(splits, data_dir, "test", range(0, 1), index),
    }
    if cfg.grayscale_head_views:
        parts["gray_views"] = grayscale_view_items(splits, data_dir, index, cfg)
        parts["gray_val"] = _view_items(splits, data_dir, "val", range(0, 1), index, None, True)
    if cfg.image_size == pre.image_size:  # one pass: the views and the photos are one size
        return _stem_pass(model, parts, data_dir, cfg, max_pixels, device, cfg.image_size,
                          "backbone features")
    view_parts = {name: part for name, part in parts.items() if name in VIEW_PARTS}
    photo_parts = {name: part for name, part in parts.items() if name not in VIEW_PARTS}
    cached = {**_stem_pass(model, view_parts, data_dir, cfg, max_pixels, device,
                           cfg.image_size, f"training views ({cfg.image_size} px)"),
              **_stem_pass(model, photo_parts, data_dir, cfg, max_pixels, device,
                           pre.image_size, f"whole photos ({pre.image_size} px)")}
    return {name: cached[name] for name in parts}


# The augmented parts of a cache pass, read at train.image_size; the others are whole photos,
# read as evaluation and scoring read them (the model's preprocessing).
VIEW_PARTS = ("train_views", "gray_views")


def view_dataset(model: MeterClassifier, items: list[ViewItem], cfg: TrainConfig,
                 max_pixels: int, decode_side: int | None = None) -> ViewDataset:
    """Training's photos as the stem reads them: augmented views at ``cfg.image_size``, whole
    photos (view 0) at the model's input size; each decoded (JPEG draft) to at least
    ``decode_side`` (default: the training size)."""
    pre = model.preprocessing
    return ViewDataset(items, eval_preset(pre.image_size, pre.mean, pre.std),
                       train_preset(cfg.image_size, pre.mean, pre.std, cfg.augment), cfg.seed,
                       max_pixels, decode_side or cfg.image_size)


def _stem_pass(model: MeterClassifier, parts: dict[str, list[ViewItem]], data_dir: Path,
               cfg: TrainConfig, max_pixels: int, device: torch.device, decode_side: int,
               desc: str) -> dict[str, CachedSplit]:
    """The frozen stem's activations of every item of ``parts``, in one pass: augmented views
    at ``cfg.image_size``, whole photos (view 0) at the model's input size, each photo decoded
    (JPEG draft) to at least ``decode_side``."""
    items = [item for part in parts.values() for item in part]
    dataset = view_dataset(model, items, cfg, max_pixels, decode_side)
    activations = stem_activations(model.stem, dataset, cfg.batch_size, cfg.workers, device,
                                   cfg.channels_last, cfg.bf16, desc=desc,
                                   engine=cfg.cache_engine)
    cached, start = {}, 0
    for name, part in parts.items():
        stop = start + len(part)
        cached[name] = CachedSplit(activations[start:stop],
                                   torch.tensor([i.target for i in part], dtype=torch.long),
                                   [i.path.relative_to(data_dir).as_posix() for i in part],
                                   views=np.array([i.view for i in part]))
        start = stop
    return cached


def cut_views(cached: dict[str, CachedSplit], splits: pd.DataFrame, classes: list[str],
              cfg: TrainConfig) -> dict[str, CachedSplit]:
    """What ``cache_splits`` builds for ``cfg``, cut from a cache built with at least as many
    views a photo and the same seed and augmentation: a view depends only on (seed, view,
    photo), so the rows are the same, in the same order. Lets a benchmark compare view counts
    and fitting choices on one cache pass."""
    def keep(part: CachedSplit, caps: dict[str, int]) -> np.ndarray:
        labels = np.array(classes)[part.targets.numpy()]
        return part.views <= np.array([caps[label] for label in labels])

    out = {name: part for name, part in cached.items()
           if name not in ("train_views", "gray_views", "gray_val")}
    out["train_views"] = cached["train_views"].rows(
        keep(cached["train_views"], augmented_views(splits, cfg)))
    if cfg.grayscale_head_views:
        out["gray_views"] = cached["gray_views"].rows(
            keep(cached["gray_views"], grayscale_views(splits, cfg)))
        out["gray_val"] = cached["gray_val"]
    return out


# What a cache pass depends on: configs equal in these can share one.
CACHE_KEYS = ("backbone", "weights", "unfreeze", "image_size", "eval_image_size", "augment")


def covering_cache_config(configs: list[TrainConfig], splits: pd.DataFrame) -> TrainConfig:
    """The config of one cache pass that holds the rows of every config of ``configs`` (for
    ``cut_views``): the configs' own when they give every class the same views (the pass is then
    the one training makes), else each photo gets as many views as the config that gives any
    class the most, colour and grayscale."""
    first = configs[0]
    for cfg in configs[1:]:
        different = [key for key in CACHE_KEYS if getattr(cfg, key) != getattr(first, key)]
        if different:
            raise ValueError(f"configs differ in {different}: they cannot share a cache pass")
    if all(_views_per_class(cfg, splits) == _views_per_class(first, splits) for cfg in configs):
        return first

    def colour(cfg: TrainConfig) -> int:
        return max(augmented_views(splits, cfg).values())

    def gray(cfg: TrainConfig) -> int:
        return max(grayscale_views(splits, cfg).values()) if cfg.grayscale_head_views else 0

    return first.model_copy(update={
        "feature_views": max(colour(c) for c in configs), "view_budget": 0,
        "min_views_per_class": 0,
        "grayscale_head_views": max(gray(c) for c in configs)})


def _views_per_class(cfg: TrainConfig, splits: pd.DataFrame) -> tuple[dict, dict]:
    return (augmented_views(splits, cfg),
            grayscale_views(splits, cfg) if cfg.grayscale_head_views else {})


def loss_weights_for(train_targets: torch.Tensor, n_classes: int, cfg: TrainConfig
                     ) -> torch.Tensor:
    """The cross-entropy's class weights: ``class_weights`` under that imbalance setting, else
    ones (the weighted sampler balances classes instead)."""
    if cfg.imbalance == "class_weights":
        return class_weights(train_targets, n_classes, cfg.class_weight_power)
    return torch.ones(n_classes)


def _order(targets: torch.Tensor, cfg: TrainConfig, n_classes: int) -> dict:
    """DataLoader ordering: class-balanced sampling, or a seeded shuffle."""
    generator = torch.Generator().manual_seed(cfg.seed)
    if cfg.imbalance == "weighted_sampler":
        weights = class_weights(targets, n_classes, 1.0)[targets]
        return {"sampler": WeightedRandomSampler(weights.tolist(), len(weights),
                                                 generator=generator)}
    return {"shuffle": True, "generator": generator}


def _loader(inputs: torch.Tensor, targets: torch.Tensor, cfg: TrainConfig,
            n_classes: int) -> DataLoader:
    return DataLoader(TensorDataset(inputs, targets), batch_size=cfg.batch_size,
                      **_order(targets, cfg, n_classes))


@torch.no_grad()
def _batched(module: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Eval-mode outputs. 4-D activations go in channels_last, 1.5x faster for the last stage's
    depthwise convolutions on this CPU; from ``ONNX_MIN_ROWS`` of them on a CPU, through ONNX
    Runtime, 2x faster again with its export (the same arithmetic, to float rounding, checked
    on the first batch; make bench: model_throughput): phase 1's and the grayscale head's
    embeddings of every training view."""
    module.eval()
    device = next(module.parameters()).device
    layout = torch.channels_last if inputs.dim() == 4 else torch.contiguous_format
    chunks = inputs.split(batch_size)

    def in_torch(chunk: torch.Tensor) -> torch.Tensor:
        return module(chunk.to(device).contiguous(memory_format=layout)).cpu()

    run: BatchRun = in_torch
    if inputs.dim() == 4 and device.type == "cpu" and len(inputs) >= ONNX_MIN_ROWS:
        run = onnx_twin(module, chunks[0], in_torch, "an embedding pass")
    outputs = [run(chunk) for chunk in chunks]
    return torch.cat(outputs) if outputs else torch.empty(0)


def logits_from_activations(model: MeterClassifier, activations: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, embeddings) of cached stem activations, in eval mode."""
    if len(activations) == 0:
        return torch.empty(0, len(model.classes)), torch.empty(0, model.embedding_dim)
    embeddings = _batched(model.last_block, activations)
    return _batched(model.head, embeddings), embeddings


@dataclass
class _Fit:
    """One training phase: ``module`` maps cached ``inputs`` to logits."""

    phase: int
    module: nn.Module
    inputs: torch.Tensor
    targets: torch.Tensor
    val_inputs: torch.Tensor
    val_targets: torch.Tensor


def _averaged(module: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of ``module``'s weights, or None at 0. Buffers (batch-norm
    statistics, integer step counts) are copied, not averaged: see ``_with_live_buffers``."""
    if not decay:
        return None
    return AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(decay))


@torch.no_grad()
def _with_live_buffers(average: AveragedModel, live: nn.Module) -> nn.Module:
    for kept, current in zip(average.module.buffers(), live.buffers(), strict=True):
        kept.copy_(current)
    return average.module


def _run_phase(fit: _Fit, phase_cfg: PhaseConfig, cfg: TrainConfig, n_classes: int,
               loss_weights: torch.Tensor, history: list[dict]) -> None:
    """Adam on the trainable parameters; early stopping on val loss (train loss without val).

    The best epoch's weights are restored at the end (the last epoch's without
    ``early_stopping``); with ``ema_decay`` those are the moving average's, which validation
    judges too. Phase 2 (4-D activations in) runs channels_last
    when ``train.channels_last``: the same float32 arithmetic, 1.2-2x faster per step for
    EfficientNet-Lite0's last stage on this CPU (bf16 autocast was no faster)."""
    layout = (torch.channels_last if cfg.channels_last and fit.inputs.dim() == 4
              else torch.contiguous_format)
    fit.module.to(memory_format=layout)
    device = next(fit.module.parameters()).device
    optimizer = torch.optim.Adam([p for p in fit.module.parameters() if p.requires_grad],
                                 lr=phase_cfg.lr)
    loader = _loader(fit.inputs, fit.targets, cfg, n_classes)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(1, phase_cfg.epochs * len(loader)))
        if phase_cfg.lr_schedule == "cosine" else None)
    weights = loss_weights.to(device)
    average = _averaged(fit.module, phase_cfg.ema_decay)
    judged = fit.module if average is None else _with_live_buffers(average, fit.module)
    has_val = len(fit.val_targets) > 0
    best, best_state, stale = float("inf"), copy.deepcopy(judged.state_dict()), 0
    for epoch in range(1, phase_cfg.epochs + 1):
        fit.module.train()
        if cfg.freeze_batchnorm:
            # Keep pretrained normalisation statistics: batches of cached activations are
            # small and class-skewed, and re-estimating them hurt validation loss.
            for module in fit.module.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        total = 0.0
        for inputs, targets in loader:
            inputs = inputs.to(device).contiguous(memory_format=layout)
            loss = F.cross_entropy(fit.module(inputs), targets.to(device), weight=weights,
                                   label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            if average is not None:
                average.update_parameters(fit.module)
            total += loss.item() * len(targets)
        train_loss = total / len(fit.targets)
        if average is not None:
            _with_live_buffers(average, fit.module)
        val_loss = (float(F.cross_entropy(_batched(judged, fit.val_inputs), fit.val_targets,
                                          weight=loss_weights)) if has_val else float("nan"))
        history.append({"phase": fit.phase, "epoch": epoch, "train_loss": train_loss,
                        "val_loss": val_loss, "lr": optimizer.param_groups[0]["lr"]})
        log.info("phase %d epoch %d/%d: train loss %.4f, val loss %.4f", fit.phase, epoch,
                 phase_cfg.epochs, train_loss, val_loss)
        monitored = val_loss if has_val else train_loss
        if not phase_cfg.early_stopping:
            best_state = judged.state_dict()
        elif monitored < best - 1e-4:
            best, best_state, stale = monitored, copy.deepcopy(judged.state_dict()), 0
        else:
            stale += 1
            if stale >= phase_cfg.patience:
                log.info("phase %d: early stop after epoch %d (best %s loss %.4f)", fit.phase,
                         epoch, "val" if has_val else "train", best)
                break
    fit.module.load_state_dict(best_state)
    fit.module.to(memory_format=torch.contiguous_format)  # exports and checkpoints as before


def _train_whole_network(model: MeterClassifier, splits: pd.DataFrame, data_dir: Path,
                         cfg: TrainConfig, max_pixels: int, loss_weights: torch.Tensor,
                         history: list[dict]) -> None:
    """Phase 1 without pretrained weights: every layer learns, on augmented images (a new,
    seeded augmentation of every image each epoch)."""
    index = {c: i for i, c in enumerate(model.classes)}
    device = next(model.parameters()).device
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad],
                                 lr=cfg.phase1.lr)
    for epoch in range(1, cfg.phase1.epochs + 1):
        items = _view_items(splits, data_dir, "train", range(epoch, epoch + 1), index)
        dataset = view_dataset(model, items, cfg, max_pixels)
        targets = torch.tensor([item.target for item in items])
        loader = DataLoader(dataset, batch_size=cfg.batch_size, num_workers=cfg.workers,
                            multiprocessing_context=worker_context() if cfg.workers else None,
                            **_order(targets, cfg, len(model.classes)))
        model.train()
        total, seen = 0.0, 0
        for images, batch_targets in loader:
            loss = F.cross_entropy(model(images.to(device)), batch_targets.to(device),
                                   weight=loss_weights.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, seen = total + loss.item() * len(batch_targets), seen + len(batch_targets)
        history.append({"phase": 1, "epoch": epoch, "train_loss": total / seen,
                        "val_loss": float("nan")})
        log.info("phase 1 (whole network) epoch %d/%d: train loss %.4f", epoch,
                 cfg.phase1.epochs, total / seen)


def build_model(classes: list[str], cfg: TrainConfig) -> MeterClassifier:
    backbone = build_backbone(cfg.backbone, cfg.weights, cfg.unfreeze)
    model = MeterClassifier(backbone, classes)
    model.preprocessing = Preprocessing(cfg.photo_size, backbone.mean, backbone.std)
    return model


def train_two_phase(
    splits: pd.DataFrame, data_dir: Path, cfg: TrainConfig, max_pixels: int
) -> TrainResult:
    """Build the model, (phase 1 on images when not pretrained), cache, then fit on the cache."""
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    classes = sorted(splits["label"].unique())
    model = build_model(classes, cfg).to(choose_device(cfg.device))
    train_targets = torch.tensor([classes.index(c) for c in splits.loc[
        splits["split"] == "train", "label"]])
    loss_weights = loss_weights_for(train_targets, len(classes), cfg)
    history: list[dict] = []
    timings: dict[str, float] = {}
    if cfg.weights == "none":
        log.info("weights=none: phase 1 trains the whole network (a frozen random backbone "
                 "would be meaningless)")
        start = time.perf_counter()
        set_phase(model, 1, pretrained=False)
        _train_whole_network(model, splits, data_dir, cfg, max_pixels, loss_weights, history)
        timings["phase1_whole_network_s"] = time.perf_counter() - start
    start = time.perf_counter()
    data = cache_splits(model, splits, data_dir, cfg, max_pixels, next(model.parameters()).device)
    timings["feature_cache_s"] = time.perf_counter() - start
    return fit_on_cache(model, data, cfg, loss_weights, history, timings)


def fit_on_cache(
    model: MeterClassifier, data: dict[str, CachedSplit], cfg: TrainConfig,
    loss_weights: torch.Tensor, history: list[dict], timings: dict[str, float],
) -> TrainResult:
    """Phase 1 (head, when pretrained) and phase 2 (last block + head) on cached activations,
    then the temperature: on validation logits, or on out-of-fold logits of the training photos
    when validation is too small (kept at 1 when it would not help)."""
    # Phase 1 changes the head only: these are the pretrained backbone's embeddings.
    frozen = {name: logits_from_activations(model, data[name].activations)[1]
              for name in ("train", "val", "test")}
    # The folds start from the model as it is now: copied only when they will run.
    untrained = copy.deepcopy(model) if _wants_out_of_fold(data, cfg) else None
    _fit_phases(model, data["train_views"], data["val"], cfg, loss_weights, history, timings)
    out_of_fold = (None if untrained is None
                   else _out_of_fold(untrained, data, cfg, loss_weights, timings))
    if out_of_fold is None:
        val_logits, _ = logits_from_activations(model, data["val"].activations)
        calibration = calibrate(val_logits, data["val"].targets, seed=cfg.seed)
    else:
        calibration = calibrate(out_of_fold.logits, out_of_fold.targets, seed=cfg.seed,
                                fitted_on="out-of-fold")
    model.temperature.fill_(calibration.temperature)
    log.info("temperature %.3f (%s): %s", calibration.temperature, calibration.method,
             calibration.reason)
    gray_calibration = None
    if "gray_views" in data:
        start = time.perf_counter()
        gray_calibration = fit_grayscale_head(model, data, cfg, loss_weights, history)
        timings["grayscale_head_s"] = time.perf_counter() - start
    for parameter in model.parameters():
        parameter.requires_grad = False
    return TrainResult(model.eval(), history, data, frozen, timings, calibration,
                       gray_calibration, out_of_fold)


def _fit_phases(model: MeterClassifier, train_views: CachedSplit, val: CachedSplit,
                cfg: TrainConfig, loss_weights: torch.Tensor, history: list[dict],
                timings: dict[str, float]) -> None:
    """Phase 1 (the head, when pretrained) then phase 2 (the unfrozen part and the head)."""
    pretrained = cfg.weights != "none"
    n_classes = len(model.classes)
    if pretrained:
        start = time.perf_counter()
        log.info("phase 1: head only, backbone frozen, on cached features")
        set_phase(model, 1, pretrained=True)
        # The last block is frozen too: embed once, then the head trains in seconds.
        _, train_embeddings = logits_from_activations(model, train_views.activations)
        _, val_embeddings = logits_from_activations(model, val.activations)
        timings["phase1_embed_s"] = time.perf_counter() - start
        _run_phase(_Fit(1, model.head, train_embeddings, train_views.targets, val_embeddings,
                        val.targets), cfg.phase1, cfg, n_classes, loss_weights, history)
        timings["phase1_head_s"] = time.perf_counter() - start
    start = time.perf_counter()
    log.info("phase 2: %s unfrozen, lr %.1e", cfg.unfreeze.replace("_", " "), cfg.phase2.lr)
    set_phase(model, 2, pretrained)
    _run_phase(_Fit(2, nn.Sequential(model.last_block, model.head), train_views.activations,
                    train_views.targets, val.activations, val.targets),
               cfg.phase2, cfg, n_classes, loss_weights, history)
    timings["phase2_s"] = time.perf_counter() - start


def _wants_out_of_fold(data: dict[str, CachedSplit], cfg: TrainConfig) -> bool:
    """Validation has fewer photos than a temperature needs, and ``out_of_fold_folds`` is on."""
    return bool(cfg.out_of_fold_folds) and len(data["val"].targets) < MIN_CALIBRATION_PHOTOS


def _out_of_fold(untrained: MeterClassifier, data: dict[str, CachedSplit], cfg: TrainConfig,
                 loss_weights: torch.Tensor, timings: dict[str, float]
                 ) -> OutOfFoldLogits | None:
    """Cross-fitted logits of the training photos (``_wants_out_of_fold``); None when the
    classes are too small for folds (and why, logged). The folds train without validation, as
    the final model would have without it."""
    photos = data["train"]
    folds, why = fold_count(photos.targets, cfg.out_of_fold_folds)
    log.info("%d validation photos (< %d): out-of-fold calibration, %s",
             len(data["val"].targets), MIN_CALIBRATION_PHOTOS, why)
    if not folds:
        return None
    no_val = data["val"].rows(np.zeros(len(data["val"].targets), dtype=bool))
    start = time.perf_counter()

    def fit(model: MeterClassifier, views: np.ndarray) -> None:
        _fit_phases(model, data["train_views"].rows(views), no_val, cfg, loss_weights, [], {})

    out_of_fold = out_of_fold_logits(
        untrained, photos.activations, photos.targets, photos.paths,
        data["train_views"].paths, folds, cfg.seed, fit,
        lambda model, activations: logits_from_activations(model, activations)[0])
    timings["out_of_fold_s"] = time.perf_counter() - start
    return out_of_fold


def fit_grayscale_head(model: MeterClassifier, data: dict[str, CachedSplit], cfg: TrainConfig,
                       loss_weights: torch.Tensor, history: list[dict]) -> Calibration:
    """A second head for photos without colour (night-mode and infrared cameras), read from the
    trained model's own embeddings of grayscale views; the colour head and backbone stay as
    they are. Phase 1's settings, from a copy of the colour head, early-stopped on grayscale
    copies of the validation photos. Its temperature, fitted on those copies, is folded into
    its weights, so the model's one temperature calibrates both heads."""
    embeddings = _batched(model.last_block, data["gray_views"].activations)
    val_embeddings = _batched(model.last_block, data["gray_val"].activations)
    head = model.with_grayscale_head()
    for parameter in head.parameters():
        parameter.requires_grad = True
    log.info("grayscale head on %d grayscale views", len(embeddings))
    _run_phase(_Fit(GRAYSCALE_HEAD_PHASE, head, embeddings, data["gray_views"].targets,
                    val_embeddings, data["gray_val"].targets),
               cfg.phase1, cfg, len(model.classes), loss_weights, history)
    calibration = calibrate(_batched(head, val_embeddings), data["gray_val"].targets,
                            seed=cfg.seed)
    with torch.no_grad():  # softmax(z / T_gray) == softmax(z * (T / T_gray) / T)
        for parameter in head[1].parameters():
            parameter.mul_(float(model.temperature) / calibration.temperature)
    log.info("grayscale head temperature %.3f (%s): %s", calibration.temperature,
             calibration.method, calibration.reason)
    return calibration


def cache_images(model: MeterClassifier, paths: list[Path], targets: list[int], cfg: TrainConfig,
                 max_pixels: int, root: Path, desc: str) -> CachedSplit:
    """Eval-preset stem activations of ``paths`` (stored relative to ``root``)."""
    pre = model.preprocessing
    dataset = ViewDataset([ViewItem(p, t, 0) for p, t in zip(paths, targets, strict=True)],
                          eval_preset(pre.image_size, pre.mean, pre.std), None, cfg.seed,
                          max_pixels, pre.image_size)
    device = next(model.parameters()).device
    activations = stem_activations(model.stem, dataset, cfg.batch_size, cfg.workers, device,
                                   cfg.channels_last, cfg.bf16, desc=desc,
                                   engine=cfg.cache_engine)
    colourless = [image_chroma(load_rgb(p, max_pixels, pre.image_size)) < GRAYSCALE_MAX_CHROMA
                  for p in paths]
    return CachedSplit(activations, torch.tensor(targets, dtype=torch.long),
                       [p.relative_to(root).as_posix() for p in paths],
                       np.array(colourless, dtype=bool))


def folder_images(folder: Path, skip: frozenset[str] = frozenset()) -> list[Path]:
    """The files under ``folder``, but hidden ones and those in its subfolders named in
    ``skip``."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and p.relative_to(folder).parts[0] not in skip)


def cache_folder(model: MeterClassifier, folder: Path, cfg: TrainConfig, max_pixels: int,
                 skip: frozenset[str] = frozenset()) -> CachedSplit:
    """Every image of ``folder_images`` (e.g. the held-out brands), with target -1."""
    paths = folder_images(folder, skip)
    return cache_images(model, paths, [-1] * len(paths), cfg, max_pixels, folder,
                        f"features of {folder}")
