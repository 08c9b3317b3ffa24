"""The bytes of the photos scoring sends to a person, kept by sha256: a reviewer sees (and
`meterid review export` adds) the photo the model scored even after its URL expired (a signed
link, a night's file server). The unsettled photos are kept as they are scored. The
auto-accepted ones wait in the run's pending folder: the audit sample is drawn when the run
ends, and only its photos are kept then (``keep_audited``); the others are deleted."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from meterid.core import ScoredRow
from meterid.files import write_bytes_atomic
from meterid.inference.fetch import Fetcher, FetchError

log = logging.getLogger(__name__)

PENDING = ".pending"  # <root>/.pending/<run id>/: a running scoring run's auto-accepted photos
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "TIFF": "tif",
              "BMP": "bmp"}


class ReviewPhotos:
    def __init__(self, root: Path):
        self.root = Path(root)

    def add(self, data: bytes, row: ScoredRow) -> Path:
        """Keep one scored photo (once, whatever the URLs it came under)."""
        sha = str(row.sha256)
        path = self.root / sha[:2] / f"{sha}.{EXTENSIONS.get(str(row.image_format), 'img')}"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(path, data)
        return path

    def find(self, sha256: str) -> Path | None:
        return next(iter(sorted((self.root / sha256[:2]).glob(f"{sha256}.*"))), None)

    def pending(self, run_id: str) -> ReviewPhotos:
        """Where scoring run ``run_id`` puts the photos it auto-accepts until its audit sample
        is drawn (a resumed run finds the ones it kept before it stopped)."""
        return ReviewPhotos(self.root / PENDING / run_id)

    def keep_audited(self, run_id: str, audited: Iterable[str]) -> int:
        """Keep the run's pending photos whose sha256 is in ``audited`` (its audit sample) and
        delete the rest; returns how many were kept."""
        pending, kept = self.pending(run_id), 0
        for sha in audited:
            source = pending.find(sha)
            if source is None:
                continue
            target = self.root / sha[:2] / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)  # the same bytes when a copy was already kept
            kept += 1
        shutil.rmtree(pending.root, ignore_errors=True)
        return kept


def scored_bytes(kept: ReviewPhotos, fetcher: Fetcher, sha256: str, url: str) -> bytes | None:
    """The bytes a scoring run scored: the copy kept for review, else fetched again from
    ``url`` and checked against ``sha256``; None (logged, with why) when neither can be had."""
    copy = kept.find(sha256)
    if copy is not None:
        return copy.read_bytes()
    try:
        data = fetcher.fetch(url).data
    except FetchError as error:
        log.warning("%s: %s; no copy kept, left out", url, error)
        return None
    if hashlib.sha256(data).hexdigest() != sha256:
        log.warning("%s changed since it was scored; left out", url)
        return None
    return data
