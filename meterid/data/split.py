"""Adaptive train/val/test split for a highly imbalanced image dataset.

Each class gets a regime by its image count ``n`` (thresholds in ``params.yaml``, ``split``):

- ``n < low``: ``train_only`` (too few images to hold any out);
- ``low <= n <= high``: ``train_test`` (``medium_test_fraction`` to test);
- ``n > high``: ``train_val_test`` (``large_val_fraction`` and ``large_test_fraction``).

A class that has a held-out split gets at least one image in it, and train always keeps at least
one. Exact duplicates (same sha256) and near-duplicates (phash within
``near_duplicate_max_distance``) form groups that are assigned whole, so no image has a copy in
another split. The result depends only on the seed and the set of rows, not on their order.

A split can also be given (``split.given_csv``): a CSV names each photo's split, for a user who
must keep a fixed (e.g. published) test set. ``given_splits`` checks it against the manifest and
returns the same columns, so nothing downstream knows which kind of split it reads.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from meterid.config import SplitConfig
from meterid.data.duplicates import duplicate_groups

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
REGIMES = ("train_only", "train_test", "train_val_test")
OUTPUT_COLUMNS = ["path", "label", "split", "group", "class_regime"]
_REQUIRED_COLUMNS = ("path", "label", "sha256", "phash")
_SPLIT_COLORS = {"train": "#4C72B0", "val": "#DD8452", "test": "#55A868"}


class SplitError(ValueError):
    """The manifest or the split parameters cannot produce a valid split."""


@dataclass(frozen=True)
class _Targets:
    """Images wanted in the held-out splits of one class; train takes the rest."""

    test: int
    val: int


def check_split_config(config: SplitConfig) -> None:
    """Reject thresholds that cannot honour the minimum-one rules."""
    if config.low < 2:
        raise SplitError(f"split.low={config.low}: must be at least 2, so that a train_test "
                         "class can keep one image in train and one in test")
    if config.high < config.low:
        raise SplitError(f"split.high={config.high} is below split.low={config.low}; "
                         "set high >= low")
    if config.large_val_fraction + config.large_test_fraction >= 1:
        raise SplitError("split.large_val_fraction + split.large_test_fraction = "
                         f"{config.large_val_fraction + config.large_test_fraction:g}: "
                         "must be below 1 so that train keeps images")


def class_regime(n: int, config: SplitConfig) -> str:
    """The regime of a class with ``n`` images."""
    if n < config.low:
        return "train_only"
    if n <= config.high:
        return "train_test"
    return "train_val_test"


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def split_targets(n: int, regime: str, config: SplitConfig) -> _Targets:
    """Target test/val counts: the configured fractions, at least 1 each, train keeps >= 1."""
    if regime == "train_only":
        return _Targets(test=0, val=0)
    if regime == "train_test":
        return _Targets(test=min(max(1, _round_half_up(n * config.medium_test_fraction)), n - 1),
                        val=0)
    test = max(1, _round_half_up(n * config.large_test_fraction))
    val = max(1, _round_half_up(n * config.large_val_fraction))
    while test + val > n - 1 and (val > 1 or test > 1):  # only reachable with tiny n
        if val >= test:
            val -= 1
        else:
            test -= 1
    return _Targets(test=test, val=val)


def _usable_rows(manifest: pd.DataFrame) -> pd.DataFrame:
    """Rows without a read error, sorted by path so the result ignores the input row order."""
    missing = [c for c in _REQUIRED_COLUMNS if c not in manifest.columns]
    if missing:
        raise SplitError(f"manifest lacks column(s) {missing}; rebuild it with `meterid validate`")
    rows = manifest
    if "error" in manifest.columns:
        error = manifest["error"]
        failed = error.notna() & (error.astype(str).str.strip() != "")
        if failed.any():
            paths = sorted(manifest.loc[failed, "path"].astype(str))
            log.warning("excluded %d unreadable image(s) from the split: %s%s", len(paths),
                        ", ".join(paths[:10]), " ..." if len(paths) > 10 else "")
        rows = manifest.loc[~failed]
    if rows["path"].duplicated().any():
        dupes = sorted(rows.loc[rows["path"].duplicated(), "path"].astype(str).unique())
        raise SplitError(f"manifest lists path(s) more than once: {dupes[:10]}")
    return rows.sort_values("path", kind="stable").reset_index(drop=True)


def _class_rng(seed: int, label: str) -> np.random.Generator:
    """One generator per class, so adding or removing a class leaves the others' splits alone."""
    label_key = int.from_bytes(hashlib.sha256(label.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, label_key])


def _fill(order: list[int], sizes: dict[int, int], target: int, reserve: int) -> list[int]:
    """Take groups in ``order`` while they fit under ``target``, leaving ``reserve`` rows.

    ``reserve`` rows always stay for the splits filled later (train's minimum one, and val's
    when test is filled first). If no group fits under the target (all are larger), the smallest
    one is taken anyway so that the split is not empty, when the reserve allows it.
    """
    if target <= 0 or not order:
        return []
    available = sum(sizes[g] for g in order)
    taken, filled = [], 0
    for gid in order:
        size = sizes[gid]
        if filled + size <= target and available - filled - size >= reserve:
            taken.append(gid)
            filled += size
            if filled == target:
                break
    if not taken:
        smallest = min(order, key=lambda g: sizes[g])  # first of the smallest, in shuffled order
        if available - sizes[smallest] >= reserve:
            taken.append(smallest)
    return taken


def _assign_class(
    label: str, group_ids: list[int], sizes: dict[int, int], targets: _Targets, seed: int
) -> dict[int, str]:
    """Split of each group owned by one class: shuffle groups, fill test, then val, rest train.

    Hand-rolled rather than sklearn's StratifiedGroupKFold/GroupShuffleSplit: each class has its
    own regime (no held-out split, test only, or val and test) with minimum-one rules, which a
    single stratified splitter over all classes cannot express; per class this is a simple
    group-aware fill to target counts.
    """
    order = [group_ids[i] for i in _class_rng(seed, label).permutation(len(group_ids))]
    test = _fill(order, sizes, targets.test, reserve=1 + (targets.val > 0))
    in_test = set(test)
    rest = [g for g in order if g not in in_test]
    val = _fill(rest, sizes, targets.val, reserve=1)
    split = dict.fromkeys(order, "train")
    split.update(dict.fromkeys(test, "test"))
    split.update(dict.fromkeys(val, "val"))
    missing = [s for s, t, got in (("test", targets.test, test), ("val", targets.val, val))
               if t > 0 and not got]
    if missing:
        log.warning("class %r: duplicate groups too large to fill %s without emptying train",
                    label, "/".join(missing))
    return split


def _without_copies_in_class(rows: pd.DataFrame) -> pd.DataFrame:
    """Exact copies inside one class (same bytes, same label) kept once, the first by path: a
    copy adds nothing but weight (validation warns about them, naming each)."""
    copies = rows.duplicated(subset=["sha256", "label"], keep="first")
    if copies.any():
        log.warning("dropped %d exact cop(ies) inside their class from the split (kept once): "
                    "%s%s", int(copies.sum()), ", ".join(rows.loc[copies, "path"].head(10)),
                    " ..." if copies.sum() > 10 else "")
    return rows[~copies].reset_index(drop=True)


def assign_splits(manifest: pd.DataFrame, config: SplitConfig) -> pd.DataFrame:
    """Assign every readable manifest row to train/val/test by its class size.

    Returns one row per image, sorted by path, with columns path, label, split, group (duplicate
    group id, dense from 0) and class_regime. Rows with a read ``error``, and exact copies of
    another row of their class, are left out (logged).
    A duplicate group spanning several labels follows the class of its first row by path.
    """
    check_split_config(config)
    rows = _without_copies_in_class(_usable_rows(manifest))
    if rows.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in OUTPUT_COLUMNS})
    labels = rows["label"].astype(str)
    roots = duplicate_groups(rows, config.near_duplicate_max_distance)
    group = pd.Series(pd.factorize(roots)[0], index=rows.index)  # roots ascend with first row
    owner = labels.groupby(group).first()
    sizes = group.value_counts().to_dict()
    spanning = labels.groupby(group).nunique()
    if (spanning > 1).any():
        log.warning("%d duplicate group(s) span several labels; each follows its first row's "
                    "label (validation reports them)", int((spanning > 1).sum()))

    counts = labels.value_counts()
    regimes = {label: class_regime(int(n), config) for label, n in counts.items()}
    group_split: dict[int, str] = {}
    for label, gids in owner.groupby(owner).groups.items():
        gids = sorted(int(g) for g in gids)
        n_owned = sum(sizes[g] for g in gids)
        targets = split_targets(n_owned, regimes[label], config)
        group_split.update(_assign_class(str(label), gids, sizes, targets, config.seed))

    out = pd.DataFrame({
        "path": rows["path"].astype(str),
        "label": labels,
        "split": group.map(group_split),
        "group": group.astype(np.int64),
        "class_regime": labels.map(regimes),
    })
    log.info("split %d images of %d classes: %s", len(out), len(counts),
             out["split"].value_counts().reindex(list(SPLITS), fill_value=0).to_dict())
    return out


_GIVEN_VALUES = {"train": "train", "val": "val", "validation": "val", "test": "test"}
_SHOWN = 5  # offending rows or photos named in an error or warning


def read_given_csv(path: Path) -> pd.DataFrame:
    """The given split's CSV with every cell as text (a class named ``NaN`` stays a name)."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError as error:
        raise SplitError(f"split.given_csv={path}: no such file (relative paths are the "
                         "project's, like the other paths in params.yaml)") from error
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise SplitError(f"split.given_csv={path}: not a readable CSV ({error})") from error


def _some(items: Sequence[str], total: int | None = None, sep: str = ", ") -> str:
    """The first few ``items``, and how many more of ``total`` (default: all items) there are."""
    more = (len(items) if total is None else total) - _SHOWN
    return sep.join(items[:_SHOWN]) + (f" and {more} more" if more > 0 else "")


def _lines(given: pd.DataFrame, index: Sequence[int], column: str) -> str:
    """The first rows of ``index`` as ``line N ('value')``; line 1 is the CSV's header, so this
    needs the frame's index as ``read_given_csv`` makes it (0 for the first row)."""
    return _some([f"line {i + 2} ({given.at[i, column]!r})" for i in index])


def _given_path_column(given: pd.DataFrame, raw_folder: str, manifest_paths: set[str],
                       config: SplitConfig, source: str) -> pd.Series:
    """The manifest path of each CSV row that lies in the image folder.

    Paths are POSIX and relative to the image folder, ``<class>/<photo>``, as in the manifest
    (``\\`` read as ``/``, a leading ``./`` ignored). A CSV written one folder up, whose paths
    start with the image folder's name (the grocery ``MANIFEST.csv``: ``raw/<class>/<photo>``
    for an image folder named ``raw``), is read that way instead, when none of its paths is a
    manifest path as written and at least one is once that name is taken off. Its rows in
    other folders (the grocery ``unseen/...``) are then outside the image folder: left out,
    and logged. The reading is chosen once per CSV, never row by row.
    """
    written = (given[config.given_path_column].astype(str).str.strip()
               .str.replace("\\", "/", regex=False).str.removeprefix("./"))
    prefix = f"{raw_folder}/"
    inside = written.str.startswith(prefix)
    if not raw_folder or written.isin(manifest_paths).any() or not inside.any():
        return written
    stripped = written[inside].str.slice(len(prefix))
    if not stripped.isin(manifest_paths).any():
        return written
    if not inside.all():
        outside = written[~inside].tolist()
        log.info("%s: %d row(s) outside the image folder %r left out: %s", source,
                 len(outside), raw_folder, _some(outside))
    return stripped


def _given_values(given: pd.DataFrame, rows: pd.Index, config: SplitConfig,
                  source: str) -> pd.Series:
    """train, val or test per row: the CSV's value, any case, ``validation`` read as val."""
    column = config.given_column
    values = given.loc[rows, column].astype(str).str.strip().str.lower().map(_GIVEN_VALUES)
    unknown = values.index[values.isna()]
    if len(unknown):
        raise SplitError(f"{source}, column {column!r}: {len(unknown)} row(s) name no split "
                         "(train, val or validation, test; any case): "
                         f"{_lines(given, unknown, column)}")
    return values


def _check_given_photos(given: pd.DataFrame, paths: pd.Series, manifest_paths: set[str],
                        readable: pd.Series, raw_folder: str, config: SplitConfig,
                        source: str) -> None:
    """Every row names one photo of the manifest, once; every readable photo has a row."""
    column = config.given_path_column
    unknown = paths.index[~paths.isin(manifest_paths)]
    if len(unknown):
        raise SplitError(f"{source}, column {column!r}: {len(unknown)} row(s) name no photo of "
                         "the image folder (paths are <class>/<photo> under it, as in the "
                         f"manifest, or {raw_folder or '<its name>'}/<class>/<photo>): "
                         f"{_lines(given, unknown, column)}")
    twice = paths.index[paths.duplicated(keep=False)]
    if len(twice):
        raise SplitError(f"{source}, column {column!r}: {paths[twice].nunique()} photo(s) on "
                         f"more than one row: {_lines(given, twice, column)}")
    missing = sorted(set(readable) - set(paths))
    if missing:
        raise SplitError(f"{source}, column {column!r}: {len(missing)} photo(s) of the image "
                         "folder have no row, and a given split drops none: add them (or "
                         f"remove the photos): {_some(missing)}")


def _check_train_per_class(out: pd.DataFrame, config: SplitConfig, source: str) -> None:
    counts = pd.crosstab(out["label"], out["split"]).reindex(columns=list(SPLITS), fill_value=0)
    untrained = counts[counts["train"] == 0]
    if len(untrained):
        classes = [f"{label!r} (val {row['val']}, test {row['test']})"
                   for label, row in untrained.iterrows()]
        raise SplitError(f"{source}, column {config.given_column!r}: {len(classes)} class(es) "
                         f"without a train photo, which the model could not learn: "
                         f"{_some(classes)}")


def _warn_straddling(out: pd.DataFrame, config: SplitConfig, source: str) -> None:
    """Log duplicate groups given more than one split (kept: the user's split is the rule)."""
    per_group = out.groupby("group")["split"].nunique()
    straddling = per_group.index[per_group > 1]
    if not len(straddling):
        return
    examples = [" ~ ".join(f"{r.split} {r.path}" for r in out[out["group"] == g].itertuples())
                for g in straddling[:_SHOWN]]
    log.warning("%s: %d duplicate group(s) (same bytes, or phash within %d bits) span splits, "
                "so a held-out photo has a copy in another split; kept as given: %s", source,
                len(straddling), config.near_duplicate_max_distance,
                _some(examples, len(straddling), "; "))


def _given_regime(splits: set[str]) -> str:
    """train_only, train_test or train_val_test, by the splits a class was given; train_val for
    val but no test photos, which only a given split makes."""
    return "train_only" if splits == {"train"} else "_".join(s for s in SPLITS if s in splits)


def given_splits(manifest: pd.DataFrame, given: pd.DataFrame, config: SplitConfig,
                 raw_folder: str = "") -> pd.DataFrame:
    """The split named by ``given`` (``config.given_csv`` as read): each photo's split comes
    from column ``config.given_column``, its label from the manifest (its folder), never the CSV.

    ``raw_folder`` is the image folder's name (see ``_given_path_column``). The same rows and
    columns as ``assign_splits``: unreadable photos and exact copies inside a class are left
    out (logged). Raises SplitError, naming the CSV, the column and the first offending rows,
    on a value that is no split, a row that names no photo, a photo on two rows, a photo with no
    row, or a class with no train photo. Duplicate groups across splits are only logged.
    """
    source = str(config.given_csv or "the given split")
    given = given.reset_index(drop=True)  # row i is line i + 2 of the CSV
    absent = [c for c in (config.given_path_column, config.given_column) if c not in given]
    if absent:
        raise SplitError(f"{source}: no column(s) {absent}; its columns are "
                         f"{list(given.columns)} (split.given_path_column, split.given_column)")
    readable = _usable_rows(manifest)
    manifest_paths = set(manifest["path"].astype(str))
    paths = _given_path_column(given, raw_folder, manifest_paths, config, source)
    values = _given_values(given, paths.index, config, source)
    _check_given_photos(given, paths, manifest_paths, readable["path"].astype(str), raw_folder,
                        config, source)
    rows = _without_copies_in_class(readable)
    split_of = pd.Series(values.to_numpy(), index=paths.to_numpy())
    labels = rows["label"].astype(str)
    out = pd.DataFrame({
        "path": rows["path"].astype(str),
        "label": labels,
        "split": rows["path"].astype(str).map(split_of),
        "group": pd.factorize(duplicate_groups(rows, config.near_duplicate_max_distance))[0],
    })
    _check_train_per_class(out, config, source)
    _warn_straddling(out, config, source)
    out["class_regime"] = labels.map(out.groupby("label")["split"].agg(set).map(_given_regime))
    out["group"] = out["group"].astype(np.int64)
    log.info("split %d images of %d classes as given by %s: %s", len(out), labels.nunique(),
             source, out["split"].value_counts().reindex(list(SPLITS), fill_value=0).to_dict())
    return out[OUTPUT_COLUMNS]


def split_table(splits: pd.DataFrame) -> pd.DataFrame:
    """Images per class (rows, largest first) and split (train, val, test, total); a total row."""
    table = pd.crosstab(splits["label"], splits["split"])
    table = table.reindex(columns=list(SPLITS), fill_value=0)
    table["total"] = table.sum(axis=1)
    table = table.sort_values(["total", "train"], ascending=False, kind="stable")
    table.loc["total"] = table.sum(axis=0)
    table.index.name = "label"
    table.columns.name = None
    return table.astype(np.int64)


def format_split_table(table: pd.DataFrame) -> str:
    """The split table as aligned text for a terminal."""
    return table.to_string()


def write_splits(splits: pd.DataFrame, path: Path) -> Path:
    """Write the splits CSV (creating its folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    splits.to_csv(path, index=False)
    return path


def read_splits(path: Path) -> pd.DataFrame:
    """The splits CSV with every column as written: text, never a guessed missing value, so a
    class folder named ``NaN``, ``NA``, ``None``, ``null`` or ``001`` keeps its spelling."""
    text = {"path": str, "label": str, "split": str, "class_regime": str}
    return pd.read_csv(path, dtype=text, keep_default_na=False)


def plot_class_balance(splits: pd.DataFrame, out_png: Path) -> Path:
    """Horizontal stacked bars of images per class by split, largest class on top."""
    table = split_table(splits).drop(index="total")
    table = table.iloc[::-1]  # barh draws the first row at the bottom
    n_classes = len(table)
    fig = Figure(figsize=(9, max(3.0, 1.2 + 0.26 * n_classes)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    positions = np.arange(n_classes)
    left = np.zeros(n_classes)
    for split in SPLITS:
        values = table[split].to_numpy()
        ax.barh(positions, values, left=left, height=0.8, color=_SPLIT_COLORS[split],
                label=f"{split} ({int(values.sum())})")
        left += values
    for y, total in zip(positions, table["total"], strict=True):
        ax.text(float(total), float(y), f" {int(total)}", va="center", fontsize=7)
    ax.set_yticks(positions, [str(label) for label in table.index], fontsize=7)
    ax.set_ylim(-0.6, n_classes - 0.4)
    ax.set_xlabel("images")
    ax.set_title(f"Images per class and split ({n_classes} classes, {int(left.sum())} images)")
    ax.margins(x=0.08)
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    return out_png
