"""The demo's field: photos served over HTTP from 127.0.0.1, and a URL list to score.

``make demo`` scores known test photos, held-out brands (which should come out UNKNOWN) and a
few broken links through the real batch-scoring flow, so a newcomer sees every kind of row.
The benchmarks serve their URLs the same way.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from meterid.data.split import read_splits


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib signature)
        pass


@contextlib.contextmanager
def serve_folder(root: Path) -> Iterator[str]:
    """Serve ``root`` read-only on 127.0.0.1 (a free port) while the block runs; yields the base
    URL."""
    handler = functools.partial(_QuietHandler, directory=str(Path(root).resolve()))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def url_for(base: str, root: Path, path: Path) -> str:
    return f"{base}/{quote(Path(path).resolve().relative_to(Path(root).resolve()).as_posix())}"


def demo_test_photos(splits_file: Path, raw_dir: Path) -> list[Path]:
    """The known-class photos the model never trained on: the test split."""
    splits = read_splits(splits_file)
    return [Path(raw_dir) / path for path in splits.loc[splits["split"] == "test", "path"]]


def demo_scoring_list(base: str, data_root: Path, test_paths: list[Path],
                      unknown_dir: Path) -> pd.DataFrame:
    """Known test photos, every held-out-brand photo and three broken links, with a
    ``truth`` column carried through so the output can be checked by eye."""
    unknown = sorted(Path(unknown_dir).rglob("*.jpg"))
    rows = [{"url": url_for(base, data_root, p), "truth": p.parent.name} for p in test_paths]
    rows += [{"url": url_for(base, data_root, p), "truth": f"held-out:{p.parent.name}"}
             for p in unknown]
    rows += [{"url": f"{base}/missing/meter.jpg", "truth": "broken link"},
             {"url": f"{base}/", "truth": "an HTML page"},
             {"url": "ftp://127.0.0.1/meter.jpg", "truth": "unsupported scheme"}]
    return pd.DataFrame(rows)
