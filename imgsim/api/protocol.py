"""uvicorn's HTTP protocol with Nagle's algorithm off on every accepted connection, whatever the worker count.

With `--workers N` uvicorn binds the listening socket itself, with its protocol number left at 0;
accepted sockets inherit it, and asyncio turns TCP_NODELAY on only for sockets that say IPPROTO_TCP.
So with two or more workers each answer on a keep-alive connection waited for the client's delayed
ACK: about 45 ms added to a request that takes 3 (uvicorn issue #3149, open). One worker was not
affected (asyncio builds that listener itself). Imported only by `imgsim api` (uvicorn is an extra).
"""

from __future__ import annotations

import socket

from uvicorn.protocols.http.auto import AutoHTTPProtocol


class NoDelayHTTP(AutoHTTPProtocol):  # the h11 or httptools protocol, as uvicorn's "auto" picks
    def connection_made(self, transport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
