"""Adaptive train/val/test split for a highly imbalanced image dataset.

Each class gets a regime by its image count ``n`` (thresholds in ``params.yaml``, ``split``):

- ``n < low``: ``train_only`` (too few images to hold any out);
- ``low <= n <= high``: ``train_test`` (``medium_test_fraction`` to test);
- ``n > high``: ``train_val_test`` (``large_val_fraction`` and ``large_test_fraction``).

A class that has a held-out split gets at least one image in it, and train always keeps at least
one. Exact duplicates (same sha256) and near-duplicates (phash within
``near_duplicate_max_distance``) form groups that are assigned whole, so no image has a copy in
another split. The result depends only on the seed and the set of rows, not on their order.
"""

from __future__ import annotations

import hashlib
import logging
import math
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
        ax.text(total, y, f" {int(total)}", va="center", fontsize=7)
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
