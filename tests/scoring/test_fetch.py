"""The fetcher against a real local server: each hostile response becomes a named reason."""

from __future__ import annotations

import pytest

from meterid.config import FetchConfig
from meterid.inference.fetch import AddressPolicy, Fetcher, FetchError


@pytest.fixture(scope="module")
def fetcher(fast_fetch: FetchConfig):
    fetcher = Fetcher(fast_fetch, pool_size=4)
    yield fetcher
    fetcher.close()


@pytest.mark.parametrize(("route", "reason"), [
    ("/nothing-here.jpg", "HTTP 404"),
    ("/500", "HTTP 500"),
    ("/html", "not an image: content type 'text/html'"),
    ("/slow-headers", "read timeout"),
    ("/slow-body", "too slow"),
    ("/oversize", "too large"),
    ("/lying-length", "truncated body"),
    ("/loop-a", "redirect loop"),
    ("/to-file", "redirect to unsupported scheme 'file'"),
])
def test_bad_responses_raise_a_named_reason(fetcher: Fetcher, hostile_server: str, route: str,
                                           reason: str):
    with pytest.raises(FetchError, match=reason):
        fetcher.fetch(hostile_server + route)


def test_redirects_are_followed_and_transient_errors_retried(fetcher: Fetcher,
                                                             hostile_server: str):
    assert fetcher.fetch(hostile_server + "/hop").data[:3] == b"\xff\xd8\xff"
    assert fetcher.fetch(hostile_server + "/flaky").data[:3] == b"\xff\xd8\xff"  # 503, then 200


def test_redirect_limit(fast_fetch: FetchConfig, hostile_server: str):
    no_redirects = Fetcher(fast_fetch.model_copy(update={"max_redirects": 0}))
    with pytest.raises(FetchError, match="too many redirects"):
        no_redirects.fetch(hostile_server + "/hop")


@pytest.mark.parametrize("source", ["file:///etc/passwd", "ftp://127.0.0.1/a.jpg",
                                    "gopher://127.0.0.1/", "data:image/png;base64,AAAA"])
def test_other_schemes_are_refused_before_any_io(fetcher: Fetcher, source: str):
    with pytest.raises(FetchError, match="unsupported scheme"):
        fetcher.fetch(source)


def test_local_paths_are_read_with_the_size_limit(fast_fetch: FetchConfig, tmp_path):
    small, large = tmp_path / "small.jpg", tmp_path / "large.jpg"
    small.write_bytes(b"\xff\xd8\xff" + b"\x00" * 10)
    large.write_bytes(b"\x00" * (fast_fetch.max_bytes + 1))
    fetcher = Fetcher(fast_fetch)
    assert fetcher.fetch(str(small)).data.startswith(b"\xff\xd8\xff")
    with pytest.raises(FetchError, match="too large"):
        fetcher.fetch(str(large))
    with pytest.raises(FetchError, match="no such file"):
        fetcher.fetch(str(tmp_path / "absent.jpg"))
    forbidden = Fetcher(fast_fetch.model_copy(update={"allow_local_paths": False}))
    with pytest.raises(FetchError, match="local paths are not allowed"):
        forbidden.fetch(str(small))


@pytest.mark.parametrize("address", ["169.254.169.254", "fe80::1", "0.0.0.0",
                                     "::ffff:169.254.169.254", "100.100.100.200",
                                     "fd00:ec2::254"])
def test_metadata_and_link_local_addresses_are_denied(fast_fetch: FetchConfig, address: str):
    # The check itself, on resolved addresses: no traffic is ever sent to these.
    policy = AddressPolicy(fast_fetch.deny_networks, fast_fetch.allow_networks)
    with pytest.raises(FetchError, match="refused"):
        policy.check(address)


def test_allow_list_limits_contacts_to_its_networks():
    policy = AddressPolicy(deny=[], allow=["10.0.0.0/8"])
    policy.check("10.1.2.3")
    with pytest.raises(FetchError, match="not in the allowed networks"):
        policy.check("127.0.0.1")
    AddressPolicy(deny=["169.254.0.0/16"], allow=[]).check("127.0.0.1")  # loopback allowed


def test_a_refused_connection_is_named_as_refused_not_as_a_timeout(fast_fetch: FetchConfig):
    import socket

    with socket.socket() as probe:  # a loopback port with nobody listening once it is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fetcher = Fetcher(fast_fetch.model_copy(update={"retries": 1, "backoff_s": 0}))
    with pytest.raises(FetchError) as raised:
        fetcher.fetch(f"http://127.0.0.1:{port}/meter.jpg")
    reason = str(raised.value)
    assert reason.startswith("connection failed:") and "refused" in reason.lower()
    assert "timeout" not in reason and reason.endswith("(1 retries)")
