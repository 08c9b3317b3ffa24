"""A split given by a CSV: kept as written, checked against the manifest, the same output as the
adaptive split; the `meterid split --given-csv` command; real grocery photos with their upstream
split."""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from meterid.config import Params, SplitConfig, load_params
from meterid.data.split import (
    OUTPUT_COLUMNS,
    SplitError,
    given_splits,
    read_given_csv,
    read_splits,
    split_table,
)
from tests.conftest import REPO_ROOT, write_params
from tests.data.conftest import make_dataset

CFG = SplitConfig(seed=42, low=10, high=30, medium_test_fraction=0.25, large_val_fraction=0.15,
                  large_test_fraction=0.15, near_duplicate_max_distance=4,
                  given_csv=Path("fixed.csv"))
GROCERY = REPO_ROOT.parent / "shared" / "data" / "grocery"  # /work/shared beside /work/main


def _manifest(counts: dict[str, int]) -> pd.DataFrame:
    """Distinct photos (unique sha256, phashes far apart): ``counts[label]`` per class."""
    paths = [f"{label}/{i}.jpg" for label, n in counts.items() for i in range(n)]
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "path": paths,
        "label": [p.split("/")[0] for p in paths],
        "sha256": [f"{k:064x}" for k in range(len(paths))],
        "phash": [f"{int(v):016x}" for v in rng.integers(0, 2**64, len(paths), dtype=np.uint64)],
    })


def _given(rows: dict[str, str]) -> pd.DataFrame:
    """A given-split CSV as read: path -> split value, every cell text."""
    return pd.DataFrame({"path": list(rows), "split": list(rows.values())})


GOOD = {"a/0.jpg": "train", "a/1.jpg": "Train", "a/2.jpg": "val", "a/3.jpg": "TEST",
        "b/0.jpg": "train", "b/1.jpg": "test", "b/2.jpg": " train ", "c/0.jpg": "train"}


def test_given_split_is_kept_with_the_adaptive_columns():
    """Each photo keeps its given split (any case, spaces ignored); labels come from the
    manifest, never from a label column of the CSV; regimes say which splits a class got."""
    given = _given(GOOD).assign(label="wrong")
    splits = given_splits(_manifest({"a": 4, "b": 3, "c": 1}), given, CFG)

    assert list(splits.columns) == OUTPUT_COLUMNS
    assert dict(zip(splits["path"], splits["split"], strict=True)) == {
        "a/0.jpg": "train", "a/1.jpg": "train", "a/2.jpg": "val", "a/3.jpg": "test",
        "b/0.jpg": "train", "b/1.jpg": "test", "b/2.jpg": "train", "c/0.jpg": "train"}
    assert set(splits["label"]) == {"a", "b", "c"}
    regimes = splits.groupby("label")["class_regime"].first().to_dict()
    assert regimes == {"a": "train_val_test", "b": "train_test", "c": "train_only"}
    assert splits["group"].nunique() == len(splits)
    assert split_table(splits).loc["total"].to_dict() == {"train": 5, "val": 1, "test": 2,
                                                          "total": 8}


@pytest.mark.parametrize("value", ["validation", "Validation", "VAL", "val"])
def test_validation_is_read_as_val(value: str):
    splits = given_splits(_manifest({"a": 2}), _given({"a/0.jpg": "train", "a/1.jpg": value}),
                          CFG)
    assert splits.set_index("path").at["a/1.jpg", "split"] == "val"
    assert splits["class_regime"].unique().tolist() == ["train_val"]


def test_unknown_split_value_names_csv_column_and_lines():
    rows = {**GOOD, "a/1.jpg": "tset", "b/2.jpg": ""}
    with pytest.raises(SplitError) as error:
        given_splits(_manifest({"a": 4, "b": 3, "c": 1}), _given(rows), CFG)
    message = str(error.value)
    assert message.startswith("fixed.csv, column 'split': 2 row(s) name no split")
    assert "line 3 ('tset'), line 8 ('')" in message


def test_manifest_photo_without_a_row_is_an_error():
    rows = {k: v for k, v in GOOD.items() if k != "b/1.jpg"}
    with pytest.raises(SplitError, match=r"fixed\.csv, column 'path': 1 photo\(s\) of the image "
                       r"folder have no row.*b/1\.jpg"):
        given_splits(_manifest({"a": 4, "b": 3, "c": 1}), _given(rows), CFG)


def test_row_naming_no_photo_of_the_manifest_is_an_error():
    rows = {**GOOD, "c/9.jpg": "test", "d/0.jpg": "train"}
    with pytest.raises(SplitError, match=r"fixed\.csv, column 'path': 2 row\(s\) name no photo.*"
                       r"line 10 \('c/9\.jpg'\), line 11 \('d/0\.jpg'\)"):
        given_splits(_manifest({"a": 4, "b": 3, "c": 1}), _given(rows), CFG)


def test_photo_on_two_rows_is_an_error():
    given = pd.concat([_given(GOOD), _given({"a/3.jpg": "train"})], ignore_index=True)
    with pytest.raises(SplitError, match=r"1 photo\(s\) on more than one row: "
                       r"line 5 \('a/3\.jpg'\), line 10 \('a/3\.jpg'\)"):
        given_splits(_manifest({"a": 4, "b": 3, "c": 1}), given, CFG)


def test_class_without_a_train_photo_is_an_error():
    rows = {**GOOD, "b/0.jpg": "val", "b/2.jpg": "test"}
    with pytest.raises(SplitError, match=r"fixed\.csv, column 'split': 1 class\(es\) without a "
                       r"train photo.*'b' \(val 1, test 2\)"):
        given_splits(_manifest({"a": 4, "b": 3, "c": 1}), _given(rows), CFG)


def test_missing_column_lists_the_columns():
    given = _given(GOOD).rename(columns={"split": "subset"})
    with pytest.raises(SplitError, match=r"no column\(s\) \['split'\]; its columns are "
                       r"\['path', 'subset'\]"):
        given_splits(_manifest({"a": 4, "b": 3, "c": 1}), given, CFG)


def test_duplicates_across_splits_are_kept_with_a_warning(caplog: pytest.LogCaptureFixture):
    """a/1 is a near copy of a/3 (phash 2 bits apart), b/1 the same bytes as a/2: both groups
    straddle splits; the user's split stands and the warning names both."""
    manifest = _manifest({"a": 4, "b": 3, "c": 1})
    phash = int(manifest.at[3, "phash"], 16) ^ 0b11
    manifest.loc[1, "phash"] = f"{phash:016x}"
    manifest.loc[5, "sha256"] = manifest.at[2, "sha256"]
    with caplog.at_level(logging.WARNING, logger="meterid.data.split"):
        splits = given_splits(manifest, _given(GOOD), CFG)

    assert splits.set_index("path")["split"].to_dict() == {
        k: v.strip().lower() for k, v in GOOD.items()}
    assert splits.groupby("group")["split"].nunique().max() == 2
    assert "fixed.csv: 2 duplicate group(s) (same bytes, or phash within 4 bits) span" in \
        caplog.text
    assert "train a/1.jpg ~ test a/3.jpg" in caplog.text
    assert "val a/2.jpg ~ test b/1.jpg" in caplog.text


def test_paths_under_the_image_folders_name(caplog: pytest.LogCaptureFixture):
    """A CSV written one folder up (raw/<class>/<photo>) matches; its rows in another folder
    are outside the image folder, left out and logged."""
    rows = {f"raw/{k}": v for k, v in GOOD.items()} | {"unseen/x/0.jpg": "test"}
    with caplog.at_level(logging.INFO, logger="meterid.data.split"):
        splits = given_splits(_manifest({"a": 4, "b": 3, "c": 1}), _given(rows), CFG, "raw")
    assert splits.set_index("path").at["a/3.jpg", "split"] == "test"
    assert "1 row(s) outside the image folder 'raw' left out: unseen/x/0.jpg" in caplog.text
    with pytest.raises(SplitError, match=r"9 row\(s\) name no photo.*or photos/<class>/<photo>\): "
                       r"line 2 \('raw/a/0\.jpg'\)"):
        given_splits(_manifest({"a": 4, "b": 3, "c": 1}), _given(rows), CFG, "photos")


def test_unreadable_photos_and_copies_in_a_class_are_left_out_as_in_the_adaptive_split():
    manifest = _manifest({"a": 4, "b": 3, "c": 1}).assign(error="")
    manifest.loc[0, "error"] = "truncated"
    manifest.loc[4, "sha256"] = manifest.at[5, "sha256"]  # b/0 and b/1: the same bytes
    rows = {k: v for k, v in GOOD.items() if k != "a/0.jpg"}  # an unreadable photo needs no row
    splits = given_splits(manifest, _given(rows), CFG)
    assert "a/0.jpg" not in set(splits["path"]) and "b/1.jpg" not in set(splits["path"])
    assert len(splits) == 6


def test_params_without_the_given_keys_still_parse(tmp_path: Path, params: Params):
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    assert raw["split"]["given_csv"] is None
    for key in ("given_csv", "given_column", "given_path_column"):
        del raw["split"][key]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    split = load_params(tmp_path / "params.yaml").split
    assert (split.given_csv, split.given_column, split.given_path_column) == (None, "split",
                                                                              "path")


def _cli_project(tmp_path: Path, params: Params, monkeypatch: pytest.MonkeyPatch) -> Path:
    make_dataset(tmp_path / "data" / "raw")  # acme-a1, beta-b2, gamma-g3: img_0..2 each
    write_params(tmp_path, params)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_cli_given_csv_overrides_params(tmp_path: Path, params: Params,
                                        monkeypatch: pytest.MonkeyPatch):
    """`meterid split --given-csv` writes the given split where the adaptive one goes, with its
    chart; a bad CSV is exit 2 naming it, and splits.csv is left as it was."""
    from typer.testing import CliRunner

    from meterid.cli import app

    project = _cli_project(tmp_path, params, monkeypatch)
    wanted = {f"{label}/img_{i}.{'png' if i % 2 else 'jpeg'}": split
              for label in ("acme-a1", "beta-b2", "gamma-g3")
              for i, split in enumerate(("train", "validation", "test"))}
    pd.DataFrame({"file": list(wanted), "subset": list(wanted.values())}).to_csv(
        project / "fixed.csv", index=False)

    result = CliRunner().invoke(app, ["split", "--given-csv", "fixed.csv", "--given-column",
                                      "subset", "--given-path-column", "file"])
    assert result.exit_code == 0, result.output
    splits = read_splits(project / "data" / "splits.csv")
    assert dict(zip(splits["path"], splits["split"], strict=True)) == {
        k: v.replace("validation", "val") for k, v in wanted.items()}
    assert (project / "reports" / "split" / "class_balance.png").is_file()

    bad = CliRunner().invoke(app, ["split", "--given-csv", "fixed.csv"])
    assert bad.exit_code == 2
    assert "fixed.csv: no column(s) ['path', 'split']" in bad.output
    assert read_splits(project / "data" / "splits.csv").equals(splits)


def test_params_given_csv_is_enough(tmp_path: Path, params: Params,
                                    monkeypatch: pytest.MonkeyPatch):
    """split.given_csv in params.yaml, no option: what the Prefect flow and dvc's stage run."""
    from meterid.data.steps import split_dataset

    project = _cli_project(tmp_path, params, monkeypatch)
    photos = sorted(p.relative_to(project / "data" / "raw").as_posix()
                    for p in (project / "data" / "raw").rglob("img_*"))
    pd.DataFrame({"path": photos, "split": "train"}).to_csv(project / "all_train.csv",
                                                             index=False)
    cfg = load_params(write_params(project, params.model_copy(update={"split": (
        params.split.model_copy(update={"given_csv": Path("all_train.csv")}))}))).split
    splits = split_dataset(Path("data/raw"), Path("data/manifest.csv"), Path("data/splits.csv"),
                           Path("reports/split"), params.validate_, cfg)
    assert set(splits["split"]) == {"train"} and len(splits) == len(photos) == 9
    assert set(splits["class_regime"]) == {"train_only"}


@pytest.mark.skipif(not (GROCERY / "MANIFEST.csv").is_file(),
                    reason=f"{GROCERY} absent: the real grocery photos live in ../shared, which "
                    "a clone of the repository alone does not have")
def test_grocery_photos_keep_their_upstream_split(tmp_path: Path, params: Params,
                                                  monkeypatch: pytest.MonkeyPatch):
    """Real photos (3 classes of the Grocery Store Dataset, a few per upstream split) and the
    collection's own MANIFEST.csv rows, unseen/ rows included: every photo keeps its upstream
    split, and the labels are the folders."""
    from meterid.data.steps import split_dataset

    classes = ("Alpro-Blueberry-Soyghurt", "Alpro-Fresh-Soy-Milk", "Arla-Medium-Fat-Milk")
    with (GROCERY / "MANIFEST.csv").open(newline="") as file:
        reader = csv.DictReader(file)
        header, every = reader.fieldnames, list(reader)
    picked = [row for label in classes for split in ("train", "val", "test")
              for row in [r for r in every if r["fine_class"] == label
                          and r["upstream_split"] == split][:3]]
    picked.append(next(r for r in every if r["devset_path"].startswith("unseen/")))
    assert header is not None
    for row in picked[:-1]:
        target = tmp_path / "data" / row["devset_path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(GROCERY / row["devset_path"], target)
    with (tmp_path / "MANIFEST.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, header)
        writer.writeheader()
        writer.writerows(picked)
    monkeypatch.chdir(tmp_path)

    cfg = params.split.model_copy(update=dict(given_csv=Path("MANIFEST.csv"),
                                              given_column="upstream_split",
                                              given_path_column="devset_path"))
    splits = split_dataset(Path("data/raw"), Path("data/manifest.csv"), Path("data/splits.csv"),
                           Path("reports/split"), params.validate_, cfg)
    expected = {r["devset_path"].removeprefix("raw/"): r["upstream_split"] for r in picked[:-1]}
    assert dict(zip(splits["path"], splits["split"], strict=True)) == expected
    assert (splits["label"] == splits["path"].str.split("/").str[0]).all()
    assert split_table(splits).loc[list(classes), ["train", "val", "test"]].to_dict(
        "list") == {"train": [3, 3, 3], "val": [3, 0, 3], "test": [3, 3, 3]}
    assert dict(splits.groupby("label")["class_regime"].first()) == {
        "Alpro-Blueberry-Soyghurt": "train_val_test", "Alpro-Fresh-Soy-Milk": "train_test",
        "Arla-Medium-Fat-Milk": "train_val_test"}
    assert read_given_csv(Path("MANIFEST.csv")).shape == (len(picked), len(header))
