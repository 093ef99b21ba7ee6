"""Download an image URL given by an untrusted user: http(s) only, public hosts only, bounded in size and time.

The host is resolved once, every address it resolves to is checked, and the connection is made to a
checked address itself (the name is sent only as Host header and TLS server name), so a DNS answer
that changes between check and connect cannot send the request somewhere else. Redirects are
followed by hand and every hop is checked again. Proxy settings in the environment are never used.
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import os
import re
import socket
import threading
import time
from typing import NamedTuple
from urllib.parse import quote, urljoin, urlsplit

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import HTTPError

from imgsim.core.errors import UrlError

ALLOW_PRIVATE_ENV = "IMGSIM_ALLOW_PRIVATE_URLS"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Kinds of address IMGSIM_ALLOW_PRIVATE_URLS=1 lets through: loopback and the private ranges below.
# Link-local (169.254.169.254 is the cloud metadata service; fe80::/10), shared, documentation and
# every other non-global range stay refused, as do unspecified, multicast and reserved addresses.
INTRANET_KINDS = frozenset({"loopback", "private"})
PRIVATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # RFC 1918
    "fc00::/7", "fec0::/10",  # unique local, and the site-local range it replaced
))
SHARED = ipaddress.ip_network("100.64.0.0/10")
THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
IPV4_PART = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")
HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")
CHUNK = 64 * 1024
log = logging.getLogger(__name__)


class _Refused(Exception):
    """A problem with one hop; `fetch_url` adds the URL and raises UrlError.

    `hidden`: the reason tells how the server resolves names (an internal name's address, or that it
    exists at all), so a visitor is told only "not allowed".
    """

    def __init__(self, message: str, hidden: bool = False):
        super().__init__(message)
        self.hidden = hidden


def fetch_url(
    url: str,
    *,
    max_bytes: int = 20 * 2**20,
    connect_timeout: float = 5.0,
    total_timeout: float = 15.0,
    max_redirects: int = 3,
    allow_private: bool | None = None,
) -> bytes:
    """The body of an http(s) URL, or UrlError with one line naming the URL and what went wrong.

    `allow_private` (default: IMGSIM_ALLOW_PRIVATE_URLS=1 in the environment) also lets through
    loopback and private (RFC 1918, fc00::/7) destinations, for intranets and tests; never
    link-local ones such as the cloud metadata service.
    """
    if allow_private is None:
        allow_private = os.environ.get(ALLOW_PRIVATE_ENV, "").strip().lower() in ("1", "true", "yes")
    deadline = _Deadline(total_timeout)
    current = url
    try:
        for _ in range(max_redirects + 1):
            hop = _parse(current)
            addresses = _addresses(hop.host, hop.port, allow_private)
            status, location, body = _get(hop, addresses, max_bytes, connect_timeout, deadline)
            if status not in REDIRECT_STATUSES:
                return body
            if not location:
                raise _Refused(f"HTTP {status} redirect without a Location header")
            current = urljoin(current, location.strip())
        raise _Refused(f"more than {max_redirects} redirects")
    except _Refused as exc:
        via = f" (redirected to {_shown(current)})" if current != url else ""
        detail = f"{_shown(url)}{via}: {exc}"
        if exc.hidden:
            log.warning("refused to fetch %s", detail)  # the reason, for the person running imgsim
            raise UrlError(f"{_shown(url)}{via}: not allowed", detail) from None
        raise UrlError(detail) from None


class _Hop(NamedTuple):
    scheme: str
    host: str  # lower-case ASCII (IDNA) name or IP address, no brackets
    port: int
    target: str  # path and query, percent-encoded
    host_header: str


class _Deadline:
    """The end of the whole download, redirects included."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def check(self) -> None:
        if self.left() <= 0:
            raise _Refused(f"the download took longer than {self.seconds:g} s")


def _parse(url) -> _Hop:
    """Split a URL into scheme, host, port, request target and Host header, refusing what is never fetched."""
    if not isinstance(url, str) or not url.strip():
        raise _Refused("not a URL")
    url = url.strip()
    if any(not c.isprintable() for c in url):
        raise _Refused("the URL contains control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _Refused(f"not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise _Refused(f"only http and https URLs are fetched, not {scheme + ':' if scheme else 'this'}")
    if "@" in parts.netloc:
        raise _Refused("URLs with a user name or password are refused")
    if not parts.hostname:
        raise _Refused("the URL has no host")
    host = parts.hostname
    if ":" not in host:
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise _Refused(f"{parts.hostname!r} is not a valid host name") from None
        if not HOST_NAME.fullmatch(host) or len(host) > 254:
            raise _Refused(f"{parts.hostname!r} is not a valid host name")
    default = 443 if scheme == "https" else 80
    port = default if port is None else port
    if not 0 < port < 65536:
        raise _Refused(f"port {port} is out of range")
    shown_host = f"[{host}]" if ":" in host else host
    host_header = shown_host if port == default else f"{shown_host}:{port}"
    target = quote(parts.path or "/", safe="/%:@!$&'()*+,;=~") + (
        "?" + quote(parts.query, safe="/%:@!$&'()*+,;=~?") if parts.query else ""
    )
    return _Hop(scheme, host, port, target, host_header)


def _addresses(host: str, port: int, allow_private: bool) -> list:
    """The addresses `host` stands for, resolved once; refuses the host if any of them is not public."""
    try:
        literal = _literal_ip(host)
    except ValueError:
        raise _Refused(f"{host!r} is not a valid IP address") from None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise _Refused(f"cannot resolve {host} ({getattr(exc, 'strerror', None) or exc})", hidden=True) from None
        found = (info[4][0] for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6))
        addresses = list(dict.fromkeys(ipaddress.ip_address(address) for address in found))
        if not addresses:
            raise _Refused(f"{host} resolves to no IP address", hidden=True)
    for address in addresses:
        kind = _address_kind(address)
        if kind and not (allow_private and kind in INTRANET_KINDS):
            where = f"{address} is" if literal is not None else f"{host} resolves to {address},"
            article = "an" if kind[0] in "aeiou" else "a"
            hint = f" (set {ALLOW_PRIVATE_ENV}=1 to allow it)" if kind in INTRANET_KINDS else ""
            raise _Refused(f"{where} {article} {kind} address, not a public one{hint}", hidden=True)
    return addresses


def _address_kind(address) -> str | None:
    """Why an address is not a public destination ("loopback", "private", ...), or None when it is public.

    An IPv6 address that carries an IPv4 one (mapped ::ffff:a.b.c.d, 6to4, NAT64) is judged by the
    IPv4 address it leads to; a Teredo address by both IPv4 addresses inside it and by itself.
    """
    if address.version == 6:
        inner = _embedded_ipv4(address)
        if inner is not None:
            return _address_kind(inner)
        for inner in address.teredo or ():
            if kind := _address_kind(inner):
                return kind
    if address.is_multicast:
        return "multicast"
    if address.is_unspecified or address in THIS_NETWORK:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address in SHARED:
        return "shared (CGNAT)"
    if address.is_reserved:
        return "reserved"
    if any(address in network for network in PRIVATE_NETWORKS):
        return "private"
    if not address.is_global:
        return "non-global"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, 6to4 or NAT64 address leads to, or None."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in network for network in NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _literal_ip(host: str):
    """The address a numeric host spells, in any form a browser or inet_aton accepts, or None for a name.

    127.0.0.1, 2130706433, 0x7f.1, 0177.0.0.1 and 127.1 are all 127.0.0.1 (the WHATWG URL rules:
    a host whose last label is a number is an IPv4 address). Decided here rather than by the
    resolver, so no such host is ever looked up in DNS and the result does not depend on the libc.
    """
    if ":" in host:
        return ipaddress.IPv6Address(host)
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if not re.fullmatch(r"[0-9]+|0[xX][0-9a-fA-F]*", labels[-1]):
        return None
    if len(labels) > 4 or not all(IPV4_PART.fullmatch(label) for label in labels):
        raise ValueError(host)
    numbers = [int(p[2:] or "0", 16) if p[:2].lower() == "0x" else int(p, 8 if p[0] == "0" else 10) for p in labels]
    if any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        raise ValueError(host)
    return ipaddress.IPv4Address(sum(n << 8 * (3 - i) for i, n in enumerate(numbers[:-1])) + numbers[-1])


def _get(hop: _Hop, addresses, max_bytes: int, connect_timeout: float, deadline: _Deadline):
    """GET one hop from a checked address: (status, Location header, body); the body only for 200."""
    conn = _connect(hop, addresses, connect_timeout, deadline)
    # A socket timeout bounds each read, not a server that trickles bytes: this timer cuts the
    # socket at the deadline, whether the response is still in its headers or in its body.
    watchdog = threading.Timer(max(deadline.left(), 0), _cut, args=(conn.sock,))
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.timeout = max(deadline.left(), 0.001)
        headers = {"Host": hop.host_header, "User-Agent": "imgsim", "Accept": "image/*", "Accept-Encoding": "identity"}
        # decode_content=False: a compressed body is returned as it is (and then fails to decode
        # as an image) rather than inflated past the byte cap.
        conn.request("GET", hop.target, headers=headers, preload_content=False, decode_content=False)
        response = conn.getresponse()
        if response.status in REDIRECT_STATUSES:
            return response.status, response.headers.get("Location"), b""
        if response.status != 200:
            raise _Refused(f"HTTP status {response.status} {response.reason or ''}".rstrip())
        length = response.headers.get("Content-Length", "").strip()
        if length.isdigit() and int(length) > max_bytes:
            raise _Refused(f"Content-Length is {int(length)} bytes, over the {max_bytes} byte limit")
        chunks, size = [], 0
        while chunk := response.read1(min(CHUNK, max_bytes + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise _Refused(f"the body is over the {max_bytes} byte limit")
            deadline.check()
        deadline.check()  # the watchdog ends a body that is cut off at the deadline early, not in error
        return 200, None, b"".join(chunks)
    except (HTTPError, http.client.HTTPException, OSError, ValueError) as exc:
        deadline.check()
        raise _Refused(f"the download failed ({_reason(exc)})") from None
    finally:
        watchdog.cancel()
        conn.close()


def _connect(hop: _Hop, addresses, connect_timeout: float, deadline: _Deadline) -> HTTPConnection:
    """A connection to the first of the checked `addresses` that answers (never to the host by name)."""
    problem = "no address"
    for address in addresses:
        deadline.check()
        timeout = min(connect_timeout, deadline.left())
        if hop.scheme == "https":
            conn = HTTPSConnection(
                str(address), hop.port, timeout=timeout, server_hostname=hop.host, assert_hostname=hop.host
            )
        else:
            conn = HTTPConnection(str(address), hop.port, timeout=timeout)
        try:
            conn.connect()
            return conn
        except (HTTPError, OSError, ValueError) as exc:
            conn.close()
            problem = f"{address}: {_reason(exc)}"
    deadline.check()
    raise _Refused(f"cannot connect to {hop.host} port {hop.port} ({problem})")


def _cut(sock) -> None:
    """Shut a socket down from another thread, so that a read blocked on it returns at once."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's: TLS state is left to the reader
    except OSError:
        pass  # already closed: nothing left to interrupt


def _reason(exc: BaseException) -> str:
    """The innermost cause of a network error, in a few words on one line."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(text.split())


def _shown(url) -> str:
    """A URL as an error message shows it: no password, no control characters, not too long."""
    text = re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#]*@", r"\1***@", str(url).strip())
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= 200 else text[:197] + "..."
