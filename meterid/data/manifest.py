"""The image manifest: one row per file under the image folder, bad files included.

The label of a file is the first folder under the image folder (ImageFolder layout); files
directly in the image folder get the label ``""``. Hidden files and folders are skipped.
Paths are POSIX and relative to the image folder, so a manifest does not depend on where the
folder lives.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from itertools import repeat
from pathlib import Path

import pandas as pd

from meterid.photos.images import ImageFacts, inspect_image
from meterid.progress import progress

log = logging.getLogger(__name__)

DTYPES: dict[str, str] = {
    "path": "string",
    "label": "string",
    "width": "Int64",
    "height": "Int64",
    "mode": "string",
    "format": "string",
    "bytes": "Int64",
    "sha256": "string",
    "phash": "string",
    "exif_orientation": "Int64",
    "rgb_convertible": "bool",
    "error": "string",
}
COLUMNS = list(DTYPES)
_NULLABLE = [c for c in COLUMNS if c not in ("path", "label", "rgb_convertible")]


def _visible(relative: Path) -> bool:
    return not any(part.startswith(".") for part in relative.parts)


def list_files(data_dir: Path) -> list[str]:
    """Relative POSIX paths of every non-hidden file under ``data_dir``, sorted."""
    return sorted(p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*")
                  if p.is_file() and _visible(p.relative_to(data_dir)))


def class_folders(data_dir: Path) -> list[str]:
    """Names of the non-hidden folders directly under ``data_dir`` (empty ones included)."""
    return sorted(p.name for p in Path(data_dir).iterdir() if p.is_dir() and _visible(Path(p.name)))


def label_of(relative_path: str) -> str:
    parts = relative_path.split("/")
    return parts[0] if len(parts) > 1 else ""


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """The canonical column order and dtypes, shared by building and reading."""
    frame = frame.reindex(columns=COLUMNS).astype(DTYPES)
    frame["label"] = frame["label"].fillna("")
    return frame.reset_index(drop=True)


def _inspect_all(data_dir: Path, files: list[str], max_pixels: int,
                 workers: int) -> list[ImageFacts]:
    paths = [data_dir / f for f in files]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(inspect_image, paths, repeat(max_pixels))
        return list(progress(results, f"inspecting {data_dir}", "img", total=len(paths)))


def build_manifest(data_dir: Path, max_pixels: int, workers: int) -> pd.DataFrame:
    """Inspect every file under ``data_dir`` in ``workers`` threads; rows sorted by path."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise NotADirectoryError(f"{data_dir}: no such image folder")
    files = list_files(data_dir)
    facts = _inspect_all(data_dir, files, max_pixels, workers)
    rows = [{"path": f, "label": label_of(f), **asdict(x)}
            for f, x in zip(files, facts, strict=True)]
    manifest = _typed(pd.DataFrame(rows, columns=COLUMNS))
    log.info("inspected %d files under %s: %d unreadable", len(manifest), data_dir,
             int(manifest["error"].notna().sum()))
    return manifest


def write_manifest(manifest: pd.DataFrame, path: Path) -> None:
    """Write the manifest as CSV (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _typed(manifest).to_csv(path, index=False)


def read_manifest(path: Path) -> pd.DataFrame:
    """Read a manifest CSV back with the dtypes ``build_manifest`` returns.

    Only empty cells are missing values, so a class folder named ``NA`` or ``null`` stays a label.
    """
    frame = pd.read_csv(path, dtype=DTYPES, keep_default_na=False,
                        na_values={c: [""] for c in _NULLABLE})
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: not a manifest, lacks column(s) {missing}")
    return _typed(frame)
