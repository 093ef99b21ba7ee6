"""fetch_url against a real local HTTP server, and its refusals, which happen before any connection."""

from __future__ import annotations

import gzip
import http.server
import io
import re
import socket
import socketserver
import threading
import time
from contextlib import contextmanager

import pytest
import urllib3.util.connection
from PIL import Image

import imgsim
from imgsim.core.errors import ImageError, UrlError
from imgsim.inputs import fetch
from imgsim.inputs.fetch import fetch_url

PUBLIC = "93.184.216.34"  # a globally routable address; tests never really connect to it
FAST = dict(connect_timeout=1, total_timeout=2)


@contextmanager
def refused(reason: str):
    """A destination refused: a visitor reads only "<url>: not allowed"; `detail` (the owner's) gives `reason`."""
    with pytest.raises(UrlError) as caught:
        yield caught
    assert str(caught.value).endswith(": not allowed") and "\n" not in str(caught.value), str(caught.value)
    assert re.search(reason, caught.value.detail), caught.value.detail


def png_bytes(size=(8, 6), colour=(200, 30, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


PNG = png_bytes()


@pytest.fixture
def private_ok(monkeypatch):
    monkeypatch.setenv("IMGSIM_ALLOW_PRIVATE_URLS", "1")


@pytest.fixture
def no_private(monkeypatch):
    monkeypatch.delenv("IMGSIM_ALLOW_PRIVATE_URLS", raising=False)


class Net:
    """A pretend resolver and internet: `names` answer lookups, connections to `PUBLIC` (and any other
    address in `reach_server`) reach the local server.

    Every lookup and connection is recorded; a connection to any other non-loopback address is
    refused without touching the network.
    """

    def __init__(self, monkeypatch, server):
        self.names = {}  # name -> list of addresses, or a function returning one
        self.reach_server = {PUBLIC}  # addresses whose connections reach the local server
        self.lookups, self.connections = [], []
        real_getaddrinfo = socket.getaddrinfo
        real_connect = urllib3.util.connection.create_connection

        def getaddrinfo(host, port, *args, **kwargs):
            self.lookups.append(host)
            answer = self.names.get(host)
            if answer is None:
                return real_getaddrinfo(host, port, *args, **kwargs)
            addresses = answer() if callable(answer) else answer
            return [
                (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in addresses
            ]

        def create_connection(address, *args, **kwargs):
            self.connections.append(address)
            host, port = address
            if host in self.reach_server:
                return real_connect((server.host, port), *args, **kwargs)
            if host not in ("127.0.0.1", "127.0.0.2", "::1"):
                raise ConnectionRefusedError(111, "Connection refused (no internet in tests)")
            return real_connect(address, *args, **kwargs)

        # socket.getaddrinfo as fetch sees it (the same module object urllib3 uses).
        monkeypatch.setattr(fetch.socket, "getaddrinfo", getaddrinfo)
        monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)


@pytest.fixture
def net(monkeypatch, http_server, no_private):
    return Net(monkeypatch, http_server)


class RawServer:
    """A real HTTP server that writes its answers byte by byte, for the hostile responses a well-behaved
    server library will not send (trickled headers, a Content-Length that lies, a body cut short);
    every other test uses pytest-httpserver's (`http_server`)."""

    def __init__(self):
        self.routes = {}
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                route = owner.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                try:
                    route(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client hung up, as a size or time limit makes it do

            def log_message(self, format, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            def server_bind(self):
                # HTTPServer.server_bind looks the host up with getfqdn, which can wait on DNS.
                socketserver.TCPServer.server_bind(self)
                self.server_name, self.server_port = self.server_address[:2]

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def route(self, path: str, handler) -> str:
        """Answer GET `path` with `handler(request_handler)`; returns the path's URL."""
        self.routes[path] = handler
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module")
def raw_server():
    server = RawServer()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


# --- success and the allow-private switch -----------------------------------------------------


def test_fetches_png_from_local_server(http_server, private_ok):
    url = http_server.serve("/fetch/png", PNG)
    assert fetch_url(url, **FAST) == PNG
    assert ("/fetch/png", f"127.0.0.1:{http_server.port}") in http_server.requests


def test_local_server_refused_without_the_switch(http_server, no_private):
    url = http_server.serve("/fetch/no-switch", PNG)
    with refused(r"127\.0\.0\.1 is a loopback address.*IMGSIM_ALLOW_PRIVATE_URLS=1"):
        fetch_url(url, **FAST)
    assert "/fetch/no-switch" not in http_server.paths()


def test_argument_overrides_environment(http_server, private_ok):
    url = http_server.serve("/fetch/override", PNG)
    with refused("loopback"):
        fetch_url(url, allow_private=False, **FAST)
    assert fetch_url(url, allow_private=True, **FAST) == PNG


def test_proxy_settings_are_ignored(http_server, private_ok, monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens on the discard port
    assert fetch_url(http_server.serve("/fetch/proxy", PNG), **FAST) == PNG


def test_compressed_body_is_not_inflated(http_server, private_ok):
    packed = gzip.compress(PNG)
    url = http_server.serve("/fetch/gzip", packed, headers=[("Content-Encoding", "gzip")])
    assert fetch_url(url, **FAST) == packed


def test_path_and_query_are_sent_encoded(http_server, private_ok):
    http_server.serve("/fetch/a b", PNG)  # as the server decodes it; `paths()` are as sent
    assert fetch_url(http_server.url("/fetch/a b?x=1 2#frag"), **FAST) == PNG
    assert "/fetch/a%20b?x=1%202" in http_server.paths()


# --- HTTP status, content type ----------------------------------------------------------------


@pytest.mark.parametrize("status", [404, 500, 204, 304])
def test_status_other_than_200_is_an_error(http_server, private_ok, status):
    url = http_server.serve(f"/fetch/status-{status}", b"", status=status)
    with pytest.raises(UrlError, match=f"HTTP status {status}"):
        fetch_url(url, **FAST)


def test_missing_path_names_404(http_server, private_ok):
    with pytest.raises(UrlError, match=r"/fetch/nothing-here: HTTP status 404"):
        fetch_url(http_server.url("/fetch/nothing-here"), **FAST)


def test_html_served_as_jpeg_is_fetched_then_refused_as_image(http_server, private_ok):
    html = b"<!doctype html><html><body>not an image</body></html>"
    url = http_server.serve("/fetch/fake.jpg", html, content_type="image/jpeg")
    assert fetch_url(url, **FAST) == html  # the content type is not trusted either way
    with pytest.raises(ImageError, match="not an image") as caught:
        imgsim.load_image(url, 32)
    assert not isinstance(caught.value, UrlError)
    assert url in str(caught.value)


# --- redirects ------------------------------------------------------------------------------------


def redirect(server, path: str, location: str) -> str:
    """`path` on `server` answers 302 to `location`; returns the path's URL."""
    return server.serve(path, b"", status=302, content_type="text/plain", headers=[("Location", location)])


def chain(server, name: str, hops: int) -> str:
    """A chain of `hops` redirects ending at a PNG; returns the first URL."""
    server.serve(f"/fetch/{name}/0", PNG)
    for hop in range(1, hops + 1):
        redirect(server, f"/fetch/{name}/{hop}", f"/fetch/{name}/{hop - 1}")
    return server.url(f"/fetch/{name}/{hops}")


def test_one_redirect_is_followed(http_server, private_ok):
    assert fetch_url(chain(http_server, "one", 1), **FAST) == PNG


def test_relative_location_is_resolved_against_the_current_url(http_server, private_ok):
    http_server.serve("/fetch/rel/target.png", PNG)
    url = redirect(http_server, "/fetch/rel/sub/start", "../target.png")
    assert fetch_url(url, **FAST) == PNG


def test_three_redirects_are_the_limit(http_server, private_ok):
    assert fetch_url(chain(http_server, "three", 3), **FAST) == PNG
    with pytest.raises(UrlError, match="more than 3 redirects"):
        fetch_url(chain(http_server, "four", 4), **FAST)
    assert "/fetch/four/0" not in http_server.paths()
    with pytest.raises(UrlError, match="more than 0 redirects"):
        fetch_url(chain(http_server, "one-of-none", 1), max_redirects=0, **FAST)


@pytest.mark.parametrize("location", ["ftp://example.com/a.png", "file:///etc/passwd", "gopher://127.0.0.1:70/"])
def test_redirect_to_refused_scheme(http_server, private_ok, location):
    url = redirect(http_server, f"/fetch/to-scheme/{location.split(':')[0]}", location)
    with pytest.raises(UrlError, match="only http and https") as caught:
        fetch_url(url, **FAST)
    assert f"redirected to {location}" in str(caught.value)


def test_redirect_without_location(http_server, private_ok):
    url = http_server.serve("/fetch/no-location", b"", status=301)
    with pytest.raises(UrlError, match="without a Location"):
        fetch_url(url, **FAST)


PRIVATE_TARGETS = [
    "http://10.0.0.1/a.png",
    "http://127.0.0.1:{port}/fetch/private-png",
    "http://localhost:{port}/fetch/private-png",
    "http://[::ffff:169.254.169.254]/latest/meta-data/",
]


@pytest.mark.parametrize("n", range(len(PRIVATE_TARGETS)))
def test_redirect_from_public_to_private_is_refused(http_server, net, n):
    net.names["public.test"] = [PUBLIC]
    http_server.serve("/fetch/private-png", PNG)
    path = f"/fetch/to-private/{n}"
    redirect(http_server, path, PRIVATE_TARGETS[n].format(port=http_server.port))
    with refused("redirected to .*not a public one"):
        fetch_url(f"http://public.test:{http_server.port}{path}", **FAST)
    assert net.connections == [(PUBLIC, http_server.port)]
    assert path in http_server.paths()
    assert "/fetch/private-png" not in http_server.paths()


# --- size and time limits -------------------------------------------------------------------------


def test_slow_body_is_cut_off_at_the_total_timeout(raw_server, private_ok):
    def trickle(request):
        request.send_response(200)
        request.send_header("Content-Length", "1000")
        request.end_headers()
        for _ in range(200):  # 1 byte every 50 ms: each read is quick, the whole is not
            request.wfile.write(b"x")
            request.wfile.flush()
            time.sleep(0.05)

    assert_cut_off_at_half_a_second(raw_server.route("/fetch/slow-body", trickle))


def test_slow_headers_are_cut_off_at_the_total_timeout(raw_server, private_ok):
    def trickle(request):
        request.wfile.write(b"HTTP/1.0 200 OK\r\n")
        for n in range(200):
            request.wfile.write(f"X-Slow-{n}: 1\r\n".encode())
            request.wfile.flush()
            time.sleep(0.05)

    assert_cut_off_at_half_a_second(raw_server.route("/fetch/slow-headers", trickle))


def assert_cut_off_at_half_a_second(url):
    start = time.monotonic()
    with pytest.raises(UrlError, match="took longer than 0.5 s"):
        fetch_url(url, connect_timeout=1, total_timeout=0.5)
    assert time.monotonic() - start < 1.5


def test_silent_server_is_cut_off(raw_server, private_ok):
    url = raw_server.route("/fetch/silent", lambda request: time.sleep(3))
    start = time.monotonic()
    with pytest.raises(UrlError, match="took longer than 0.3 s"):
        fetch_url(url, connect_timeout=1, total_timeout=0.3)
    assert time.monotonic() - start < 1.2


def test_content_length_over_the_cap_is_refused_before_the_body(raw_server, private_ok):
    def promise_much(request):
        request.send_response(200)
        request.send_header("Content-Length", str(10 * 2**20))
        request.end_headers()
        request.wfile.flush()
        time.sleep(3)  # the body would come later; the client must not wait for it

    url = raw_server.route("/fetch/too-long", promise_much)
    start = time.monotonic()
    with pytest.raises(UrlError, match=r"Content-Length is 10485760 bytes, over the 65536 byte limit"):
        fetch_url(url, max_bytes=65536, connect_timeout=1, total_timeout=2.5)
    assert time.monotonic() - start < 2  # the body would take 3 s; the total timeout is 2.5 s


def test_lying_content_length_never_yields_more_than_it_claims(raw_server, private_ok):
    def lie(request):
        request.send_response(200)
        request.send_header("Content-Length", "100")
        request.end_headers()
        request.wfile.write(b"y" * 2**20)  # claims 100 bytes, sends 1 MiB: over the 64 KiB cap

    url = raw_server.route("/fetch/lying-length", lie)
    assert fetch_url(url, max_bytes=65536, **FAST) == b"y" * 100


@pytest.mark.parametrize("framing", ["close", "chunked"])
def test_body_without_content_length_is_capped_while_streaming(raw_server, private_ok, framing):
    def unbounded(request):
        if framing == "chunked":
            request.protocol_version = "HTTP/1.1"
        request.send_response(200)
        if framing == "chunked":
            request.send_header("Transfer-Encoding", "chunked")
        request.end_headers()
        for _ in range(64):  # 64 x 16 KiB = 1 MiB
            piece = b"z" * 16384
            request.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if framing == "chunked" else piece)
        if framing == "chunked":
            request.wfile.write(b"0\r\n\r\n")

    url = raw_server.route(f"/fetch/unbounded-{framing}", unbounded)
    with pytest.raises(UrlError, match="the body is over the 65536 byte limit"):
        fetch_url(url, max_bytes=65536, **FAST)
    small = raw_server.route(f"/fetch/small-{framing}", unbounded)
    assert len(fetch_url(small, max_bytes=2**20, **FAST)) == 2**20


def test_body_shorter_than_its_content_length_is_an_error(raw_server, private_ok):
    def short(request):
        request.send_response(200)
        request.send_header("Content-Length", "1000")
        request.end_headers()
        request.wfile.write(b"only ten!!")

    url = raw_server.route("/fetch/short", short)
    with pytest.raises(UrlError, match="download failed"):
        fetch_url(url, **FAST)


def test_connection_refused(private_ok):
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    with pytest.raises(UrlError, match=f"cannot connect to 127.0.0.1 port {port}"):
        fetch_url(f"http://127.0.0.1:{port}/a.png", **FAST)


def test_https_to_a_plain_http_server_fails_cleanly(http_server, private_ok):
    http_server.serve("/fetch/tls", PNG)
    with pytest.raises(UrlError, match="cannot connect"):
        fetch_url(f"https://127.0.0.1:{http_server.port}/fetch/tls", **FAST)


# --- resolver: every address checked, the checked one used ----------------------------------------


def test_name_resolving_to_private_address_is_refused(net):
    net.names["intranet.test"] = ["10.0.0.1"]
    with refused(r"intranet\.test resolves to 10\.0\.0\.1, a private address"):
        fetch_url("http://intranet.test/a.png", **FAST)
    assert net.connections == []


@pytest.mark.parametrize("answer", [[PUBLIC, "10.0.0.1"], ["10.0.0.1", PUBLIC], [PUBLIC, "::1"]])
def test_every_resolved_address_is_checked(net, answer):
    net.names["mixed.test"] = answer
    with refused("not a public one"):
        fetch_url("http://mixed.test/a.png", **FAST)
    assert net.connections == []


def test_public_name_connects_to_the_checked_address(http_server, net):
    net.names["public.test"] = [PUBLIC]
    http_server.serve("/fetch/public", PNG)
    assert fetch_url(f"http://public.test:{http_server.port}/fetch/public", **FAST) == PNG
    assert net.connections == [(PUBLIC, http_server.port)]
    assert ("/fetch/public", f"public.test:{http_server.port}") in http_server.requests


def rebinding(first: str, later: str):
    """A resolver answer that is `first` on the first lookup and `later` on every lookup after it."""
    answers = iter([[first]])
    return lambda: next(answers, [later])


def test_rebinding_cannot_switch_a_checked_public_address_to_loopback(http_server, net):
    net.names["rebind.test"] = rebinding(PUBLIC, "127.0.0.1")
    http_server.serve("/fetch/rebind", PNG)
    assert fetch_url(f"http://rebind.test:{http_server.port}/fetch/rebind", **FAST) == PNG
    assert net.lookups.count("rebind.test") == 1
    assert net.connections == [(PUBLIC, http_server.port)]  # never ("127.0.0.1", port)


def test_rebinding_between_two_real_servers_reaches_the_first(http_server, make_http_server, net, monkeypatch):
    monkeypatch.setenv("IMGSIM_ALLOW_PRIVATE_URLS", "1")
    try:
        second = make_http_server("127.0.0.2", http_server.port)  # same port: only the address differs
    except OSError:
        pytest.skip("127.0.0.2 cannot be bound here")
    http_server.serve("/fetch/rebind-real", b"first server")
    second.serve("/fetch/rebind-real", b"second server")
    net.names["rebind.test"] = rebinding("127.0.0.1", "127.0.0.2")
    assert fetch_url(f"http://rebind.test:{http_server.port}/fetch/rebind-real", **FAST) == b"first server"
    assert net.lookups.count("rebind.test") == 1
    assert net.connections == [("127.0.0.1", http_server.port)]
    assert second.requests == []


def test_unresolvable_name(net):
    net.names["nowhere.test"] = []
    with refused("nowhere.test resolves to no IP address"):
        fetch_url("http://nowhere.test/", **FAST)


# --- refusals before any connection ------------------------------------------------------------------

REFUSED_DESTINATIONS = [
    ("http://127.0.0.1/", "loopback"),
    ("https://127.0.0.1/", "loopback"),
    ("http://127.8.9.10:8080/", "loopback"),
    ("http://localhost/", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://10.0.0.1/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://[fc00::1]/", "private"),
    ("http://[fec0::1]/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://100.64.0.1/", "shared"),
    ("http://100.127.255.254/", "shared"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://0.1.2.3/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://239.255.255.250/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://255.255.255.255/", "reserved"),
    ("http://[::7f00:1]/", "reserved"),  # IPv4-compatible ::127.0.0.1
    ("http://192.0.2.1/", "non-global"),  # documentation range
    ("http://198.18.0.1/", "non-global"),  # benchmarking range
    ("http://[2001:db8::1]/", "non-global"),
    # IPv4 hidden in IPv6
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:7f00:1]/", "loopback"),
    ("http://[::ffff:169.254.169.254]/", "link-local"),
    ("http://[2002:7f00:1::]/", "loopback"),  # 6to4 of 127.0.0.1
    ("http://[2002:a00:1::1]/", "private"),  # 6to4 of 10.0.0.1
    ("http://[64:ff9b::7f00:1]/", "loopback"),  # NAT64 of 127.0.0.1
    ("http://[64:ff9b::a9fe:a9fe]/", "link-local"),  # NAT64 of 169.254.169.254
    ("http://[64:ff9b:1::a00:1]/", "private"),  # local-use NAT64 of 10.0.0.1
    ("http://[2001:0:5db8:d822::80ff:fffe]/", "loopback"),  # Teredo, client 127.0.0.1
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "non-global"),  # Teredo, client 192.0.2.45
    # numeric spellings of 127.0.0.1 (and 0.0.0.0)
    ("http://2130706433/", "loopback"),
    ("http://0x7f.1/", "loopback"),
    ("http://0x7F000001/", "loopback"),
    ("http://0177.0.0.1/", "loopback"),
    ("http://017700000001/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://127.0.1/", "loopback"),
    ("http://127.0.0.1./", "loopback"),
    ("http://0/", "unspecified"),
]


@pytest.mark.parametrize(("url", "kind"), REFUSED_DESTINATIONS)
def test_non_public_destination_is_refused_before_connecting(net, url, kind):
    with refused(f"an? {kind}.* address, not a public one") as caught:
        fetch_url(url, **FAST)
    assert net.connections == []
    assert str(caught.value).startswith(url)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("host", ["2130706433", "0x7f.1", "0177.0.0.1", "127.1", "127.0.0.1."])
def test_numeric_spellings_are_read_as_the_address_they_spell(net, host):
    # getaddrinfo (inet_aton) reads these as 127.0.0.1 too; fetch decides without asking it.
    assert socket.getaddrinfo(host.rstrip("."), 80, type=socket.SOCK_STREAM)[0][4][0] == "127.0.0.1"
    net.lookups.clear()
    with refused(r"127\.0\.0\.1 is a loopback address"):
        fetch_url(f"http://{host}/", **FAST)
    assert net.lookups == [] and net.connections == []


@pytest.mark.parametrize("url", ["http://224.0.0.1/", "http://0.0.0.0/", "http://[::]/", "http://240.0.0.1/"])
def test_switch_does_not_allow_unspecified_multicast_or_reserved(net, monkeypatch, url):
    monkeypatch.setenv("IMGSIM_ALLOW_PRIVATE_URLS", "1")
    with refused("not a public one"):
        fetch_url(url, **FAST)
    assert net.connections == []


# Destinations IMGSIM_ALLOW_PRIVATE_URLS=1 opens (RFC 1918, unique local IPv6), each standing in for the
# real local server, and the ones it keeps closed even though the same server would answer there.
INTRANET = ["10.0.0.1", "172.16.0.1", "192.168.1.1", "fc00::1", "fd12:3456::1", "fec0::1"]
STILL_REFUSED = [
    ("169.254.169.254", "link-local"),  # the cloud metadata service
    ("169.254.0.1", "link-local"),
    ("fe80::1", "link-local"),
    ("::ffff:169.254.169.254", "link-local"),
    ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of the metadata service
    ("2002:a9fe:a9fe::1", "link-local"),  # 6to4 of the metadata service
    ("100.64.0.1", "shared"),
    ("192.0.2.1", "non-global"),
    ("198.51.100.7", "non-global"),
    ("2001:db8::1", "non-global"),
]


def served_at(net, http_server, address: str, path: str) -> str:
    """A URL naming `address` whose connections reach the real local server, which answers `path` with PNG."""
    net.reach_server.add(address)
    http_server.serve(path, PNG)
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{http_server.port}{path}"


@pytest.mark.parametrize("address", INTRANET)
def test_switch_opens_private_ranges(net, http_server, monkeypatch, address):
    monkeypatch.setenv("IMGSIM_ALLOW_PRIVATE_URLS", "1")
    url = served_at(net, http_server, address, f"/fetch/intranet/{address}")
    assert fetch_url(url, **FAST) == PNG
    assert net.connections == [(address, http_server.port)]
    monkeypatch.delenv("IMGSIM_ALLOW_PRIVATE_URLS")
    with refused("a private address, not a public one.*IMGSIM_ALLOW_PRIVATE_URLS=1"):
        fetch_url(url, **FAST)


@pytest.mark.parametrize(("address", "kind"), STILL_REFUSED)
def test_switch_keeps_link_local_and_other_non_global_addresses_refused(net, http_server, monkeypatch, address, kind):
    monkeypatch.setenv("IMGSIM_ALLOW_PRIVATE_URLS", "1")
    path = f"/fetch/metadata/{address}"
    url = served_at(net, http_server, address, path)
    net.names["metadata.test"] = [address]
    for attempt in (url, f"http://metadata.test:{http_server.port}{path}"):
        with pytest.raises(UrlError) as caught:
            fetch_url(attempt, **FAST)
        message = caught.value.detail
        assert str(caught.value) == f"{attempt}: not allowed"
        assert re.search(f"an? {kind}.* address, not a public one$", message), message
        assert "IMGSIM_ALLOW_PRIVATE_URLS" not in message and "\n" not in message  # no hint that the switch helps
    assert net.connections == [] and path not in http_server.paths()


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/a.png", "file:///etc/passwd", "gopher://example.com/", "data:image/png;base64,iVBORw0KGgo=",
     "javascript:alert(1)", "example.com/a.png", "//example.com/a.png", ""],
)
def test_refused_schemes(net, url):
    with pytest.raises(UrlError, match="only http and https|not a URL"):
        fetch_url(url, **FAST)
    assert net.lookups == [] and net.connections == []


@pytest.mark.parametrize(
    "url",
    ["http://user:secret@example.com/a.png", "http://user@example.com/", "http://:secret@example.com/",
     "https://example.com@127.0.0.1/", "http://a@b@example.com/"],
)
def test_user_info_is_refused(net, monkeypatch, url):
    monkeypatch.setenv("IMGSIM_ALLOW_PRIVATE_URLS", "1")
    with pytest.raises(UrlError, match="user name or password") as caught:
        fetch_url(url, **FAST)
    assert "secret" not in str(caught.value)
    assert net.lookups == [] and net.connections == []


@pytest.mark.parametrize(
    "url, problem",
    [
        ("http://exa mple.com/", "not a valid host name"),
        ("http://example.com\r\nX-Injected: 1/", "control characters"),
        ("http://[::1/", "not a valid URL"),
        ("http://example.com:99999/", "not a valid URL"),
        ("http://example.com:0/", "out of range"),
        ("http:///a.png", "no host"),
        ("http://1.2.3.4.5/", "not a valid IP address"),
        ("http://256.1.1.1/", "not a valid IP address"),
        ("http://09.1.1.1/", "not a valid IP address"),
    ],
)
def test_malformed_urls(net, url, problem):
    with pytest.raises(UrlError, match=problem) as caught:
        fetch_url(url, **FAST)
    assert "\n" not in str(caught.value) and "\r" not in str(caught.value)
    assert net.connections == []


@pytest.mark.parametrize(
    "url, address",
    [
        (f"http://{PUBLIC}/", PUBLIC),
        ("http://1572395042/", PUBLIC),  # 93.184.216.34 as one number
        ("http://[2606:2800:220:1:248:1893:25c8:1946]/", "2606:2800:220:1:248:1893:25c8:1946"),
        ("http://[::ffff:93.184.216.34]/", "::ffff:5db8:d822"),
        ("http://[2002:5db8:d822::1]/", "2002:5db8:d822::1"),  # 6to4 of a public address
        ("http://[64:ff9b::5db8:d822]/", "64:ff9b::5db8:d822"),  # NAT64 of a public address
    ],
)
def test_public_destinations_pass_the_check_and_are_connected_to(net, url, address):
    with pytest.raises(UrlError, match="cannot connect"):  # the pretend internet refuses them
        fetch_url(url, **FAST)
    assert net.connections == [(address, 80)]
