"""The bytes of the photos scoring sends to a person, kept by sha256: a reviewer sees (and
`meterid review export` adds) the photo the model scored even after its URL expired (a signed
link, a night's file server). Only the unsettled photos are kept (not the auto-accepted ones:
their audit sample is drawn after the run, so an audit photo is fetched from its URL)."""

from __future__ import annotations

from pathlib import Path

from meterid.core import ScoredRow
from meterid.files import write_bytes_atomic

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

