"""The adaptive split: regimes, fractions, determinism, duplicate groups, table and chart."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from meterid.config import SplitConfig
from meterid.data.duplicates import near_duplicate_pairs
from meterid.data.split import (
    OUTPUT_COLUMNS,
    SplitError,
    assign_splits,
    format_split_table,
    plot_class_balance,
    read_splits,
    split_table,
    split_targets,
    write_splits,
)

CFG = SplitConfig(seed=42, low=10, high=30, medium_test_fraction=0.25, large_val_fraction=0.15,
                  large_test_fraction=0.15, near_duplicate_max_distance=4)


def _phashes(n: int, seed: int = 0) -> list[str]:
    """``n`` random 64-bit phashes, all pairwise farther apart than any threshold used here."""
    values = np.random.default_rng(seed).integers(0, 2**64, size=n, dtype=np.uint64)
    hashes = [f"{int(v):016x}" for v in values]
    assert len(near_duplicate_pairs(hashes, 12)) == 0
    return hashes


def _manifest(counts: dict[str, int], seed: int = 0) -> pd.DataFrame:
    """Distinct images (unique sha256, far-apart phashes): ``counts[label]`` per class."""
    labels = [label for label, n in counts.items() for _ in range(n)]
    idx = [i for n in counts.values() for i in range(n)]
    return pd.DataFrame({
        "path": [f"{label}/{i:03d}.jpg" for label, i in zip(labels, idx, strict=True)],
        "label": labels,
        "sha256": [f"{k:064x}" for k in range(len(labels))],
        "phash": _phashes(len(labels), seed),
    })


def _flip(phash: str, bits: list[int]) -> str:
    value = int(phash, 16)
    for bit in bits:
        value ^= 1 << bit
    return f"{value:016x}"


def _counts(splits: pd.DataFrame) -> dict[str, dict[str, int]]:
    table = split_table(splits).drop(index="total")
    return {str(label): {k: int(v) for k, v in row.items()} for label, row in table.iterrows()}


def _assert_groups_in_one_split(splits: pd.DataFrame) -> None:
    per_group = splits.groupby("group")["split"].nunique()
    assert (per_group == 1).all(), per_group[per_group > 1]


def test_regimes_at_threshold_edges():
    splits = assign_splits(_manifest({"a": 9, "b": 10, "c": 30, "d": 31}), CFG)

    regimes = splits.groupby("label")["class_regime"].unique().map(list).to_dict()
    assert regimes == {"a": ["train_only"], "b": ["train_test"], "c": ["train_test"],
                       "d": ["train_val_test"]}
    counts = _counts(splits)
    assert counts["a"] == {"train": 9, "val": 0, "test": 0, "total": 9}
    assert counts["b"] == {"train": 7, "val": 0, "test": 3, "total": 10}  # 2.5 rounds up
    assert counts["c"] == {"train": 22, "val": 0, "test": 8, "total": 30}  # 7.5 rounds up
    assert counts["d"] == {"train": 21, "val": 5, "test": 5, "total": 31}  # 4.65 -> 5
    assert list(splits.columns) == OUTPUT_COLUMNS


def test_fractions_on_a_large_class():
    counts = _counts(assign_splits(_manifest({"big": 200}), CFG))
    assert counts["big"] == {"train": 140, "val": 30, "test": 30, "total": 200}


def test_minimum_one_image_in_each_held_out_split():
    cfg = CFG.model_copy(update=dict(low=2, high=3, medium_test_fraction=0.01,
                                     large_val_fraction=0.01, large_test_fraction=0.01))
    counts = _counts(assign_splits(_manifest({"small": 2, "medium": 3, "large": 4}), cfg))
    assert counts["small"] == {"train": 1, "val": 0, "test": 1, "total": 2}
    assert counts["medium"] == {"train": 2, "val": 0, "test": 1, "total": 3}
    assert counts["large"] == {"train": 2, "val": 1, "test": 1, "total": 4}


def test_train_keeps_at_least_one_image_with_large_fractions():
    cfg = CFG.model_copy(update=dict(low=2, high=3, medium_test_fraction=0.9,
                                     large_val_fraction=0.45, large_test_fraction=0.45))
    assert split_targets(2, "train_test", cfg).test == 1
    targets = split_targets(4, "train_val_test", cfg)
    assert (targets.val, targets.test) == (1, 2)
    counts = _counts(assign_splits(_manifest({"medium": 3, "large": 4}), cfg))
    assert counts["medium"] == {"train": 1, "val": 0, "test": 2, "total": 3}
    assert counts["large"] == {"train": 1, "val": 1, "test": 2, "total": 4}


@pytest.mark.parametrize("update, match", [
    (dict(low=1), "split.low"),
    (dict(low=10, high=9), "split.high"),
    (dict(large_val_fraction=0.5, large_test_fraction=0.5), "must be below 1"),
])
def test_unusable_config_is_rejected(update: dict, match: str):
    with pytest.raises(SplitError, match=match):
        assign_splits(_manifest({"a": 40}), CFG.model_copy(update=update))


def test_missing_columns_are_named():
    with pytest.raises(SplitError, match="phash"):
        assign_splits(_manifest({"a": 5}).drop(columns="phash"), CFG)


def test_deterministic_for_a_seed_and_different_for_another():
    manifest = _manifest({"a": 12, "b": 31, "c": 80})
    first = assign_splits(manifest, CFG)
    pd.testing.assert_frame_equal(first, assign_splits(manifest, CFG))

    other = assign_splits(manifest, CFG.model_copy(update=dict(seed=7)))
    assert not first["split"].equals(other["split"])
    assert _counts(first) == _counts(other)  # same targets, different images


def test_independent_of_manifest_row_order():
    manifest = _manifest({"a": 12, "b": 31, "c": 80})
    manifest.loc[20, "phash"] = manifest.loc[40, "phash"]  # a group, so group ids are tested too
    shuffled = manifest.sample(frac=1, random_state=3)
    shuffled = shuffled.reset_index(drop=True)
    assert not shuffled["path"].equals(manifest["path"])
    pd.testing.assert_frame_equal(assign_splits(manifest, CFG), assign_splits(shuffled, CFG))


def test_a_class_split_does_not_depend_on_other_classes():
    alone = assign_splits(_manifest({"b": 40}), CFG)
    with_others = assign_splits(_manifest({"a": 25, "b": 40}), CFG)
    b = with_others[with_others["label"] == "b"].reset_index(drop=True)
    assert alone.set_index("path")["split"].equals(b.set_index("path")["split"])


@pytest.mark.parametrize("seed", range(10))
def test_exact_copies_inside_a_class_are_kept_once(seed: int):
    manifest = _manifest({"a": 20, "b": 70}, seed=seed)
    for start in range(20, 60, 4):  # b: ten groups of 4 identical files
        manifest.loc[start:start + 3, "sha256"] = manifest.loc[start, "sha256"]
    manifest.loc[[0, 1, 2], "sha256"] = manifest.loc[0, "sha256"]  # a: one group of 3

    splits = assign_splits(manifest, CFG.model_copy(update=dict(seed=seed)))

    kept = manifest.set_index("path").loc[splits["path"]]
    assert len(splits) == 90 - 10 * 3 - 2 and not kept["sha256"].duplicated().any()
    first_of_each = manifest.sort_values("path").drop_duplicates(["sha256", "label"])["path"]
    assert set(splits["path"]) == set(first_of_each)
    assert set(splits.loc[splits["label"] == "b", "split"]) == {"train", "val", "test"}


def test_the_same_bytes_under_two_labels_share_a_split():
    manifest = _manifest({"a": 40, "b": 40})
    manifest.loc[45, "sha256"] = manifest.loc[5, "sha256"]  # one of b is a copy of one of a
    splits = assign_splits(manifest, CFG).set_index("path")
    pair = manifest.loc[[5, 45], "path"]
    assert splits.loc[pair, "group"].nunique() == 1 and splits.loc[pair, "split"].nunique() == 1


@pytest.mark.parametrize("seed", range(10))
def test_near_duplicates_share_a_split(seed: int):
    manifest = _manifest({"a": 60}, seed=seed)
    base = manifest.loc[0, "phash"]
    manifest.loc[1, "phash"] = _flip(base, [0, 9, 33, 63])  # distance 4: near
    manifest.loc[2, "phash"] = _flip(manifest.loc[1, "phash"], [5])  # chained through row 1
    for row in range(10, 50, 5):  # eight more near groups of 3
        for k, bits in enumerate(([1], [2, 3]), start=1):
            manifest.loc[row + k, "phash"] = _flip(manifest.loc[row, "phash"], bits)
    manifest.loc[59, "phash"] = _flip(manifest.loc[58, "phash"], [0, 1, 2, 3, 4])  # 5: not near

    splits = assign_splits(manifest, CFG.model_copy(update=dict(seed=seed)))

    _assert_groups_in_one_split(splits)
    group = splits.set_index("path")["group"]
    paths = manifest["path"]
    assert group[paths[0]] == group[paths[1]] == group[paths[2]]
    for row in range(10, 50, 5):
        assert group[paths[row]] == group[paths[row + 1]] == group[paths[row + 2]]
    assert group[paths[58]] != group[paths[59]]
    assert splits["group"].nunique() == 60 - 2 - 8 * 2


def test_duplicate_groups_never_leak_across_seeds():
    """Triples chained by near phashes (an exact copy in a class is dropped, see above): for
    every seed each stays whole."""
    manifest = _manifest({"a": 45, "b": 15})
    triples = [list(manifest.loc[row:row + 2, "path"]) for row in range(0, 45, 3)]
    for row in range(0, 45, 3):
        manifest.loc[row + 1, "phash"] = _flip(manifest.loc[row, "phash"], [7])
        manifest.loc[row + 2, "phash"] = _flip(manifest.loc[row + 1, "phash"], [11])
    for seed in range(25):
        splits = assign_splits(manifest, CFG.model_copy(update=dict(seed=seed)))
        split = splits.set_index("path")["split"]
        assert all(split[t].nunique() == 1 for t in triples)
        _assert_groups_in_one_split(splits)
        assert set(split[manifest["path"][:45]]) == {"train", "val", "test"}


def test_group_spanning_labels_follows_first_row_and_stays_whole():
    manifest = _manifest({"a": 40, "b": 40})
    b_rows = manifest.index[manifest["label"] == "b"]
    # Each of three "b" images duplicates an "a" image: "a/..." sorts first, so "a" owns them.
    for a_row, b_row in zip([0, 1, 2], b_rows[:3], strict=True):
        manifest.loc[b_row, "sha256"] = manifest.loc[a_row, "sha256"]
    for seed in range(10):
        splits = assign_splits(manifest, CFG.model_copy(update=dict(seed=seed)))
        _assert_groups_in_one_split(splits)
        spanning = splits.groupby("group")["label"].nunique()
        assert (spanning > 1).sum() == 3
    # Their labels and regimes are kept as they are.
    assert (splits["label"].value_counts() == 40).all()
    assert set(splits["class_regime"]) == {"train_val_test"}


def test_a_group_larger_than_the_target_is_not_forced_into_test():
    manifest = _manifest({"a": 12})
    manifest.loc[0:10, "phash"] = manifest.loc[0, "phash"]  # 11 look-alikes + 1 other image
    counts = _counts(assign_splits(manifest, CFG))
    assert counts["a"] == {"train": 11, "val": 0, "test": 1, "total": 12}


def test_one_group_holding_a_whole_class_stays_in_train(caplog: pytest.LogCaptureFixture):
    manifest = _manifest({"a": 12})
    manifest["phash"] = manifest.loc[0, "phash"]  # look-alikes (exact copies would be dropped)
    with caplog.at_level(logging.WARNING, logger="meterid.data.split"):
        splits = assign_splits(manifest, CFG)
    assert set(splits["split"]) == {"train"}
    assert "too large" in caplog.text


def test_groups_all_larger_than_the_target_still_fill_test():
    manifest = _manifest({"a": 12})
    for start in range(0, 12, 4):  # three groups of 4; test target is 3
        manifest.loc[start:start + 3, "phash"] = manifest.loc[start, "phash"]
    counts = _counts(assign_splits(manifest, CFG))
    assert counts["a"] == {"train": 8, "val": 0, "test": 4, "total": 12}


def test_error_rows_are_excluded_and_reported(caplog: pytest.LogCaptureFixture):
    manifest = _manifest({"a": 10, "b": 31})
    manifest["error"] = None
    manifest.loc[[0, 11], "error"] = ["cannot identify image file", "truncated"]
    manifest.loc[12, "error"] = ""  # empty text is no error (how a CSV round trip may read)
    bad = set(manifest.loc[[0, 11], "path"])

    with caplog.at_level(logging.WARNING, logger="meterid.data.split"):
        splits = assign_splits(manifest, CFG)

    assert len(splits) == 41 - 2
    assert not bad & set(splits["path"])
    assert "excluded 2" in caplog.text and all(path in caplog.text for path in bad)
    regimes = splits.groupby("label")["class_regime"].first().to_dict()
    assert regimes == {"a": "train_only", "b": "train_test"}  # counted after exclusion: 9, 30


def test_all_rows_excluded_gives_an_empty_split():
    manifest = _manifest({"a": 3}).assign(error="unreadable")
    splits = assign_splits(manifest, CFG)
    assert splits.empty and list(splits.columns) == OUTPUT_COLUMNS


def test_table_totals():
    splits = assign_splits(_manifest({"a": 5, "b": 20, "c": 50}), CFG)
    table = split_table(splits)

    assert list(table.columns) == ["train", "val", "test", "total"]
    assert list(table.index) == ["c", "b", "a", "total"]  # largest class first
    body = table.drop(index="total")
    assert (body[["train", "val", "test"]].sum(axis=1) == body["total"]).all()
    assert table.loc["total"].tolist() == body.sum(axis=0).tolist()
    assert table.loc["total", "total"] == len(splits) == 75
    assert table.loc["total", "train"] == (splits["split"] == "train").sum()
    text = format_split_table(table)
    assert "total" in text and text.splitlines()[0].split() == ["train", "val", "test", "total"]


def test_write_splits_round_trip(tmp_path: Path):
    splits = assign_splits(_manifest({"a": 5, "b": 40}), CFG)
    path = write_splits(splits, tmp_path / "nested" / "splits.csv")
    assert path.is_file()
    pd.testing.assert_frame_equal(read_splits(path).astype(splits.dtypes.to_dict()), splits,
                                  check_dtype=False)


def test_labels_that_look_like_missing_values_or_numbers_keep_their_spelling(tmp_path: Path):
    labels = ["NaN", "NA", "None", "null", "001"]
    splits = assign_splits(_manifest({label: 12 for label in labels}), CFG)
    back = read_splits(write_splits(splits, tmp_path / "splits.csv"))
    assert sorted(back["label"].unique()) == sorted(labels)
    assert back["label"].map(type).eq(str).all()


def test_class_balance_png_is_written(tmp_path: Path):
    counts = {f"brand_{i:02d}": int(n) for i, n in enumerate(np.geomspace(200, 4, 40))}
    splits = assign_splits(_manifest(counts), CFG)
    out = plot_class_balance(splits, tmp_path / "reports" / "class_balance.png")
    data = out.read_bytes()
    assert out == tmp_path / "reports" / "class_balance.png"
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def test_library_does_not_switch_the_pyplot_backend():
    import subprocess
    import sys

    code = ("import matplotlib; before = matplotlib.get_backend(); "
            "import meterid.data.split; import sys; "
            "assert matplotlib.get_backend() == before; assert 'prefect' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_an_unreadable_perceptual_hash_is_left_out_and_said(caplog: pytest.LogCaptureFixture):
    from meterid.data.duplicates import phash_to_uint64

    values, valid = phash_to_uint64(["ff00ff00ff00ff00", "not-hex", None])
    assert valid.tolist() == [True, False, False] and int(values[0]) == 0xFF00FF00FF00FF00
    assert "1 perceptual hash(es) are not hex ('not-hex')" in caplog.text
