"""Safe fetching of one image source: an http(s) URL or a local path, as raw bytes.

Field lists come from outside, so every URL is treated as hostile:
- schemes: http and https only (plus plain local paths when allowed); ``file://`` and others are
  refused by name;
- every host is resolved and each address checked against deny/allow networks before connecting
  (link-local and cloud-metadata addresses are denied by default). Redirects are followed by hand,
  at most ``max_redirects`` hops, so each hop's address is checked too; requests' own redirect
  following would connect first and ask later;
- connect and read timeouts, plus a total deadline (a server trickling one byte per second never
  trips a read timeout), and a body-size limit enforced while streaming;
- a content type that is not an image (an HTML error page) is refused before the body is read;
- transient failures (connection errors, 429/502/503/504) are retried with backoff by urllib3's
  ``Retry`` on a pooled session: no hand-written retry loop.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    ConnectTimeoutError,
    NameResolutionError,
    NewConnectionError,
    ReadTimeoutError,
)
from urllib3.util.retry import Retry

from meterid.config import FetchConfig

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024


class FetchError(Exception):
    """A source could not be fetched; the message is the reason stored in the output row."""


@dataclass(frozen=True)
class Fetched:
    source: str
    data: bytes
    content_type: str | None


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(specs: list[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(spec, strict=False) for spec in specs)


class AddressPolicy:
    """Which resolved addresses may be contacted: not in ``deny``, and in ``allow`` when given."""

    def __init__(self, deny: list[str], allow: list[str]):
        self.deny = _networks(deny)
        self.allow = _networks(allow)

    def check(self, address: str) -> None:
        ip = ipaddress.ip_address(address.split("%")[0])  # drop an IPv6 zone id
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
        for network in self.deny:
            if ip.version == network.version and ip in network:
                raise FetchError(f"address {ip} refused (in denied network {network})")
        if self.allow and not any(ip.version == n.version and ip in n for n in self.allow):
            raise FetchError(f"address {ip} refused (not in the allowed networks)")


def resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise FetchError(f"cannot resolve host {host!r}: {error.strerror}") from error
    return sorted({str(info[4][0]) for info in infos})


def make_session(cfg: FetchConfig, pool_size: int) -> requests.Session:
    """A pooled session whose adapter retries transient errors with exponential backoff."""
    retry = Retry(
        total=cfg.retries, connect=cfg.retries, read=cfg.retries, status=cfg.retries,
        redirect=0, backoff_factor=cfg.backoff_s, status_forcelist=(429, 502, 503, 504),
        allowed_methods=frozenset({"GET"}), raise_on_status=False,
        respect_retry_after_header=False,  # a server's Retry-After must not stall the night
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry, pool_connections=pool_size, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "meterid-scoring"
    return session


class Fetcher:
    """Fetches sources under one policy; thread-safe (requests sessions pool per host)."""

    def __init__(self, cfg: FetchConfig, pool_size: int = 8):
        self.cfg = cfg
        self.addresses = AddressPolicy(cfg.deny_networks, cfg.allow_networks)
        self.session = make_session(cfg, pool_size)

    def fetch(self, source: str) -> Fetched:
        scheme = urlsplit(source).scheme.lower()
        if scheme in ("http", "https"):
            return self._fetch_url(source)
        if scheme and len(scheme) > 1:  # "C:" is a drive letter, not a scheme
            raise FetchError(f"unsupported scheme {scheme!r}: only http, https and local paths")
        return self._read_path(source)

    def close(self) -> None:
        self.session.close()

    # --- local paths ------------------------------------------------------------------------

    def _read_path(self, source: str) -> Fetched:
        if not self.cfg.allow_local_paths:
            raise FetchError("local paths are not allowed (score.fetch.allow_local_paths)")
        path = Path(source).expanduser()
        try:
            size = path.stat().st_size
            if not path.is_file():
                raise FetchError("not a file")
            if size > self.cfg.max_bytes:
                raise FetchError(f"too large: {size} bytes > limit {self.cfg.max_bytes}")
            return Fetched(source, path.read_bytes(), None)
        except FileNotFoundError as error:
            raise FetchError("no such file") from error
        except OSError as error:
            raise FetchError(f"cannot read file: {error.strerror or error}") from error

    # --- URLs -------------------------------------------------------------------------------

    def _check_host(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https"):
            raise FetchError(f"redirect to unsupported scheme {parts.scheme!r}")
        if not parts.hostname:
            raise FetchError("URL has no host")
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        for address in resolve(parts.hostname, port):
            self.addresses.check(address)

    def _fetch_url(self, url: str) -> Fetched:
        deadline = time.monotonic() + self.cfg.total_timeout_s
        seen = [url]
        for _ in range(self.cfg.max_redirects + 1):
            self._check_host(url)
            response = self._get(url)
            if response.status_code not in _REDIRECTS:
                with response:
                    return self._read_body(url, response, deadline)
            response.close()
            location = response.headers.get("Location")
            if not location:
                raise FetchError(f"HTTP {response.status_code} redirect without a Location")
            url = urljoin(url, location)
            if url in seen:
                raise FetchError(f"redirect loop: {' -> '.join([*seen, url])}")
            seen.append(url)
        raise FetchError(f"too many redirects (> {self.cfg.max_redirects})")

    def _get(self, url: str) -> requests.Response:
        try:
            return self.session.get(
                url, stream=True, allow_redirects=False,
                timeout=(self.cfg.connect_timeout_s, self.cfg.read_timeout_s))
        except requests.exceptions.ConnectTimeout as error:  # a refused connection lands here too
            raise FetchError(self._connection_reason(error)) from error
        except requests.exceptions.ReadTimeout as error:
            raise FetchError(f"read timeout after {self.cfg.read_timeout_s} s") from error
        except requests.exceptions.RetryError as error:
            raise FetchError(f"gave up after {self.cfg.retries} retries: {error}") from error
        except requests.exceptions.ConnectionError as error:
            raise FetchError(self._connection_reason(error)) from error
        except requests.exceptions.RequestException as error:
            raise FetchError(f"request failed: {error}") from error

    def _connection_reason(self, error: requests.exceptions.ConnectionError) -> str:
        """What really happened, from the urllib3 reason inside requests' error. Retries wrap a
        timeout in MaxRetryError: name the timeout, not "connection failed". urllib3's
        NewConnectionError (refused, unreachable) subclasses ConnectTimeoutError, so it is told
        apart first: a refusal is not a timeout."""
        reason = getattr(error.args[0], "reason", None) if error.args else None
        retries = f"({self.cfg.retries} retries)"
        if isinstance(reason, NameResolutionError):
            return f"cannot resolve host: {_root_cause(error)} {retries}"
        if isinstance(reason, NewConnectionError):
            return f"connection failed: {_root_cause(error)} {retries}"
        if isinstance(reason, ReadTimeoutError):
            return f"read timeout after {self.cfg.read_timeout_s} s ({self.cfg.retries} retries)"
        if isinstance(reason, ConnectTimeoutError):
            return (f"connect timeout after {self.cfg.connect_timeout_s} s "
                    f"({self.cfg.retries} retries)")
        return f"connection failed: {_root_cause(error)}"

    def _read_body(self, url: str, response: requests.Response, deadline: float) -> Fetched:
        if response.status_code != 200:
            raise FetchError(f"HTTP {response.status_code} {response.reason or ''}".strip())
        content_type = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type and content_type not in self.cfg.allowed_content_types:
            raise FetchError(f"not an image: content type {content_type!r}")
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.cfg.max_bytes:
            raise FetchError(f"too large: {declared} bytes declared > limit {self.cfg.max_bytes}")
        body = bytearray()
        try:
            for chunk in response.iter_content(_CHUNK):
                body += chunk
                if len(body) > self.cfg.max_bytes:
                    raise FetchError(f"too large: over the limit of {self.cfg.max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise FetchError(f"too slow: body not received within "
                                     f"{self.cfg.total_timeout_s} s")
        except requests.exceptions.ChunkedEncodingError as error:  # connection closed early
            raise FetchError(f"truncated body: {len(body)} of {declared or 'unknown'} bytes "
                             "received") from error
        except requests.exceptions.ConnectionError as error:  # urllib3 read timeouts land here
            raise FetchError(f"body read failed: {_root_cause(error)}") from error
        except requests.exceptions.RequestException as error:
            raise FetchError(f"body read failed: {error}") from error
        if declared and declared.isdigit() and len(body) < int(declared):
            raise FetchError(f"truncated body: {len(body)} of {declared} bytes")
        return Fetched(url, bytes(body), content_type or None)


def _root_cause(error: BaseException) -> str:
    """The innermost cause's message: requests wraps urllib3 wraps socket errors."""
    inner: BaseException | None = error
    while inner is not None:
        error, inner = inner, inner.__cause__ or inner.__context__
    text = str(error)
    return text.split(": ", 1)[-1] if len(text) > 160 else text
