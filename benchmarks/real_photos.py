"""Real photos are the judge: the product's own training and evaluation (``train_two_phase``,
then the sets and ``evaluate`` of ``meterid evaluate``) on a real collection, for each training
choice, over split and training seeds.

The collection is ``../shared/data/grocery`` (27 look-alike packaged-product classes photographed
in shops, MIT licence; ``REAL_PHOTOS_DIR`` names another with the same layout: ``raw/<class>/``,
``unseen/<class>/`` and a ``MANIFEST.csv`` with ``devset_path`` and ``upstream_split``). Two
kinds of collections come from it:

- ``upstream``: every photo, with the collection's own split (a CSV column, as a user keeps a
  fixed test set); shots of one shelf stay on one side. Training seeds vary.
- ``cut``: a user-sized cut per split seed: ``CUT_CLASSES`` classes, most with 20-40 training
  photos and ``CUT_RARE`` with 5-10, tested on up to ``CUT_TEST`` of their upstream test photos
  each; no validation photos, as a small collection has none.

``unseen/`` (new variants of known brands, one new brand) is the held-out set of every run.
``demo`` rows, beside them in the same run, train on the generated demo (``make demo`` made its
split) with its held-out brands.
Variants that differ only in how the cache is fitted share one cache pass per (collection,
training seed): ``cut_views`` takes each variant's rows from it, and the evaluation sets (which
depend on the frozen stem only) are built once. The result is the same as one ``meterid train``
+ ``meterid evaluate`` per variant, at a fraction of the cost.

Environment: ``REAL_PHOTOS_VARIANTS`` (names of ``VARIANTS``), ``REAL_PHOTOS_COLLECTIONS``
(e.g. ``upstream:0,upstream:1,cut:0,cut:0/1``: kind, seed and, after a slash, a training seed
other than the split's), ``REAL_PHOTOS_TRAIN`` (JSON overrides of
the train section for every run, e.g. ``{"device": "cuda", "workers": 14}``),
``REAL_PHOTOS_PER_CLASS`` (cap photos a class, for a quick look), ``REAL_PHOTOS_DEADLINE_S``
(start no run after this many seconds), ``REAL_PHOTOS_OUT`` (a CSV of every run),
``REAL_PHOTOS_OUTPUTS`` (a folder: each run's model outputs, ``save_outputs``),
``REAL_PHOTOS_FRAME`` (e.g. ``4:3``: every photo centre-cropped to that width:height first, as a
phone held sideways frames the same shelf; ``reframed``), ``REAL_PHOTOS_READINGS`` (names of
``READINGS``: each variant's model read again at another evaluation setting, a row of its own
named ``<variant>@<reading>``).
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps
from torchvision.transforms import v2

from meterid.config import Params, TrainConfig, load_params
from meterid.data.split import read_splits
from meterid.decision.openset import (
    EMBEDDING_SCORES,
    SCORES,
    ModelOutputs,
    OpenSetRule,
    Reference,
)
from meterid.evaluation.evaluate import EvaluationData, evaluate
from meterid.evaluation.inputs import (
    EvaluationInputs,
    evaluation_data,
    evaluation_inputs,
)
from meterid.evaluation.operating_point import KNN_KS
from meterid.model.classifier import MeterClassifier, Preprocessing
from meterid.training.calibration import calibrate
from meterid.training.cross_fit import OutOfFoldLogits
from meterid.training.outputs import FrozenEmbeddings, finished_model
from meterid.training.trainer import (
    CACHE_KEYS,
    CachedSplit,
    build_model,
    cache_splits,
    choose_device,
    covering_cache_config,
    cut_views,
    fit_on_cache,
    logits_from_activations,
    loss_weights_for,
)

REPO = Path(__file__).resolve().parents[1]
CUT_CLASSES, CUT_RARE, CUT_TEST = 12, 3, 10
CUT_TRAIN, CUT_RARE_TRAIN = (20, 40), (5, 10)
AS_PUBLISHED = "as published"  # the photos' own frame: no REAL_PHOTOS_FRAME
DEFAULT_COLLECTIONS = "upstream:0,upstream:1,upstream:2,cut:0,cut:1,cut:2,demo:42"
# The settings compared, as overrides of params.yaml's train section ({}: the defaults).
# "round_21" is the defaults before this benchmark existed (chosen on generated photos), at the
# 224 px input of then, whole photos read at that size too, one crop range for every photo's
# shape; "size224" is today's defaults at that input. The evaluate section is today's for all.
VARIANTS: dict[str, dict] = {
    "defaults": {},
    "round_21": {"image_size": 224, "eval_image_size": None, "unfreeze": "last_stage",
                 "feature_views": 4, "view_budget": 0, "min_views_per_class": 80,
                 "grayscale_head_views": 4, "label_smoothing": 0.0, "out_of_fold_folds": 0,
                 "augment": {"crop_ratio_at_aspect": None},
                 "phase2": {"epochs": 8, "lr": 5e-4, "lr_schedule": "cosine", "ema_decay": 0.0,
                            "early_stopping": True}},
    "round_20": {"image_size": 224, "eval_image_size": None, "unfreeze": "last_stage",
                 "feature_views": 8, "view_budget": 0, "min_views_per_class": 0,
                 "grayscale_head_views": 0, "label_smoothing": 0.0, "out_of_fold_folds": 0,
                 "augment": {"crop_ratio_at_aspect": None},
                 "phase2": {"epochs": 20, "lr": 5e-4, "lr_schedule": "constant",
                            "ema_decay": 0.0, "early_stopping": True}},
    "no_out_of_fold": {"out_of_fold_folds": 0},  # T = 1, sets on test without validation
    "head_only": {"phase2": {"epochs": 0}},  # phase 1 alone: what phase 2 adds
    "lr1e4": {"phase2": {"lr": 1e-4, "early_stopping": True}},
    "ema": {"phase2": {"ema_decay": 0.998, "early_stopping": True}},
    "ema_full": {"phase2": {"ema_decay": 0.998}},
    "early_stopping": {"phase2": {"early_stopping": True}},
    "epochs6": {"phase2": {"epochs": 6}},  # phase 2 a quarter shorter (step 24)
    # the demo's 1,407 training photos at 3 views a photo; the grocery collection (7) and the
    # cuts (16) keep theirs (step 26)
    "views3": {"feature_views": 3, "view_budget": 5600},
    "views3_epochs6": {"feature_views": 3, "view_budget": 5600, "phase2": {"epochs": 6}},
    "four_views": {"feature_views": 4, "view_budget": 0},
    "views8_cos12": {"feature_views": 8, "grayscale_head_views": 0,  # the GPU sweep's
                     "phase2": {"epochs": 12, "lr_schedule": "cosine", "early_stopping": True}},
    "size224": {"image_size": 224},  # the defaults before step 11; a cache pass of its own
    "size288": {"image_size": 288},
    # whole photos read larger than the training views (train.eval_image_size, step 21); each
    # its own cache pass. photos288: the training size, as before step 21
    "photos288": {"eval_image_size": 288},
    "photos320": {"eval_image_size": 320},
    "photos352": {"eval_image_size": 352},
    "train224_photos288": {"image_size": 224, "eval_image_size": 288},
    # the crop ranges before step 18: one portrait range for every photo's shape
    "fixed_crop_ratio": {"augment": {"crop_ratio_at_aspect": None}},
    # phase 2 on the last two stages in 8 epochs (step 27), and in 4, the defaults since step 29
    "two_stages": {"unfreeze": "last_two_stages", "phase2": {"epochs": 8}},
    "two_stages_e4": {"unfreeze": "last_two_stages", "phase2": {"epochs": 4}},
    # the defaults before step 29: the last stage in 8 epochs; a cache pass of its own
    "one_stage": {"unfreeze": "last_stage", "phase2": {"epochs": 8}},
    # label smoothing in every phase, the default since step 33 (steps 30, 32: photos of
    # another session and the cuts gain; the demo needed step 32's calibration). The variants
    # above it smooth too, except the two rounds; no_smooth is the defaults before step 33
    "smooth": {"label_smoothing": 0.1},
    "no_smooth": {"label_smoothing": 0.0},
    # Not measured yet (docs/real-photos.md): a candidate for the next sweep
    "size320": {"image_size": 320},
}
# Evaluation-time settings read on each variant's own training (REAL_PHOTOS_READINGS): the
# evaluation sets through the frozen stem at that setting, the temperature fitted again on them,
# as `meterid evaluate` would after a training with the setting. Phase 1's patience saw the
# variant's own validation reading, the only part of training it could change. No training of
# their own: a reading costs its evaluation sets' pass and an evaluation.
READINGS: dict[str, dict] = {
    "photos288": {"eval_image_size": 288},
    "photos320": {"eval_image_size": 320},
    "photos352": {"eval_image_size": 352},
}
OPEN_SET_PREFIX = "open_set:"
PRETRAINED = "pretrained"  # the file of a collection's pretrained-backbone embeddings
SHOWN = (("accuracy", "top-1"), ("macro_recall", "macro recall"),
         ("validation_accuracy", "top-1 on validation"), ("ece", "ECE"),
         ("ece_if_calibrated_p95", "ECE if calibrated, p95"),
         ("ece_uncalibrated", "ECE at T=1"), ("temperature", "T"),
         ("unknown_flagged_share", "unseen flagged"), ("known_flagged_share", "known flagged"),
         ("unseen_flagged_at_5pct_known", "unseen flagged at 5% known"),
         ("unknown_auroc", "unseen AUROC"),
         ("auto_accept_share", "auto-accepted"), ("auto_accept_error", "their error"),
         ("prediction_set_mean_size", "set size"), ("train_s", "train s"))


@dataclass(frozen=True)
class Collection:
    """A real collection cut for one run: ``splits`` has path (under ``raw_dir``), label and
    split; ``unseen_dir`` holds classes never trained on. ``seed`` draws a cut and, unless
    ``training_seed`` is given, the training too: a second training of one cut tells the
    training's randomness from the cut's."""

    kind: str
    seed: int
    raw_dir: Path
    unseen_dir: Path
    splits: pd.DataFrame
    training_seed: int | None = None
    frame: str = AS_PUBLISHED  # REAL_PHOTOS_FRAME's width:height when the photos were reframed

    @property
    def train_seed(self) -> int:
        return self.seed if self.training_seed is None else self.training_seed

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.seed}" + (
            "" if self.training_seed is None else f"/{self.training_seed}")


def collection_dir() -> Path:
    return Path(os.environ.get("REAL_PHOTOS_DIR", REPO.parent / "shared" / "data" / "grocery"))


def reframed(root: Path, frame: str, into: Path | None = None) -> Path:
    """A copy of the collection at ``root`` with every photo centre-cropped to ``frame``
    (``width:height``), the manifest and the licence files beside it; made once, in ``into``
    (default: the temp folder). The grocery photos are square: this measures other shapes on
    the same real photos."""
    width, height = (int(v) for v in frame.split(":"))
    into = into or Path(tempfile.gettempdir()) / f"meterid-{root.name}-{width}x{height}"
    for photo in sorted((root / "raw").rglob("*.jpg")) + sorted((root / "unseen").rglob("*.jpg")):
        target = into / photo.relative_to(root)
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            _centre_crop(ImageOps.exif_transpose(Image.open(photo)).convert("RGB"),
                         width / height).save(target, quality=95)
    for kept in [root / "MANIFEST.csv", *root.glob("*.txt")]:
        shutil.copy(kept, into / kept.name)
    return into


def _centre_crop(photo: Image.Image, aspect: float) -> Image.Image:
    size = [min(photo.height, round(photo.width / aspect)),
            min(photo.width, round(photo.height * aspect))]
    return v2.functional.center_crop(photo, size)


def upstream_splits(root: Path) -> pd.DataFrame:
    """Every photo of ``raw/`` with the collection's own split (``MANIFEST.csv``)."""
    manifest = pd.read_csv(root / "MANIFEST.csv")
    raw = manifest[manifest["devset_path"].str.startswith("raw/")]
    paths = raw["devset_path"].str.removeprefix("raw/")
    return pd.DataFrame({"path": paths, "label": paths.str.split("/").str[0],
                         "split": raw["upstream_split"].str.lower().to_numpy()})


def per_class_cap(splits: pd.DataFrame, cap: int | None) -> pd.DataFrame:
    """At most ``cap`` photos of each class in each split (a quick look), in file order."""
    if not cap:
        return splits
    return splits.groupby(["label", "split"], group_keys=False).head(cap).reset_index(drop=True)


def user_cut(upstream: pd.DataFrame, seed: int) -> pd.DataFrame:
    """``CUT_CLASSES`` classes drawn with ``seed``; ``CUT_RARE`` of them with 5-10 training
    photos, the rest 20-40 (upstream train and val photos), each tested on up to ``CUT_TEST``
    upstream test photos."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(sorted(upstream["label"].unique()))[:CUT_CLASSES]
    rows = []
    for i, label in enumerate(labels):
        low, high = CUT_RARE_TRAIN if i < CUT_RARE else CUT_TRAIN
        pool = upstream[(upstream["label"] == label) & (upstream["split"] != "test")]
        test = upstream[(upstream["label"] == label) & (upstream["split"] == "test")]
        n_train = min(len(pool), int(rng.integers(low, high + 1)))
        rows.append(pool.sample(n_train, random_state=seed).assign(split="train"))
        rows.append(test.sample(min(len(test), CUT_TEST), random_state=seed))
    return pd.concat(rows, ignore_index=True)


def collections(spec: str, root: Path, cap: int | None, params: Params,
                frame: str = AS_PUBLISHED) -> list[Collection]:
    """``kind:seed[/training seed]`` items: ``upstream`` and ``cut`` from the real collection
    at ``root``; ``demo``, the generated demo beside them (its split, ``make demo``), when it
    is there."""
    upstream = per_class_cap(upstream_splits(root), cap)
    out = []
    for item in filter(None, spec.split(",")):
        kind, seeds = item.split(":")
        seed, _, training = seeds.partition("/")
        training_seed = int(training) if training else None
        if training_seed == int(seed):  # it would train the same weights again under a new name
            raise ValueError(f"{item}: {kind}:{seed} already trains with seed {seed}; a second "
                             f"training needs another seed, e.g. {kind}:{seed}/{int(seed) + 1}")
        if kind == "demo":
            if not params.paths.splits.is_file():
                print(f"no demo split at {params.paths.splits} (make demo): demo skipped")
                continue
            out.append(Collection("demo", int(seed), params.paths.raw_dir,
                                  params.paths.unknown_dir,
                                  per_class_cap(read_splits(params.paths.splits), cap),
                                  training_seed))  # the demo's photos, never reframed
            continue
        splits = upstream if kind == "upstream" else user_cut(upstream, int(seed))
        out.append(Collection(kind, int(seed), root / "raw", root / "unseen", splits,
                              training_seed, frame))
    return out


def deep_update(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = (deep_update(base[key], value) if isinstance(value, dict)
                    and isinstance(base.get(key), dict) else value)
    return out


def variant_config(base: TrainConfig, overrides: dict, seed: int) -> TrainConfig:
    return TrainConfig.model_validate(deep_update(base.model_dump(),
                                                  {**overrides, "seed": seed}))


def run_group(collection: Collection, names: list[str], params: Params, deadline: float
              ) -> Iterator[dict]:
    """Every variant of ``names`` on one collection and training seed: one cache pass for each
    group of variants that can share one (``cache_groups``)."""
    base = variant_config(params.train, json.loads(os.environ.get("REAL_PHOTOS_TRAIN", "{}")),
                          collection.train_seed)
    configs = {name: variant_config(base, VARIANTS[name], collection.train_seed)
               for name in names}
    for group in cache_groups(configs):
        yield from _run_cache_group(collection, group, params, deadline)


def cache_groups(configs: dict[str, TrainConfig]) -> list[dict[str, TrainConfig]]:
    """``configs`` grouped by what their cache pass depends on (backbone, weights, unfreeze,
    input size, augmentation), in their order."""
    groups: dict[str, dict[str, TrainConfig]] = {}
    for name, cfg in configs.items():
        key = json.dumps(cfg.model_dump(include=set(CACHE_KEYS)), sort_keys=True, default=str)
        groups.setdefault(key, {})[name] = cfg
    return list(groups.values())


def _run_cache_group(collection: Collection, configs: dict[str, TrainConfig], params: Params,
                     deadline: float) -> Iterator[dict]:
    shared = covering_cache_config(list(configs.values()), collection.splits)
    project = params.model_copy(update={"train": shared, "paths": params.paths.model_copy(
        update={"raw_dir": collection.raw_dir, "unknown_dir": collection.unseen_dir})})
    classes = sorted(collection.splits["label"].unique())
    torch.manual_seed(shared.seed)
    start = time.perf_counter()
    template = build_model(classes, shared).to(choose_device(shared.device))
    cache = cache_splits(template, collection.splits, collection.raw_dir, shared,
                         params.validate_.max_pixels, next(template.parameters()).device)
    cache_s = time.perf_counter() - start
    inputs = evaluation_inputs(template, collection.splits, project)
    readings = {name: _reading(template, collection.splits, project, name)
                for name in _reading_names()}
    print(f"  {collection.name} ({', '.join(configs)}): {len(collection.splits)} photos, "
          f"cache {cache_s:.0f} s, evaluation sets {time.perf_counter() - start - cache_s:.0f} s",
          flush=True)
    if pretrained_path := _outputs_path(collection, PRETRAINED):
        save_pretrained_embeddings(pretrained_path, template, cache["train"], inputs)
    for name, cfg in configs.items():
        if time.perf_counter() > deadline:
            print(f"  deadline: {name} not run", flush=True)
            continue
        fitted = _fit(template, cache, collection, cfg, cache_s)
        for reading, (preprocessing, reading_inputs) in {"": (None, inputs),
                                                         **readings}.items():
            variant = f"{name}@{reading}" if reading else name
            row = {"frame": collection.frame, "collection": collection.kind,
                   "seed": collection.seed, "training_seed": collection.train_seed,
                   "variant": variant, **fitted.figures,
                   **_evaluated(fitted, reading_inputs, project, cfg.seed,
                                _outputs_path(collection, variant), preprocessing)}
            print("  " + _run_line(row), flush=True)
            yield row


def _reading_names() -> list[str]:
    return [n for n in os.environ.get("REAL_PHOTOS_READINGS", "").split(",") if n]


def _reading(template: MeterClassifier, splits: pd.DataFrame, project: Params, reading: str
             ) -> tuple[Preprocessing, EvaluationInputs]:
    """The preprocessing of ``reading`` and the evaluation sets read with it (the sets read
    photos as the model's preprocessing says)."""
    settings = project.train.model_copy(update=READINGS[reading])
    reader = copy.deepcopy(template)
    reader.preprocessing = replace(template.preprocessing, image_size=settings.photo_size)
    return reader.preprocessing, evaluation_inputs(reader, splits, project.model_copy(
        update={"train": settings}))


def _outputs_path(collection: Collection, variant: str) -> Path | None:
    folder = os.environ.get("REAL_PHOTOS_OUTPUTS")
    if not folder:
        return None
    training = "" if collection.training_seed is None else f"t{collection.training_seed}"
    return Path(folder) / f"{collection.kind}{collection.seed}{training}_{variant}.npz"


@dataclass(frozen=True)
class _Fitted:
    """One variant's trained model, with what evaluation needs of its training."""

    model: MeterClassifier
    frozen: FrozenEmbeddings
    out_of_fold: OutOfFoldLogits | None
    figures: dict[str, float]  # training time, phase 2's epochs


def _fit(template: MeterClassifier, cache: dict[str, CachedSplit], collection: Collection,
         cfg: TrainConfig, cache_s: float) -> _Fitted:
    """One variant: a fresh copy of the model (the same initial head), its views of the cache,
    the phases, as ``meterid train`` does it."""
    start = time.perf_counter()
    model = copy.deepcopy(template)
    # As train_two_phase does: the head's dropout draws from the global generator, so without
    # this a variant's result would depend on what the variants before it consumed (cut:0's
    # round 21 gave 80.8% after the defaults without out-of-fold fits, 84.2% after them).
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    views = cut_views(cache, collection.splits, model.classes, cfg)
    weights = loss_weights_for(views["train"].targets, len(model.classes), cfg)
    result = fit_on_cache(model, views, cfg, weights, [], {})
    model, frozen = finished_model(result)
    train_s = time.perf_counter() - start + cache_s * len(views["train_views"].targets) / max(
        1, len(cache["train_views"].targets))
    # cpu: as `meterid evaluate` reads it back from the checkpoint
    return _Fitted(model.cpu(), frozen, result.out_of_fold,
                   {"train_s": train_s, **_phase2_epochs(result.history)})


def _evaluated(fitted: _Fitted, inputs: EvaluationInputs, project: Params, seed: int,
               outputs_path: Path | None, reading: Preprocessing | None) -> dict:
    """Evaluation as ``meterid evaluate`` does it. A ``reading``: the model carries its
    preprocessing, and its temperature is fitted again on these inputs' validation photos
    (out-of-fold temperatures read no evaluation photo)."""
    model = fitted.model
    if reading is not None:
        model = copy.deepcopy(model)
        model.preprocessing = reading
        if fitted.out_of_fold is None:
            logits, _ = logits_from_activations(model, inputs.val.activations)
            model.temperature.fill_(calibrate(logits, inputs.val.targets,
                                              seed=seed).temperature)
    data = evaluation_data(model, inputs, fitted.out_of_fold)
    evaluation = evaluate(model, data, fitted.frozen, project.evaluate, seed)
    reference = Reference(model.reference_embeddings.numpy(), model.reference_labels.numpy())
    if outputs_path:
        save_outputs(outputs_path, data, reference)
    return {**{key: float(evaluation.metrics.get(key, np.nan)) for key, _ in SHOWN
               if key != "train_s"},
            "unseen_flagged_at_5pct_known": unseen_flagged_at(evaluation.open_set_scores, 0.05),
            "validation_accuracy": validation_accuracy(data),
            **open_set_capabilities(data, reference)}


def validation_accuracy(data: EvaluationData) -> float:
    """Top-1 on the validation photos. The upstream split's come from another session than the
    training and test photos, as a user's field photos do; they chose no weights (phase 2 runs
    its epochs out), only phase 1's stop, the temperature and the thresholds."""
    if data.threshold_set != "validation" or not len(data.val):
        return float("nan")  # without validation photos ``val`` is the test photos
    return float((data.val.logits.argmax(1) == data.val_targets).mean())


def _phase2_epochs(history: list[dict]) -> dict[str, float]:
    """How many phase-2 epochs ran and which one's val loss was lowest (1-based)."""
    losses = [r["val_loss"] for r in history if r["phase"] == 2]
    finite = [loss for loss in losses if np.isfinite(loss)]
    return {"phase2_epochs_run": float(len(losses)),
            "phase2_best_epoch": float(losses.index(min(finite)) + 1) if finite else np.nan}


def unseen_flagged_at(scores: dict[str, np.ndarray], known_flagged: float) -> float:
    """The share of held-out photos the chosen open-set score flags at the threshold that flags
    ``known_flagged`` of the known test photos: what the score could do at the issue's operating
    point, whatever threshold validation chose (set on test photos: a capability, not a
    promise)."""
    unseen = [v for group, v in scores.items() if group.endswith("brands")]
    known = scores.get("known test photos", np.array([]))
    if not unseen or not len(known):
        return float("nan")
    return float((np.concatenate(unseen) < flagging_threshold(known, known_flagged)).mean())


def flagging_threshold(known: np.ndarray, flagged: float) -> float:
    """The open-set score under which ``flagged`` of the known photos fall."""
    return float(np.quantile(known, flagged))


def save_outputs(path: Path, data: EvaluationData, reference: Reference) -> None:
    """The model's outputs on the known test, validation and held-out photos (and the training
    photos' out-of-fold probabilities when it has them), and its reference embeddings: open-set
    scores, ECE's noise and prediction sets can be tried on them without training again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sets = {"test": data.test, "val": data.val}
    if data.held_out is not None:
        sets["held_out"] = data.held_out.outputs
    arrays = {f"{name}_{part}": getattr(outputs, part) for name, outputs in sets.items()
              for part in ("logits", "probabilities", "embeddings")}
    if data.out_of_fold is not None:  # what the sets and the accept bound were set on
        arrays["out_of_fold_probabilities"] = data.out_of_fold.probabilities
        arrays["out_of_fold_targets"] = data.out_of_fold.targets
    np.savez_compressed(path, **arrays, test_targets=data.test_targets,
                        val_targets=data.val_targets,
                        held_out_brands=(data.held_out.brands if data.held_out is not None
                                         else np.array([], dtype=str)),
                        reference_embeddings=reference.embeddings,
                        reference_labels=reference.labels, temperature=data.test.temperature)


def saved_outputs(saved: np.lib.npyio.NpzFile, split: str) -> ModelOutputs:
    """One set's outputs (``test``, ``val``, ``held_out``) of a run ``save_outputs`` kept."""
    return ModelOutputs(saved[f"{split}_logits"], saved[f"{split}_probabilities"],
                        saved[f"{split}_embeddings"], float(saved["temperature"]))


def saved_runs(prefix: str = "") -> list[Path]:
    """The runs ``save_outputs`` kept in ``REAL_PHOTOS_OUTPUTS`` whose name starts with
    ``prefix`` (a collection: ``upstream``, ``cut1``), without the pretrained embeddings."""
    folder = os.environ.get("REAL_PHOTOS_OUTPUTS")
    return sorted(p for p in Path(folder).glob(f"{prefix}*.npz")
                  if not p.stem.endswith(PRETRAINED)) if folder else []


def saved_run_rows(selector: str, run_rows: Callable[[Path], list[dict]]
                   ) -> tuple[list[Path], pd.DataFrame]:
    """The saved runs the environment variable ``selector`` picks (``saved_runs``) and the rows
    ``run_rows`` reads from each: what the benchmarks on saved runs share. No runs: says so."""
    runs = saved_runs(os.environ.get(selector, ""))
    if not runs:
        print("no saved runs (REAL_PHOTOS_OUTPUTS, made by real_photos): skipped")
    return runs, pd.DataFrame([row for path in runs for row in run_rows(path)])


def save_pretrained_embeddings(path: Path, untrained: MeterClassifier, train: CachedSplit,
                               inputs: EvaluationInputs) -> None:
    """The pretrained backbone's embeddings (no fine-tuning) of the training, test, validation
    and held-out photos, in the order ``save_outputs`` keeps: the same for every variant."""
    sets = {"reference": train, "test": inputs.test, "val": inputs.val}
    if inputs.held_out is not None:
        sets["held_out"] = inputs.held_out
    path.parent.mkdir(parents=True, exist_ok=True)
    embeddings: dict[str, Any] = {name: logits_from_activations(untrained, split.activations)[1]
                                  .numpy() for name, split in sets.items()}
    np.savez_compressed(path, **embeddings)


def product_scores(reference: Reference) -> dict[str, OpenSetRule]:
    """Every score of ``openset.SCORES`` (kNN at each of the rule's ``KNN_KS``) the reference
    allows, by its label; thresholds unset."""
    return {rule.label: rule for score in SCORES
            for rule in (OpenSetRule(score, 0.0, k) for k in (KNN_KS if score == "knn" else (5,)))
            if len(reference) or score not in EMBEDDING_SCORES}


def open_set_capabilities(data: EvaluationData, reference: Reference) -> dict[str, float]:
    """Every open-set score's share of held-out photos flagged at the threshold that flags 5% of
    the known test photos (``unseen_flagged_at``), as ``open_set:<score>`` columns: the
    candidates of the product's rule and those measured for it (``openset.SCORES``)."""
    if data.held_out is None or not len(data.test):
        return {}
    return {f"{OPEN_SET_PREFIX}{label}": unseen_flagged_at(
                {"known test photos": rule.scores(data.test, reference),
                 "held-out brands": rule.scores(data.held_out.outputs, reference)}, 0.05)
            for label, rule in product_scores(reference).items()}


def open_set_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and range over runs of each score's unseen share at 5% of known photos flagged, per
    collection kind and variant, best first."""
    columns = [c for c in runs.columns if c.startswith(OPEN_SET_PREFIX)]
    if not columns:
        return pd.DataFrame()
    long = runs.melt(["collection", "variant"], columns, "score", "flagged").dropna()
    long["score"] = long["score"].str.removeprefix(OPEN_SET_PREFIX)
    table = long.groupby(["collection", "variant", "score"], sort=False)["flagged"].agg(
        ["mean", "min", "max", "count"]).reset_index()
    table = table.sort_values(["collection", "variant", "mean"], ascending=[True, True, False])
    for key in ("mean", "min", "max"):
        table[key] = table[key].map("{:.1%}".format)
    return table.rename(columns={"mean": "unseen at 5% known", "count": "runs"})


def _run_line(row: dict) -> str:
    training = "" if row["training_seed"] == row["seed"] else f"/{row['training_seed']}"
    parts = [f"{row['variant']} {row['collection']}:{row['seed']}{training}"]
    parts += [f"{label} {_format(key, row[key])}" for key, label in SHOWN]
    return ", ".join(parts + [f"phase 2: {row['phase2_epochs_run']:.0f} epochs run, best val "
                              f"loss at {row['phase2_best_epoch']:.0f}"])


def _format(key: str, value: float) -> str:
    if key == "train_s":
        return f"{value:.0f}"
    if key in ("prediction_set_mean_size", "unknown_auroc", "temperature"):
        return f"{value:.2f}"
    return f"{value:.1%}"


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread (sd over runs) of each figure, per collection kind and variant."""
    rows = []
    for (kind, variant), group in runs.groupby(["collection", "variant"], sort=False):
        row = {"collection": kind, "variant": variant, "runs": len(group)}
        for key, label in SHOWN:
            values = group[key].dropna()
            mean = values.mean() if len(values) else math.nan
            spread = values.std(ddof=1) if len(values) > 1 else 0.0
            row[label] = (f"{mean:.1%} ± {spread:.1%}" if key in ("accuracy", "macro_recall")
                          else _format(key, mean))
        rows.append(row)
    return pd.DataFrame(rows)


def run() -> pd.DataFrame:
    deadline = time.perf_counter() + float(os.environ.get("REAL_PHOTOS_DEADLINE_S", "inf"))
    params = load_params(REPO / "params.yaml")
    root = collection_dir()
    if not (root / "MANIFEST.csv").is_file():
        print(f"no real collection at {root} (REAL_PHOTOS_DIR): skipped")
        return pd.DataFrame()
    if frame := os.environ.get("REAL_PHOTOS_FRAME"):
        root = reframed(root, frame)
    names = [n for n in os.environ.get("REAL_PHOTOS_VARIANTS", "defaults,round_21").split(",")
             if n]
    cap = int(os.environ.get("REAL_PHOTOS_PER_CLASS", "0")) or None
    print(f"real collection {root}; variants {', '.join(names)}", flush=True)
    rows: list[dict] = []
    out = os.environ.get("REAL_PHOTOS_OUT")
    spec = os.environ.get("REAL_PHOTOS_COLLECTIONS", DEFAULT_COLLECTIONS)
    for collection in collections(spec, root, cap, params, frame or AS_PUBLISHED):
        if time.perf_counter() > deadline:
            break
        for row in run_group(collection, names, params, deadline):
            rows.append(row)
            if out:
                pd.DataFrame(rows).to_csv(out, index=False)
    runs = pd.DataFrame(rows)
    if len(runs):
        print(summary_table(runs).to_string(index=False))
        print("\nunseen photos flagged at 5% of known test photos flagged, by open-set score:")
        print(open_set_table(runs).to_string(index=False))
    return runs
