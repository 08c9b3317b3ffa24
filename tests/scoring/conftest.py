"""Fixtures for scoring: a tiny real classifier, and a local HTTP server with hostile routes.

The server listens on 127.0.0.1 only; every slow route is bounded (a few seconds at most)."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from meterid.config import FetchConfig, Params


def _jpeg(image: Image.Image, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **save)
    return buffer.getvalue()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def meter_like(width: int = 160, height: int = 200, seed: int = 0) -> Image.Image:
    """A textured photo (sharp, mid-grey): passes the quality gate."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(40, 215, size=(height // 8, width // 8, 3), dtype=np.uint8)
    return Image.fromarray(pixels).resize((width, height), Image.Resampling.NEAREST)


def png_header_bomb(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, with almost no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    body = struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    idat = b"IDAT" + zlib.compress(b"\x00" * 64)
    body += struct.pack(">I", len(idat) - 4) + idat + struct.pack(">I", zlib.crc32(idat))
    return b"\x89PNG\r\n\x1a\n" + body


def exif_rotated_jpeg() -> bytes:
    """Stored 200 wide x 160 high, EXIF orientation 6: displayed 160 x 200 (portrait)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _jpeg(meter_like(200, 160), exif=exif.tobytes())


def image_bodies() -> dict[str, bytes]:
    base = meter_like()
    sixteen = Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    rgba = base.convert("RGBA")
    rgba.putalpha(128)
    return {
        "/ok.jpg": _jpeg(base),
        "/ok-copy.jpg": _jpeg(base),  # same bytes under another URL
        "/cmyk.jpg": _jpeg(base.convert("CMYK")),
        "/grey16.png": _png(sixteen),
        "/palette.png": _png(base.convert("P")),
        "/rgba.png": _png(rgba),
        "/rotated.jpg": exif_rotated_jpeg(),
        "/dark.jpg": _jpeg(Image.eval(base, lambda v: v // 12)),
        "/truncated.jpg": _jpeg(base)[:len(_jpeg(base)) * 2 // 3],  # header intact
        "/zero.jpg": b"",
        "/bomb.png": png_header_bomb(60_000, 60_000),
    }


class Routes(BaseHTTPRequestHandler):
    """GET routes of the hostile server; ``bodies`` are served as image/* with a length."""

    bodies: dict[str, bytes] = {}
    hits: dict[str, int] = {}
    lock = threading.Lock()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _send(self, status: int, body: bytes, content_type: str = "image/jpeg",
              headers: dict[str, str] | None = None, length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:  # the client gave up (timeout tests): expected
            self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?")[0]
        with self.lock:
            self.hits[path] = self.hits.get(path, 0) + 1
            hits = self.hits[path]
        handler = SPECIAL.get(path)
        if path.startswith("/slow-ok/"):  # a slow but fine photo: for runs to be killed
            time.sleep(0.2)
            self._send(200, self.bodies["/ok.jpg"])
        elif handler is not None:
            handler(self, hits)
        elif path in self.bodies:
            kind = "image/png" if path.endswith(".png") else "image/jpeg"
            self._send(200, self.bodies[path], kind)
        else:
            self._send(404, b"not found", "text/plain")


def _slow_headers(h: Routes, hits: int) -> None:
    time.sleep(0.8)  # beyond the tests' 0.5 s read timeout
    h._send(200, Routes.bodies["/ok.jpg"])


def _slow_body(h: Routes, hits: int) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "image/jpeg")
    h.end_headers()
    for _ in range(12):  # a byte every 0.25 s: never a read timeout, but over the 1.5 s total
        try:
            h.wfile.write(b"\xff")
            h.wfile.flush()
        except OSError:
            return
        time.sleep(0.25)


def _oversize(h: Routes, hits: int) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "image/jpeg")
    h.end_headers()  # no Content-Length: the limit must hold while streaming
    try:
        for _ in range(64):
            h.wfile.write(b"\x00" * 65536)
    except OSError:
        pass


def _lying_length(h: Routes, hits: int) -> None:
    h._send(200, Routes.bodies["/ok.jpg"][:800], length=len(Routes.bodies["/ok.jpg"]))
    h.close_connection = True


def _flaky(h: Routes, hits: int) -> None:
    if hits == 1:
        h._send(503, b"busy", "text/plain")
    else:
        h._send(200, Routes.bodies["/ok.jpg"])


SPECIAL: dict[str, Callable[[Routes, int], None]] = {
    "/500": lambda h, _: h._send(500, b"boom", "text/plain"),
    "/html": lambda h, _: h._send(200, b"<html><body>login</body></html>", "text/html"),
    "/html-as-jpeg": lambda h, _: h._send(200, b"<html><body>login</body></html>"),
    "/slow-headers": _slow_headers,
    "/slow-body": _slow_body,
    "/oversize": _oversize,
    "/lying-length": _lying_length,
    "/flaky": _flaky,
    "/loop-a": lambda h, _: h._send(302, b"", headers={"Location": "/loop-b"}),
    "/loop-b": lambda h, _: h._send(302, b"", headers={"Location": "/loop-a"}),
    "/hop": lambda h, _: h._send(301, b"", headers={"Location": "/ok.jpg"}),
    "/to-file": lambda h, _: h._send(302, b"", headers={"Location": "file:///etc/passwd"}),
}


@pytest.fixture(scope="session")
def hostile_server() -> Iterator[str]:
    Routes.bodies = image_bodies()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Routes)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def fast_fetch(params: Params) -> FetchConfig:
    """Tight limits so the slow routes fail within seconds."""
    return params.score.fetch.model_copy(update=dict(
        connect_timeout_s=1.0, read_timeout_s=0.5, total_timeout_s=1.5, max_bytes=1_000_000,
        retries=1, backoff_s=0.0))


@pytest.fixture(scope="session")
def patient_fetch(fast_fetch: FetchConfig) -> FetchConfig:
    """For lists with no slow route, where two runs must give the same rows: on a loaded 2-core
    machine a good photo can take longer than 1.5 s (a CI run lost one to the tight limits)."""
    return fast_fetch.model_copy(update=dict(read_timeout_s=10.0, total_timeout_s=20.0))
