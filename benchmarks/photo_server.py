"""A folder of photos served on 127.0.0.1 by its own process, as a field server would be:
``python -m benchmarks.photo_server DIR [HTTP/1.0]`` prints its port on the first line.

It speaks HTTP/1.1 with keep-alive, as field servers (nginx, object stores) do; ``HTTP/1.0``, the
default of Python's ``http.server``, closes every connection, so each photo costs both processes a
new TCP connection and the server a new thread (``make bench`` measures both).

``?copy=N`` appends a few bytes naming N after the file's last byte. Decoders stop at the JPEG
end marker, so the photo looks the same, but its sha256 differs: one folder of 2,000 photos
serves 20,000 *distinct* photos, which the scorer must decode and infer one by one (its cache by
sha256 never hits), as a month of field photos would be.
"""

from __future__ import annotations

import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit


class _Handler(SimpleHTTPRequestHandler):
    # Headers and body go out in separate writes: with Nagle's algorithm on, a kept-alive
    # connection waits for the client's delayed ACK (~40 ms a photo here), which field servers
    # (nginx, object stores) avoid the same way.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urlsplit(self.path)
        copy = parse_qs(url.query).get("copy")
        if not copy:
            super().do_GET()
            return
        path = Path(self.translate_path(url.path))
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes() + f"\ncopy {int(copy[0])}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib signature)
        pass


def main(folder: str, protocol: str = "HTTP/1.1") -> None:
    _Handler.protocol_version = protocol
    handler = lambda *args: _Handler(*args, directory=folder)  # noqa: E731
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        print(f"port {server.server_address[1]}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main(*sys.argv[1:3])
