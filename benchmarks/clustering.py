"""UNKNOWN clustering quality and speed, measured in one run:

- quality on the demo's held-out brands (``data/unknown``) mixed with the known test photos the
  champion wrongly flags UNKNOWN: adjusted Rand index and NMI against the true brands, noise
  share and purity (target ARI >= 0.8 with at most 30% noise), for each reduction choice;
- clustering time (normalise + reduce + HDBSCAN) for 1k, 10k and 100k embeddings (target: 100k
  under 60 s), the 100k made of real demo embeddings with small jitter.

Needs ``make demo`` (the photos and models/champion).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from meterid.clustering.cluster import NOISE, cluster_embeddings
from meterid.clustering.embeddings import embed_photos
from meterid.config import ClusterConfig, Params, load_params
from meterid.data.images import file_sha256, load_rgb
from meterid.inference.predictor import Predictor
from meterid.registry import load_classifier

SIZES = (1_000, 10_000, 100_000)


def _predictor(params: Params) -> Predictor:
    exported = params.paths.models_dir / "champion"
    if not exported.is_dir():
        raise SystemExit("the clustering benchmark needs models/champion: run `make demo` first")
    return Predictor(load_classifier(str(exported)), None, params.score.engine,
                     params.paths.onnx_cache)


def _flagged_known(params: Params, predictor: Predictor) -> pd.DataFrame:
    """Known-class test photos the champion flags UNKNOWN (they reach the weekly run too)."""
    splits = pd.read_csv(params.paths.splits)
    test = splits[splits["split"] == "test"]
    paths = [params.paths.raw_dir / p for p in test["path"]]
    flagged = []
    for start in range(0, len(paths), 32):
        chunk = paths[start:start + 32]
        batch = torch.stack([predictor.preprocess(load_rgb(p, params.validate_.max_pixels))
                             for p in chunk])
        flagged += [p.is_unknown for p in predictor.predict(batch)]
    rows = test[np.array(flagged)]
    return pd.DataFrame({"path": [str(params.paths.raw_dir / p) for p in rows["path"]],
                         "truth": [f"known:{label}" for label in rows["label"]]})


def _photos(params: Params, predictor: Predictor) -> pd.DataFrame:
    held_out = sorted(params.paths.unknown_dir.rglob("*.jpg"))
    frame = pd.concat([pd.DataFrame({"path": [str(p) for p in held_out],
                                     "truth": [p.parent.name for p in held_out]}),
                       _flagged_known(params, predictor)], ignore_index=True)
    frame["sha256"] = [file_sha256(Path(p)) for p in frame["path"]]
    return frame


def quality(labels: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """ARI/NMI over all photos (noise counted as its own group, as a reviewer sees it),
    noise share, and purity: the share of clustered photos in their cluster's majority brand."""
    clustered = labels != NOISE
    majority = pd.Series(truth[clustered]).groupby(labels[clustered]).agg(
        lambda s: s.value_counts().iloc[0]).sum()
    return {"ari": adjusted_rand_score(truth, labels),
            "nmi": normalized_mutual_info_score(truth, labels),
            "noise": float((~clustered).mean()),
            "purity": float(majority / clustered.sum()) if clustered.any() else float("nan"),
            "clusters": len(set(labels[clustered].tolist()))}


def _variants(cfg: ClusterConfig) -> dict[str, ClusterConfig]:
    return {"params.yaml": cfg,
            "no reduction": cfg.model_copy(update={"reduction": "none"}),
            "pca 16, 1 sample": cfg.model_copy(update={"pca_components": 16, "min_samples": 1}),
            "eom selection": cfg.model_copy(update={"selection_method": "eom"})}


def _timings(embeddings: np.ndarray, cfg: ClusterConfig) -> dict[int, float]:
    rng = np.random.default_rng(0)
    spread = float(np.std(embeddings)) * 0.05
    out = {}
    for size in SIZES:
        picks = embeddings[rng.integers(0, len(embeddings), size)]
        data = (picks + rng.normal(0, spread, picks.shape)).astype(np.float32)
        start = time.perf_counter()
        cluster_embeddings(data, cfg)
        out[size] = time.perf_counter() - start
    return out


def run() -> dict:
    params = load_params()
    predictor = _predictor(params)
    photos = _photos(params, predictor)
    cfg = params.cluster
    with tempfile.TemporaryDirectory() as cache:
        embeddings = embed_photos(photos, predictor, Path(cache), cfg.batch_size,
                                  params.validate_.max_pixels)
    truth = photos["truth"].to_numpy()
    held_out = ~photos["truth"].str.startswith("known:")
    print(f"{len(photos)} photos: {int(held_out.sum())} of "
          f"{photos.loc[held_out, 'truth'].nunique()} held-out brands + "
          f"{int((~held_out).sum())} known photos flagged UNKNOWN")
    results = {}
    for name, variant in _variants(cfg).items():
        result = quality(cluster_embeddings(embeddings, variant).labels, truth)
        results[name] = result
        print(f"{name:17s} ARI {result['ari']:.3f}  NMI {result['nmi']:.3f}  noise "
              f"{result['noise']:.0%}  purity {result['purity']:.1%}  clusters "
              f"{result['clusters']}  (target ARI >= 0.8, noise <= 30%)")
    timings = _timings(embeddings, cfg)
    for size, seconds in timings.items():
        print(f"cluster {size:7d} x {embeddings.shape[1]}-d embeddings "
              f"({cfg.reduction} {cfg.pca_components}): {seconds:6.1f} s"
              + ("  (target < 60 s)" if size == SIZES[-1] else ""))
    return {"quality": results, "timings": timings}
