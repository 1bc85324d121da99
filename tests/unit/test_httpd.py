"""The address checks and the Host rules of both HTTP servers, on real bound sockets."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from podium.errors import ConfigError
from podium.httpd import AllowedHosts, HttpLimits, bind, check_host, check_port


@pytest.mark.parametrize("port", [0, -1, 65536, 70000, 99999, True, "8080", 8.0])
def test_a_port_outside_1_to_65535_is_refused_naming_it_and_the_range(port: object) -> None:
    with pytest.raises(ConfigError) as info:
        check_port(port, "--metrics-port")
    assert f"--metrics-port {port!r} is not a port" in info.value.message
    assert "(fix: choose a port in 1..65535)" in info.value.message


def test_port_zero_is_any_free_port_where_the_api_allows_it() -> None:
    assert check_port(0, allow_zero=True) == 0
    assert check_port(65535) == 65535


@pytest.mark.parametrize(("host", "bare"), [
    ("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "0.0.0.0"), ("::1", "::1"), ("[::1]", "::1"),  # noqa: S104
    ("::", "::"), ("localhost", "localhost"), ("agents.internal", "agents.internal"),
    ("my-host.example.", "my-host.example."),
])
def test_addresses_and_host_names_are_accepted(host: str, bare: str) -> None:
    assert check_host(host) == bare


@pytest.mark.parametrize(("host", "what"), [
    ("999.1.1.1", "an IPv4 address"), ("1.2.3", "an IPv4 address"),
    ("1.2.3.4.5", "an IPv4 address"), ("", "an IP address or host name"),
    ("a_b", "an IP address or host name"), ("evil.example:80", "an IP address or host name"),
    ("::g", "an IP address or host name"), ("-lead", "an IP address or host name"),
    ("x" * 64 + ".com", "an IP address or host name"),
    ("k\u212a.example", "an IP address or host name"),
])
def test_a_malformed_host_is_refused_without_a_lookup(host: str, what: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_host(host)
    assert f"--host {host!r} is not {what}" in info.value.message
    assert "(fix: 127.0.0.1 for this machine only" in info.value.message


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    made: list[socket.socket] = []
    yield made
    for sock in made:
        sock.close()


def allowed(sockets: list[socket.socket], host: str, names: tuple[str, ...] = ()
            ) -> AllowedHosts:
    sock = bind(host, 0)
    sockets.append(sock)
    return AllowedHosts(host, sock, names)


def test_bound_to_loopback_the_address_and_localhost_with_the_port_are_allowed(
    sockets: list[socket.socket],
) -> None:
    hosts = allowed(sockets, "127.0.0.1")
    port = hosts.port
    for ok in (f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost:{port}"):
        assert hosts.allows(ok.encode()), ok
    for bad in ("127.0.0.1", "localhost", f"127.0.0.1:{port + 1}", f"evil.example:{port}",
                f"10.0.0.1:{port}", f"[::1]:{port}", f"127.0.0.1:{port}:{port}",
                f"127.0.0.1:0{port}x", "", f"127.0.0.1:\u00b2{port}"):
        assert not hosts.allows(bad.encode("latin-1")), bad


def test_bound_to_every_interface_any_ip_literal_with_the_port_is_allowed_but_no_name(
    sockets: list[socket.socket],
) -> None:
    hosts = allowed(sockets, "0.0.0.0")  # noqa: S104 - what the test is about
    port = hosts.port
    for ok in (f"10.1.2.3:{port}", f"192.168.0.7:{port}", f"[fe80::1]:{port}",
               f"localhost:{port}"):
        assert hosts.allows(ok.encode()), ok
    for bad in (f"evil.example:{port}", f"10.1.2.3:{port + 1}", f"rebind.127.0.0.1.nip.io:{port}"):
        assert not hosts.allows(bad.encode()), bad


def test_allowed_names_match_any_port_and_star_allows_everything(
    sockets: list[socket.socket],
) -> None:
    hosts = allowed(sockets, "127.0.0.1", ("Agents.Internal", "10.9.9.9"))
    assert hosts.allows(b"agents.internal")
    assert hosts.allows(b"agents.internal:443")
    assert hosts.allows(b"AGENTS.INTERNAL.:8101")
    assert hosts.allows(b"10.9.9.9:1")
    assert not hosts.allows(b"other.internal")
    everything = allowed(sockets, "127.0.0.1", ("*",))
    assert everything.allows(b"anything.example:1")
    with pytest.raises(ConfigError, match="--allowed-host 'no way'"):
        allowed(sockets, "127.0.0.1", ("no way",))


def test_bound_to_ipv6_loopback_the_bracketed_address_is_allowed(
    sockets: list[socket.socket],
) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        hosts = allowed(sockets, "::1")
    except ConfigError as exc:
        pytest.skip(f"cannot bind ::1 here: {exc.message}")
    port = hosts.port
    assert hosts.allows(f"[::1]:{port}".encode())
    assert hosts.allows(f"localhost:{port}".encode())
    assert not hosts.allows(f"::1:{port}".encode())
    assert not hosts.allows(f"[::1]:{port + 1}".encode())


def test_limits_refuse_nonsense_values() -> None:
    for bad in ({"max_body_bytes": 0}, {"header_timeout_s": 0}, {"idle_timeout_s": 1.5},
                {"max_connections": True}, {"body_timeout_s": -1}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            HttpLimits(**bad)  # type: ignore[arg-type]
