"""benchmarks/real_photos.py on a few real photos of the grocery collection (../shared, skipped
where a clone has none): the collections it cuts and one group of variants end to end."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from benchmarks import (
    another_session,
    class_means,
    ece_noise,
    open_set_scores,
    paired_variants,
    prediction_sets,
    real_photos,
    unsure_rule,
)
from meterid.config import Params

GROCERY = real_photos.collection_dir()
needs_grocery = pytest.mark.skipif(not (GROCERY / "MANIFEST.csv").is_file(),
                                   reason=f"no real collection at {GROCERY}")
TINY = {"image_size": 64, "eval_image_size": None, "batch_size": 16, "workers": 0,
        "feature_views": 1, "view_budget": 0, "min_views_per_class": 0, "grayscale_head_views": 0,
        "channels_last": False, "phase1": {"epochs": 2}, "phase2": {"epochs": 1}}


@needs_grocery
def test_the_upstream_split_and_a_user_sized_cut_keep_test_photos_apart():
    upstream = real_photos.upstream_splits(GROCERY)
    assert len(upstream) == 1545 and upstream["label"].nunique() == 27
    assert upstream["split"].value_counts().to_dict() == {"train": 761, "test": 700, "val": 84}
    cut = real_photos.user_cut(upstream, seed=0)
    assert cut["label"].nunique() == real_photos.CUT_CLASSES
    assert set(cut["split"]) == {"train", "test"}  # a small collection has no validation
    train = cut[cut["split"] == "train"]["label"].value_counts()
    assert (train <= real_photos.CUT_RARE_TRAIN[1]).sum() >= real_photos.CUT_RARE
    assert train.max() <= real_photos.CUT_TRAIN[1]
    assert (cut[cut["split"] == "test"]["label"].value_counts() <= real_photos.CUT_TEST).all()
    upstream_test = set(upstream.loc[upstream["split"] == "test", "path"])
    assert set(cut.loc[cut["split"] == "test", "path"]) <= upstream_test
    assert not set(train.index) - set(upstream["label"])
    assert not set(cut.loc[cut["split"] == "train", "path"]) & upstream_test
    assert real_photos.user_cut(upstream, seed=0).equals(cut)  # the seed decides


@needs_grocery
def test_a_second_training_of_one_cut_keeps_the_cut_and_its_outputs_apart(
        params: Params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    first, second, upstream = real_photos.collections("cut:3,cut:3/1,upstream:0", GROCERY,
                                                      None, params, frame="4:3")
    assert first.splits.equals(second.splits)
    assert {c.frame for c in (first, second, upstream)} == {"4:3"}  # rows name their photos
    assert (first.train_seed, second.train_seed, upstream.train_seed) == (3, 1, 0)
    assert [c.name for c in (first, second, upstream)] == ["cut:3", "cut:3/1", "upstream:0"]
    monkeypatch.setenv("REAL_PHOTOS_OUTPUTS", str(tmp_path))
    assert real_photos._outputs_path(first, "defaults") == tmp_path / "cut3_defaults.npz"
    assert real_photos._outputs_path(second, "defaults") == tmp_path / "cut3t1_defaults.npz"
    with pytest.raises(ValueError, match="cut:3/3: cut:3 already trains with seed 3"):
        real_photos.collections("cut:3/3", GROCERY, None, params)


def test_a_reframed_collection_is_its_photos_centre_cropped_with_the_licence(tmp_path: Path):
    root = tmp_path / "collection"
    for folder, size in (("raw/a", (400, 400)), ("unseen/b", (300, 500))):
        (root / folder).mkdir(parents=True)
        photo = Image.new("RGB", size, "white")
        photo.paste((255, 0, 0), (0, 0, size[0], size[1] // 10))  # a red band along the top
        photo.save(root / folder / "1.jpg")
    (root / "MANIFEST.csv").write_text("devset_path,upstream_split\nraw/a/1.jpg,train\n")
    (root / "LICENSE.txt").write_text("MIT")

    framed = real_photos.reframed(root, "4:3", into=tmp_path / "framed")

    landscape, portrait = (Image.open(framed / p) for p in ("raw/a/1.jpg", "unseen/b/1.jpg"))
    assert landscape.size == (400, 300) and portrait.size == (300, 225)
    assert landscape.getpixel((200, 5))[1] > 200  # the top band cut away: the centre is kept
    assert (framed / "LICENSE.txt").read_text() == "MIT"
    assert real_photos.upstream_splits(framed)["path"].tolist() == ["a/1.jpg"]


def test_variants_share_a_cache_pass_unless_its_input_differs(params: Params):
    base = params.train.model_copy(update={"image_size": 256})  # neither variant's size
    names = ["defaults", "size288", "four_views", "one_stage", "smooth", "size224",
             "fixed_crop_ratio", "photos288", "photos352"]
    configs = {n: real_photos.variant_config(base, real_photos.VARIANTS[n], 0) for n in names}

    groups = real_photos.cache_groups(configs)

    # photos352 is today's read size: the defaults' pass; photos288 reads whole photos apart
    assert [list(group) for group in groups] == [["defaults", "four_views", "smooth",
                                                  "photos352"],
                                                 ["size288"], ["one_stage"], ["size224"],
                                                 ["fixed_crop_ratio"], ["photos288"]]
    assert groups[5]["photos288"].photo_size == 288 and groups[0]["defaults"].photo_size == 352
    assert groups[4]["fixed_crop_ratio"].augment.crop_ratio_at_aspect is None
    assert groups[1]["size288"].image_size == 288 and groups[0]["smooth"].image_size == 256
    for group in groups:  # each group is one pass the trainer accepts
        covering = real_photos.covering_cache_config(list(group.values()), pd.DataFrame(
            {"path": ["a.jpg"], "label": ["a"], "split": ["train"]}))
        assert covering.image_size == next(iter(group.values())).image_size


def _few_photos(tmp_path: Path) -> real_photos.Collection:
    """Three classes of two photos a split, and two unseen brands of three photos each."""
    upstream = real_photos.per_class_cap(real_photos.upstream_splits(GROCERY), 2)
    labels = sorted(upstream["label"].unique())[:3]
    unseen = tmp_path / "unseen"
    for brand in sorted(p for p in (GROCERY / "unseen").iterdir() if p.is_dir())[:2]:
        (unseen / brand.name).mkdir(parents=True)
        for photo in sorted(brand.glob("*.jpg"))[:3]:
            shutil.copy(photo, unseen / brand.name / photo.name)
    return real_photos.Collection("upstream", 0, GROCERY / "raw", unseen,
                                  upstream[upstream["label"].isin(labels)])


def _quick(params: Params) -> Params:
    return params.model_copy(update={"evaluate": params.evaluate.model_copy(
        update={"non_meter_scenes": 4})})


@pytest.mark.slow
@needs_grocery
def test_variants_on_one_cache_pass_give_every_figure(params: Params, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch):
    collection = _few_photos(tmp_path)
    monkeypatch.setenv("REAL_PHOTOS_TRAIN", json.dumps(TINY))
    monkeypatch.setenv("REAL_PHOTOS_OUTPUTS", str(tmp_path / "outputs"))

    rows = list(real_photos.run_group(collection, ["defaults", "four_views"], _quick(params),
                                      math.inf))

    assert [row["variant"] for row in rows] == ["defaults", "four_views"]
    assert [(row["frame"], row["training_seed"]) for row in rows] == [("as published", 0)] * 2
    rule = f"knn(k={params.evaluate.knn_k})"  # the UNKNOWN rule without held-out brands
    for row in rows:
        for key in ("accuracy", "macro_recall", "ece", "unknown_flagged_share",
                    "known_flagged_share", "auto_accept_share"):
            assert 0 <= row[key] <= 1, key
        assert 1 <= row["prediction_set_mean_size"] <= 3 and row["train_s"] > 0
        capabilities = {k: v for k, v in row.items() if k.startswith("open_set:")}
        assert {f"open_set:{rule}", "open_set:knn(k=5)", "open_set:max_logit",
                "open_set:relative_mahalanobis"} <= set(capabilities)
        assert all(0 <= v <= 1 for v in capabilities.values())
        assert capabilities[f"open_set:{rule}"] == row["unseen_flagged_at_5pct_known"]
    table = real_photos.summary_table(pd.DataFrame(rows))
    assert list(table["variant"]) == ["defaults", "four_views"]
    assert table["top-1"].str.contains("±").all() and np.all(table["runs"] == 1)
    saved = np.load(tmp_path / "outputs" / "upstream0_defaults.npz")
    assert len(saved["held_out_embeddings"]) == len(saved["held_out_brands"]) == 6
    assert len(saved["test_logits"]) == len(saved["test_targets"]) > 0
    assert rows[0]["validation_accuracy"] == pytest.approx(  # another session's photos
        np.mean(saved["val_logits"].argmax(1) == saved["val_targets"]))
    monkeypatch.setenv("OPEN_SET_PLOT", str(tmp_path / "by_brand.png"))
    tried = open_set_scores.run()  # reads the runs just saved
    assert {"knn(k=5)", "residual(64)", "knn(k=1) x msp", "pretrained knn(k=1)",
            "knn(k=1) x pretrained knn(k=1)"} <= set(tried.index)
    assert tried["mean"].between(0, 1).all() and (tried["min"] <= tried["max"]).all()
    assert tried.loc[rule, "mean"] == pytest.approx(  # the rule's score, as printed
        np.mean([r["unseen_flagged_at_5pct_known"] for r in rows]), abs=1e-3)
    assert (tmp_path / "by_brand.png").stat().st_size > 0
    scores = real_photos.open_set_table(pd.DataFrame(rows))
    assert len(scores) == 2 * len(capabilities) and (scores["runs"] == 1).all()
    monkeypatch.setenv("ECE_NOISE_PLOT", str(tmp_path / "ece_noise.png"))
    noise = ece_noise.run()  # the same runs: ECE on all their test photos beside its noise
    assert list(noise["run"]) == ["upstream0_defaults", "upstream0_four_views"]
    assert noise["ECE"].tolist() == pytest.approx([row["ece"] for row in rows])
    assert (noise["if calibrated"] <= noise["p95"]).all()
    assert (tmp_path / "ece_noise.png").stat().st_size > 0
    sets = prediction_sets.run()  # and the sets at each alpha, fitted as evaluation fits them
    assert len(sets) == 2 * len(prediction_sets.ALPHAS)
    for _, by_alpha in sets.groupby("run"):  # a larger alpha never asks for more labels
        assert by_alpha["set size"].is_monotonic_decreasing and (by_alpha["set size"] >= 1).all()
    unsure = unsure_rule.run()  # the UNKNOWN rule at its operating point, the unsure rule
    assert len(unsure) == 2 * 3 and unsure["known flagged"].between(0, 1).all()
    for _, by_rule in unsure.set_index("rule").groupby("run"):  # either flags what each does
        for column in ("known flagged", "unseen flagged"):
            assert by_rule.loc["either", column] >= by_rule[column].drop("either").max()
    sessions = another_session.run()  # the validation photos beside the test photos
    assert list(sessions["run"]) == ["upstream0_defaults", "upstream0_four_views"]
    assert sessions["top-1, another session"].tolist() == pytest.approx(
        [row["validation_accuracy"] for row in rows])
    assert sessions.filter(like="AUROC").stack().between(0, 1).all()
    assert sessions["flagged, unseen"].tolist() == pytest.approx(  # one threshold, both tables
        [row["unseen_flagged_at_5pct_known"] for row in rows])
    readers = class_means.run()  # and other readers of the same embeddings
    assert set(readers["reader"]) == {"head", "class mean", "knn(k=1)", "knn(k=5)"}
    head = readers[readers["reader"] == "head"]
    assert head["top-1"].tolist() == pytest.approx([row["accuracy"] for row in rows])


@pytest.mark.slow
@needs_grocery
def test_a_reading_is_the_variant_s_own_model_evaluated_at_another_setting(
        params: Params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("REAL_PHOTOS_TRAIN", json.dumps({**TINY, "eval_image_size": 96}))
    monkeypatch.setattr(real_photos, "READINGS", {"at96": {"eval_image_size": 96},
                                                  "at128": {"eval_image_size": 128}})
    monkeypatch.setenv("REAL_PHOTOS_READINGS", "at96,at128")
    monkeypatch.setenv("REAL_PHOTOS_OUTPUTS", str(tmp_path / "outputs"))

    rows = list(real_photos.run_group(_few_photos(tmp_path), ["defaults"], _quick(params),
                                      math.inf))

    assert [row["variant"] for row in rows] == ["defaults", "defaults@at96", "defaults@at128"]
    plain, again, larger = rows
    assert pd.Series(again).drop("variant").equals(  # the setting trained with: the same
        pd.Series(plain).drop("variant"))
    assert larger["train_s"] == plain["train_s"]  # one training, read twice
    assert larger["temperature"] > 0 and 0 <= larger["accuracy"] <= 1
    outputs = {v: np.load(tmp_path / "outputs" / f"upstream0_{v}.npz")
               for v in ("defaults", "defaults@at96", "defaults@at128")}
    for split in ("val_logits", "test_logits", "held_out_embeddings"):
        assert np.array_equal(outputs["defaults"][split], outputs["defaults@at96"][split])
        assert not np.allclose(outputs["defaults"][split], outputs["defaults@at128"][split])


def test_paired_variants_compare_each_collection_with_itself(tmp_path: Path):
    figures = {key: 0.5 for key in paired_variants.FIGURES}
    old = pd.DataFrame([  # a CSV from before the frame and the training seed were kept
        {"collection": "cut", "seed": 5, "variant": "a", **figures, "accuracy": 0.90},
        {"collection": "cut", "seed": 5, "variant": "b", **figures, "accuracy": 0.95},
        {"collection": "cut", "seed": 6, "variant": "a", **figures, "accuracy": 0.80}])
    new = pd.DataFrame([
        {"frame": "4:3", "collection": "cut", "seed": 5, "training_seed": 1, "variant": v,
         **figures, "accuracy": accuracy} for v, accuracy in (("a", 0.97), ("b", 0.96))])
    old.to_csv(tmp_path / "old.csv", index=False)
    new.to_csv(tmp_path / "new.csv", index=False)
    runs = paired_variants.read_runs([tmp_path / "old.csv", tmp_path / "new.csv"])

    pairs = paired_variants.paired(runs, "a", "b")

    # cut 6 ran one variant only; cut 5 at two training seeds is two pairs
    assert list(zip(pairs["frame"], pairs["training_seed"], strict=True)) == [
        ("4:3", 1), ("as published", 5)]
    assert pairs["accuracy:difference"].round(3).tolist() == [-0.01, 0.05]
    table = paired_variants.summary(pairs).set_index(["frame", "figure"])
    assert table.loc[("4:3", "top-1"), "mean difference"] == pytest.approx(-0.01)
    assert table.loc[("as published", "top-1"), "second higher"] == 1
    assert (table["pairs"] == 1).all() and (table["collection"] == "cut").all()
    assert table.loc[("4:3", "ECE"), "mean difference"] == 0
    paired_variants.plot(pairs, "a", "b", tmp_path / "pairs.png")
    assert Image.open(tmp_path / "pairs.png").size[0] > 0


def test_every_variant_is_a_training_config_and_the_two_stage_ones_share_a_pass(params: Params):
    configs = {name: real_photos.variant_config(params.train, overrides, 0)  # a typo raises
               for name, overrides in real_photos.VARIANTS.items()}
    assert configs["two_stages_e4"] == configs["defaults"]  # the defaults since step 29
    assert configs["one_stage"].phase2.epochs == 8 == configs["round_21"].phase2.epochs
    for before in ("round_21", "round_20"):  # as then: whole photos read at the training
        # size, one crop range for every photo's shape
        assert configs[before].photo_size == 224
        assert configs[before].augment.crop_ratio_at_aspect is None
    groups = real_photos.cache_groups({n: configs[n] for n in ("defaults", "two_stages",
                                                               "one_stage", "round_21")})
    assert [list(group) for group in groups] == [["defaults", "two_stages"], ["one_stage"],
                                                 ["round_21"]]


def test_a_run_without_validation_photos_has_no_other_session(tmp_path: Path):
    """A cut has no validation photos: evaluation put its test photos in their place, and
    another_session must not read them as another session's."""
    rng = np.random.default_rng(0)
    outputs = {f"{split}_{part}": rng.random((4, 3)).astype(np.float32)
               for split in ("test", "held_out") for part in ("logits", "probabilities",
                                                               "embeddings")}
    for part in ("logits", "probabilities", "embeddings"):
        outputs[f"val_{part}"] = outputs[f"test_{part}"]
    path = tmp_path / "cut0_defaults.npz"
    np.savez(path, **outputs, test_targets=np.arange(4) % 3, val_targets=np.arange(4) % 3,
             reference_embeddings=rng.random((6, 3)), reference_labels=np.arange(6) % 3,
             temperature=1.0)
    assert another_session.run_rows(path) == []
    np.savez(path, **{**outputs, "val_logits": rng.random((4, 3)),
                      "val_embeddings": rng.random((4, 3))},
             test_targets=np.arange(4) % 3, val_targets=np.arange(4) % 3,
             reference_embeddings=rng.random((6, 3)), reference_labels=np.arange(6) % 3,
             temperature=1.0)
    [row] = another_session.run_rows(path)
    assert 0 <= row["flagged, another session"] <= 1
