"""Clustering logic: HDBSCAN on embeddings, noise, ids that persist, the embedding cache."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from meterid.clustering.cluster import (
    NOISE,
    assign_ids,
    centroids,
    class_cohesion_floor,
    cluster_embeddings,
    min_cluster_size,
    stable_ids,
)
from meterid.clustering.embeddings import embed_photos, model_key
from meterid.clustering.state import ClusterState
from meterid.core import OK, UNKNOWN, ScoredRow
from meterid.inference.predictor import Predictor
from meterid.photos.images import file_sha256


def blobs(seed: int = 0, per_blob: int = 30, dim: int = 64, outliers: int = 6) -> tuple:
    """Three tight directions in embedding space plus scattered outliers."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, dim))
    points = [c + 0.05 * rng.normal(size=(per_blob, dim)) for c in centres]
    truth = np.repeat([0, 1, 2], per_blob)
    points.append(rng.normal(size=(outliers, dim)) * 3)
    return np.vstack(points).astype(np.float32), np.r_[truth, np.full(outliers, NOISE)]


def test_min_cluster_size_follows_the_week_within_its_bounds(params):
    cfg = params.cluster.model_copy(update={"min_cluster_share": 0.05, "min_cluster_size": 3,
                                            "max_min_cluster_size": 50})
    assert [min_cluster_size(n, cfg) for n in (10, 29, 240, 5000)] == [3, 3, 12, 50]
    # a small week of three brands of seven photos each still finds them (a fixed 8 cannot)
    embeddings, truth = blobs(per_blob=7, outliers=0)
    labels = cluster_embeddings(embeddings, cfg.model_copy(update={"min_samples": 1})).labels
    assert len(set(labels) - {NOISE}) == 3 and (labels != NOISE).mean() > 0.8
    fixed = cfg.model_copy(update={"min_cluster_share": 0.0, "min_cluster_size": 8})
    assert (cluster_embeddings(embeddings, fixed).labels == NOISE).all()


def test_hdbscan_finds_the_blobs_and_leaves_outliers_as_noise(params):
    embeddings, truth = blobs()
    # min_samples 3: a conservative density estimate, so lone outliers stay noise
    result = cluster_embeddings(embeddings, params.cluster.model_copy(update={"min_samples": 3}))
    found = result.labels
    assert len(set(found[truth >= 0])) == 3 and NOISE not in set(found[truth >= 0])
    assert (found[truth == NOISE] == NOISE).mean() >= 0.8
    assert result.outlier_scores[truth == NOISE].mean() > result.outlier_scores[truth >= 0].mean()
    assert ((result.probabilities >= 0) & (result.probabilities <= 1)).all()


def test_too_few_photos_are_all_noise(params):
    result = cluster_embeddings(np.ones((3, 8), np.float32), params.cluster)
    assert (result.labels == NOISE).all()


def one_group_and_strays(seed: int = 0, group: int = 6, strays: int = 3, dim: int = 64,
                         spread: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """A week of one new type (``group`` alike photos) and a few unrelated ones."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=dim)
    points = np.vstack([centre + spread * rng.normal(size=(group, dim)),
                        rng.normal(size=(strays, dim))]).astype(np.float32)
    return points, np.r_[np.zeros(group, int), np.full(strays, NOISE)]


def test_one_group_among_strays_is_kept_only_when_as_alike_as_a_known_class(params):
    embeddings, truth = one_group_and_strays()
    cfg = params.cluster
    # HDBSCAN alone: no second cluster to split from, so everything is noise
    assert (cluster_embeddings(embeddings, cfg).labels == NOISE).all()
    # known classes whose own photos sit at cosine ~0.8 and ~0.95: the group (~0.99) passes
    rng = np.random.default_rng(1)
    loose, tight = rng.normal(size=(2, 64))
    reference = np.vstack([loose + 0.5 * rng.normal(size=(10, 64)),
                           tight + 0.2 * rng.normal(size=(10, 64)), rng.normal(size=(1, 64))])
    labels = np.r_[np.zeros(10, int), np.ones(10, int), 2]  # class 2: one photo, no cohesion
    floor = class_cohesion_floor(reference, labels)
    assert floor is not None and 0.7 < floor < 0.9
    found = cluster_embeddings(embeddings, cfg, single_group_cohesion=floor).labels
    assert set(found) <= {0, NOISE} and (found == 0).sum() >= 3  # one candidate type ...
    assert (truth[found == 0] == 0).all()  # ... of the group's photos only
    # a looser group than any known class stays noise: strays are not made a type
    loose_week, _ = one_group_and_strays(spread=1.5)
    assert (cluster_embeddings(loose_week, cfg, single_group_cohesion=floor).labels
            == NOISE).all()
    assert class_cohesion_floor(np.empty((0, 64)), np.empty(0, int)) is None


def test_ids_persist_across_runs_and_new_clusters_get_new_ids(params):
    cfg = params.cluster
    embeddings, truth = blobs()
    first = cluster_embeddings(embeddings, cfg)
    state = ClusterState()
    mapping = stable_ids(centroids(embeddings, first.labels), {}, cfg.match_min_similarity, 0)
    for label, cid in mapping.items():
        state.record(cid, "v1", centroids(embeddings, first.labels)[label], 30, "2026-11-16")
    first_ids = assign_ids(first.labels, mapping)

    # Next week: the same kinds of photos in another order, plus a new kind of meter.
    order = np.random.default_rng(1).permutation(len(embeddings))
    new_kind = np.random.default_rng(2).normal(size=(1, embeddings.shape[1])) + 0.05 * \
        np.random.default_rng(3).normal(size=(30, embeddings.shape[1]))
    week2 = np.vstack([embeddings[order], new_kind]).astype(np.float32)
    second = cluster_embeddings(week2, cfg)
    mapping2 = stable_ids(centroids(week2, second.labels), state.centroids_for("v1"),
                          cfg.match_min_similarity, state.next_id)
    second_ids = assign_ids(second.labels, mapping2)
    members = truth[order] >= 0
    assert (second_ids[: len(order)][members] == first_ids[order][members]).all()  # same ids
    assert set(second_ids[len(order):]) == {3}  # the new kind: a fresh id
    # Another model's centroids are not comparable: nothing matches.
    assert stable_ids(centroids(week2, second.labels), state.centroids_for("v2"),
                      cfg.match_min_similarity, state.next_id) == {0: 3, 1: 4, 2: 5, 3: 6}


def test_state_marks_reviews_and_survives_a_reload(tmp_path: Path):
    state = ClusterState()
    state.record(0, "v1", np.ones(4) / 2, 12, "2026-11-23")
    state.mark(0, "rejected", "screenshots")
    state.save(tmp_path / "state.json")
    loaded = ClusterState.load(tmp_path / "state.json")
    assert loaded.clusters[0].status == "rejected" and loaded.next_id == 1
    with pytest.raises(KeyError, match="no cluster 7"):
        loaded.mark(7, "rejected")
    with pytest.raises(ValueError, match="unknown status"):
        loaded.mark(0, "maybe")


def _photos(folder: Path, n: int) -> pd.DataFrame:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"p{i}.png"
        Image.new("RGB", (80, 90), (30 * i % 255, 90, 160)).save(path)
        paths.append(path)
    return pd.DataFrame({"sha256": [file_sha256(p) for p in paths], "path": map(str, paths)})


def test_embedding_cache_embeds_new_photos_only_and_never_mixes_models(tiny_model, tmp_path,
                                                                       one_thread):
    photos = _photos(tmp_path / "photos", 5)
    cache = tmp_path / "embeddings"
    v1 = Predictor(tiny_model)
    calls: list[int] = []
    original = v1.embed
    v1.embed = lambda batch: calls.append(len(batch)) or original(batch)
    first = embed_photos(photos.iloc[:3], v1, cache, 2, 10**7)
    again = embed_photos(photos, v1, cache, 2, 10**7)
    assert calls == [2, 1, 2]  # 3 new photos, then only the 2 it lacked
    np.testing.assert_allclose(again[:3], first, rtol=1e-5)
    assert again.shape == (5, tiny_model.model.embedding_dim)

    v2 = Predictor(dataclasses.replace(tiny_model, version=2))
    embed_photos(photos, v2, cache, 8, 10**7)
    # Another registry's "version 1" (a fresh clone, a server): other weights, its own cache.
    other_weights = copy.deepcopy(tiny_model.model)
    with torch.no_grad():
        next(other_weights.parameters()).add_(0.5)
    elsewhere_v1 = Predictor(dataclasses.replace(tiny_model, model=other_weights))
    theirs = embed_photos(photos, elsewhere_v1, cache, 8, 10**7)
    folders = sorted(p.name for p in cache.iterdir())
    assert len(folders) == 3 and [f.split("-")[0] for f in folders] == ["v1", "v1", "v2"]
    assert model_key(v1) != model_key(elsewhere_v1)
    assert not np.allclose(theirs, again, atol=1e-4)
    for folder in folders:
        assert len(pd.read_parquet(cache / folder / "index.parquet")) == 5


def test_cluster_command_on_a_folder_and_candidate_errors(tiny_model, exported_model, params,
                                                          tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from meterid.cli import app
    from tests.conftest import write_params

    monkeypatch.chdir(tmp_path)
    cluster = params.cluster.model_copy(update={"min_cluster_size": 3, "min_samples": 1})
    score = params.score.model_copy(update={"model": str(exported_model), "engine": "torch"})
    write_params(tmp_path, params.model_copy(update={"cluster": cluster, "score": score}))
    _photos(tmp_path / "pile", 6)
    runner = CliRunner()
    embedded = runner.invoke(app, ["embed", "--images", "pile"])
    assert embedded.exit_code == 0 and "6 photos embedded (512-d)" in embedded.output
    caches = list((tmp_path / "data/embeddings").glob("v1-*/embeddings.npy"))
    assert len(caches) == 1 and len(np.load(caches[0])) == 6
    result = runner.invoke(app, ["cluster", "--images", "pile", "--out", "out"])
    assert result.exit_code == 0, result.output
    clusters = pd.read_parquet(tmp_path / "out" / "clusters.parquet")
    assert len(clusters) == 6 and (tmp_path / "out" / "sheets").is_dir()
    bad = runner.invoke(app, ["candidates", "export", "99", "--run", "out"])
    assert bad.exit_code == 2 and "has no cluster 99" in bad.stderr
    assert runner.invoke(app, ["candidates", "reject", "99"]).exit_code == 2
    assert runner.invoke(app, ["cluster", "--since", "week"]).exit_code == 2


def test_photos_come_from_the_store_window_or_a_scoring_output(params, tmp_path):
    from meterid.clustering.steps import scored_photos, store_photos
    from meterid.scoring.store import UnknownStore

    paths = params.paths.model_copy(update={"unknown_store": tmp_path / "store"})
    project = params.model_copy(update={"paths": paths})
    store = UnknownStore(paths.unknown_store)
    rows = [ScoredRow(i, f"http://x/{i}.jpg", OK, label=UNKNOWN, sha256=f"{i:064x}",
                      image_format="JPEG", scored_at=stamp, top1_label="a", top1_conf=0.3)
            for i, stamp in enumerate(["2020-01-01T00:00:00+00:00", "2099-01-01T00:00:00+00:00"])]
    for row in rows:
        store.add(b"\xff\xd8\xff" + str(row.sha256).encode(), row)
    recent = store_photos(project, since_days=7)
    assert list(recent["sha256"]) == [rows[1].sha256]  # last seen within the week only
    assert Path(recent["path"][0]).read_bytes().startswith(b"\xff\xd8\xff")
    scored = pd.DataFrame({"sha256": [rows[0].sha256, "f" * 64], "label": ["UNKNOWN", "a"]})
    scored.to_parquet(tmp_path / "night.parquet")
    assert list(scored_photos(project, tmp_path / "night.parquet")["sha256"]) == [
        rows[0].sha256]


def test_review_page_proposes_clusters_and_sums_up_rejected_ones(tmp_path):
    from meterid.clustering.steps import ClusterOutcome, review_markdown

    summary = pd.DataFrame({
        "cluster_id": [-1, 0, 1], "size": [4, 9, 12], "status": ["noise", "candidate",
                                                                 "rejected"],
        "close_to": ["", "a (9)", "b (12)"],
        "sheet": [str(tmp_path / f"s{i}.png") for i in range(3)]})
    page = review_markdown(ClusterOutcome(tmp_path / "2026-11-23", pd.DataFrame(), summary, "v1"))
    assert "| 0 | 9 | candidate | a (9) |" in page and "| 1 |" not in page
    assert "12 photos matched clusters rejected earlier (ids 1)" in page
