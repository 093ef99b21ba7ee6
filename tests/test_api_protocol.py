"""`imgsim api`'s HTTP protocol turns Nagle's algorithm off on every accepted connection (imgsim.api.protocol)."""

import asyncio
import socket

import pytest

pytest.importorskip("uvicorn")

from uvicorn.protocols.http.auto import AutoHTTPProtocol  # noqa: E402

from imgsim.api.protocol import NoDelayHTTP  # noqa: E402


def accepted_nodelay(protocol_class) -> int:
    """TCP_NODELAY of a connection accepted on a listener bound as uvicorn binds one for several workers (the
    protocol number left at 0), with `protocol_class` told of it as uvicorn tells its protocol."""

    async def main():
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # proto 0, as uvicorn's Config.bind_socket
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        found = asyncio.get_running_loop().create_future()

        class Probe(protocol_class):
            def __init__(self):  # the HTTP protocol's own state is not needed to see the socket option
                pass

            def connection_made(self, transport):
                try:
                    super().connection_made(transport)
                except AttributeError:  # the HTTP protocol's state, skipped above
                    pass
                sock = transport.get_extra_info("socket")
                found.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
        client = socket.create_connection(listener.getsockname())
        try:
            return await asyncio.wait_for(found, 10)
        finally:
            client.close()
            server.close()

    return asyncio.run(main())


def test_a_connection_accepted_on_a_listener_bound_for_several_workers_has_nagle_off():
    assert accepted_nodelay(AutoHTTPProtocol) == 0  # the control: uvicorn's own protocol leaves it on there
    assert accepted_nodelay(NoDelayHTTP) != 0


def test_imgsim_api_hands_uvicorn_that_protocol(monkeypatch):
    import uvicorn

    from imgsim.api import serving

    # run() sets these for its workers: each goes back to what it was after the test (PROMETHEUS_MULTIPROC_DIR
    # left behind, naming the folder run() removed, sent the metrics of a later in-process app there, and the
    # worker's next API tests failed on "Duplicated timeseries" and a missing file).
    for name in ("PROMETHEUS_MULTIPROC_DIR", "IMGSIM_API_BIND", "TF_CPP_MIN_LOG_LEVEL", "TF_NUM_INTRAOP_THREADS"):
        monkeypatch.setenv(name, "")  # recorded, so undone: a delenv of a name not set records nothing
        monkeypatch.delenv(name)
    given = {}
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: given.update(kwargs))
    assert serving.run("127.0.0.1", 0, None, 2) == 0
    assert given["http"] is NoDelayHTTP and given["workers"] == 2
