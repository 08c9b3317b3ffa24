"""UNKNOWN clustering quality and speed, measured in one run:

- quality on each half of the demo's held-out brands (``data/unknown``; the halves of
  ``operating_point.split_brand_sets``), each mixed with the known test photos the champion
  wrongly flags UNKNOWN: adjusted Rand index and NMI against the true brands, noise share and
  purity (target ARI >= 0.8 with at most 30% noise), for params.yaml and the alternatives. The
  settings were chosen on the selection half (whole, and 30% subsamples: a small week); the
  report half took no part. Subsamples show what a week with few UNKNOWN photos gets;
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
from meterid.evaluation.operating_point import split_brand_sets
from meterid.inference.predictor import Predictor
from meterid.photos.images import file_sha256, load_rgb
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
            "fixed size 8, pca 8, leaf": cfg.model_copy(update={
                "min_cluster_share": 0.0, "min_cluster_size": 8, "pca_components": 8,
                "selection_method": "leaf"}),
            "no reduction": cfg.model_copy(update={"reduction": "none"}),
            "pca 16, 1 sample": cfg.model_copy(update={"pca_components": 16, "min_samples": 1}),
            "leaf selection": cfg.model_copy(update={"selection_method": "leaf"})}


def _brand_set_quality(embeddings: np.ndarray, truth: np.ndarray, cfg: ClusterConfig,
                       share: float, seeds: int = 3) -> dict[str, float]:
    """Mean quality over ``seeds`` random subsamples of ``share`` of the photos (1: all)."""
    rng = np.random.default_rng(0)
    results = []
    for _ in range(seeds if share < 1 else 1):
        pick = (np.sort(rng.choice(len(truth), max(2, int(share * len(truth))), replace=False))
                if share < 1 else np.arange(len(truth)))
        results.append(quality(cluster_embeddings(embeddings[pick], cfg).labels, truth[pick]))
    return {key: float(np.mean([r[key] for r in results])) for key in results[0]}


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
    sets = split_brand_sets(photos.loc[held_out, "truth"])
    known = (~held_out).to_numpy()
    results = {}
    for set_name, brands in (("selection", sets.selection), ("report", sets.report)):
        mask = photos["truth"].isin(brands).to_numpy() | known
        print(f"{set_name} brands {', '.join(brands)} ({int(mask.sum())} photos):")
        for name, variant in _variants(cfg).items():
            for share in (1.0, 0.3):
                result = _brand_set_quality(embeddings[mask], truth[mask], variant, share)
                results[f"{set_name}/{name}/{share:.0%}"] = result
                print(f"  {name:26s} {share:4.0%} of photos: ARI {result['ari']:.3f}  NMI "
                      f"{result['nmi']:.3f}  noise {result['noise']:.0%}  purity "
                      f"{result['purity']:.1%}  clusters {result['clusters']:.1f}")
    print("  (target ARI >= 0.8, noise <= 30%, on the report brands)")
    timings = _timings(embeddings, cfg)
    for size, seconds in timings.items():
        print(f"cluster {size:7d} x {embeddings.shape[1]}-d embeddings "
              f"({cfg.reduction} {cfg.pca_components}): {seconds:6.1f} s"
              + ("  (target < 60 s)" if size == SIZES[-1] else ""))
    return {"quality": results, "timings": timings}
