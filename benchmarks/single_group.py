"""Weeks of one new type among a few strays: does the weekly clustering find it?

HDBSCAN calls a week of one group and a few strays all noise: it has no second cluster to split
from. ``cluster.single_group`` then keeps the one group when it is as alike as the model's least
alike known class. This benchmark draws weeks from real photos the champion never trained on:
- one new type: 3-12 photos of one held-out brand and 0-16 known test photos (the known photos
  a model flags are of the known classes); found when a cluster of >= 3 photos is >= 70% that
  brand;
- no new type: 4-32 known test photos only; a cluster whose majority class is under 70% is
  impure (a reviewer would reject it);
and compares HDBSCAN alone, the one group kept always, and kept under the gate (params.yaml),
on the same weeks. The held-out brands are split in two halves: ``SINGLE_GROUP_SELECTION``
names the brands the choice was made on (default: every other brand); the others report it.

Run it in a project after ``meterid flow train`` (or after ``make demo``): its
``models/champion``, its test split, and the held-out brands in ``SINGLE_GROUP_UNSEEN``
(default: the project's ``paths.unknown_dir``), one folder per brand.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from meterid.clustering.cluster import NOISE, class_cohesion_floor, cluster_embeddings
from meterid.clustering.embeddings import embed_photos
from meterid.config import ClusterConfig, load_params
from meterid.data.split import read_splits
from meterid.inference.predictor import Predictor
from meterid.photos.images import file_sha256
from meterid.registry import load_classifier

WEEKS = 150  # of each kind, per half
PURE = 0.7


def _photos(unseen_dir: Path, splits: pd.DataFrame, raw_dir: Path) -> pd.DataFrame:
    unseen = sorted(p for p in unseen_dir.rglob("*") if p.is_file() and p.parent != unseen_dir)
    test = splits[splits["split"] == "test"]
    frame = pd.concat([
        pd.DataFrame({"path": [str(p) for p in unseen], "brand": [p.parent.name for p in unseen],
                      "known": False}),
        pd.DataFrame({"path": [str(raw_dir / p) for p in test["path"]],
                      "brand": test["label"].to_numpy(), "known": True})], ignore_index=True)
    frame["sha256"] = [file_sha256(Path(p)) for p in frame["path"]]
    return frame


def _found(labels: np.ndarray, brands: np.ndarray, brand: str) -> bool:
    for cluster in set(labels[labels != NOISE].tolist()):
        members = brands[labels == cluster] == brand
        if members.sum() >= 3 and members.mean() >= PURE:
            return True
    return False


def _impure(labels: np.ndarray, brands: np.ndarray) -> bool:
    return any(pd.Series(brands[labels == cluster]).value_counts(normalize=True).iloc[0] < PURE
               for cluster in set(labels[labels != NOISE].tolist()))


def _weeks(photos: pd.DataFrame, half: list[str], known: np.ndarray,
           rng: np.random.Generator) -> list[tuple[np.ndarray, str | None]]:
    weeks: list[tuple[np.ndarray, str | None]] = []
    for week in range(WEEKS):
        brand = half[week % len(half)]
        own = np.flatnonzero(photos["brand"].to_numpy() == brand)
        new = rng.choice(own, min(len(own), int(rng.choice([3, 4, 6, 8, 12]))), replace=False)
        strays = rng.choice(known, min(len(known), int(rng.choice([0, 2, 4, 8, 16]))),
                            replace=False)
        weeks.append((np.r_[new, strays], brand))
    for _ in range(WEEKS):
        weeks.append((rng.choice(known, min(len(known), int(rng.choice([4, 8, 16, 32]))),
                                 replace=False), None))
    return weeks


def _rules(cfg: ClusterConfig, floor: float) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    return {"HDBSCAN alone": lambda x: cluster_embeddings(x, cfg).labels,
            "one group, always": lambda x: cluster_embeddings(x, cfg, -1.0).labels,
            "one group, gated (params.yaml)": lambda x: cluster_embeddings(x, cfg, floor).labels}


def run() -> pd.DataFrame | None:
    params = load_params()
    champion = params.paths.models_dir / "champion"
    unseen_dir = Path(os.environ.get("SINGLE_GROUP_UNSEEN", params.paths.unknown_dir))
    brands = sorted(p.name for p in unseen_dir.iterdir() if p.is_dir()) if unseen_dir.is_dir() \
        else []
    if not champion.is_dir() or len(brands) < 2 or not params.paths.splits.is_file():
        print(f"needs models/champion, a split and >= 2 brand folders in {unseen_dir}: skipped")
        return None
    bundle = load_classifier(str(champion))
    predictor = Predictor(bundle, None, params.score.engine, params.paths.onnx_cache)
    photos = _photos(unseen_dir, read_splits(params.paths.splits), params.paths.raw_dir)
    with tempfile.TemporaryDirectory() as cache:
        embeddings = embed_photos(photos, predictor, Path(cache), params.cluster.batch_size,
                                  params.validate_.max_pixels)
    floor = class_cohesion_floor(bundle.model.reference_embeddings.numpy(),
                                 bundle.model.reference_labels.numpy())
    assert floor is not None, "the champion stores no training embeddings"
    named = os.environ.get("SINGLE_GROUP_SELECTION")
    selection = named.split(",") if named else brands[::2]
    halves = {"selection": selection, "report": [b for b in brands if b not in selection]}
    known = np.flatnonzero(photos["known"].to_numpy())
    print(f"{champion}: {len(known)} known test photos, brands {halves}, "
          f"least alike known class: mean cosine {floor:.3f}")
    rows = []
    truth = photos["brand"].to_numpy()
    for seed, (half, half_brands) in enumerate(halves.items()):
        weeks = _weeks(photos, half_brands, known, np.random.default_rng(seed))
        for rule, labels_of in _rules(params.cluster, floor).items():
            outcomes = [(brand, labels_of(embeddings[pick]), truth[pick]) for pick, brand in weeks]
            new = [_found(labels, t, brand) for brand, labels, t in outcomes if brand]
            none = [_impure(labels, t) for brand, labels, t in outcomes if brand is None]
            rows.append({"half": half, "rule": rule, "new type found": np.mean(new),
                         "impure cluster, no new type": np.mean(none)})
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.1%}"))
    return table
