"""The UNKNOWN store: photos the model was unsure about, kept for the weekly clustering.

Content-addressed (``images/ab/<sha256>.<ext>`` beside ``records/ab/<sha256>.json``), so the same
photo seen in many runs or under many URLs is stored once; its record keeps when it was first
and last seen, from which URLs, and the latest top-3. Writes are atomic renames, so a killed run
leaves no half files, and a local folder today can be a mounted bucket tomorrow. Each record is
updated under a lock file beside it (``<sha256>.json.lock``), so processes scoring at the same
time (Dask workers) never lose each other's URLs.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from filelock import FileLock

from meterid.core import ScoredRow, top_columns
from meterid.files import write_bytes_atomic, write_text_atomic

LOCK_TIMEOUT_S = 60  # a record is held for milliseconds; a minute means something is stuck
MAX_URLS = 20  # per record: enough to trace a photo back, bounded for photos seen nightly
TOP_COLUMNS = top_columns()
_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "TIFF": "tif",
               "BMP": "bmp"}


class UnknownStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def _record_path(self, sha256: str) -> Path:
        return self.root / "records" / sha256[:2] / f"{sha256}.json"

    def add(self, data: bytes, row: ScoredRow) -> Path:
        """Store one UNKNOWN photo with its scoring row; returns the image path. Safe across
        processes (Dask workers scoring shards): the record's read-modify-write holds a lock
        of its own, so two adds of one photo under two URLs keep both URLs."""
        sha256 = str(row.sha256)
        extension = _EXTENSIONS.get(str(row.image_format), "img")
        image = self.root / "images" / sha256[:2] / f"{sha256}.{extension}"
        record_path = self._record_path(sha256)
        record_path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(record_path.with_name(f"{record_path.name}.lock"), timeout=LOCK_TIMEOUT_S):
            if not image.exists():
                write_bytes_atomic(image, data)
            self._update_record(record_path, image, row)
        return image

    def _update_record(self, record_path: Path, image: Path, row: ScoredRow) -> None:
        sha256 = str(row.sha256)
        record = json.loads(record_path.read_text()) if record_path.is_file() else {
            "sha256": sha256, "image": str(image.relative_to(self.root)),
            "first_seen": row.scored_at, "urls": []}
        if row.url not in record["urls"]:
            record["urls"] = [*record["urls"], row.url][-MAX_URLS:]
        record.update({key: getattr(row, key) for key in TOP_COLUMNS},
                      last_seen=row.scored_at, run_id=row.run_id or None,
                      model_version=row.model_version)
        write_text_atomic(record_path, json.dumps(record, indent=1))

    def records(self, since: datetime | None = None) -> pd.DataFrame:
        """One row per stored photo (``path`` absolute), last seen at or after ``since``."""
        rows = [json.loads(path.read_text()) for path in sorted(self.root.glob("records/*/*.json"))]
        frame = pd.DataFrame(rows, columns=["sha256", "image", "first_seen", "last_seen", "urls",
                                            "run_id", "model_version", *TOP_COLUMNS])
        frame["path"] = [str(self.root / image) for image in frame["image"]]
        frame["url"] = [urls[-1] if urls else None for urls in frame["urls"]]
        if since is not None and len(frame):
            seen = pd.to_datetime(frame["last_seen"], utc=True)
            cutoff = pd.Timestamp(since)
            cutoff = cutoff.tz_localize(UTC) if cutoff.tzinfo is None else cutoff
            frame = frame[seen >= cutoff]
        return frame.reset_index(drop=True)
