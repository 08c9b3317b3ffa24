"""The bytes of the photos scoring sends to a person, kept by sha256: a reviewer sees (and
`meterid review export` adds) the photo the model scored even after its URL expired (a signed
link, a night's file server). Only the unsettled photos are kept (not the auto-accepted ones:
their audit sample is drawn after the run, so an audit photo is fetched from its URL)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from meterid.core import ScoredRow
from meterid.files import write_bytes_atomic
from meterid.inference.fetch import Fetcher, FetchError

log = logging.getLogger(__name__)

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
