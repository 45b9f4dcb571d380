"""The HTTP protocol opcli's servers run under uvicorn: uvicorn's own, with the connection at hand.

An ASGI app only sees messages: uvicorn answers 500 when it returns without starting a response,
and closes the transport when it fails after starting one. What acts on the connection itself
(close it without a response, reset it, keep it open until the server stops) needs the transport,
so the protocol puts a ``Connection`` in each request's ``scope["extensions"]["opcli.connection"]``.
Rules about connections (limits, timeouts) belong in ``ConnectionAccess`` too.

``HttpToolsProtocol`` is the one ``runner.uvicorn_config`` passes as ``http=``; ``H11Protocol``
is the same over uvicorn's pure-Python h11 parser.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol as _H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpToolsProtocol

EXTENSION = "opcli.connection"


class Connection:
    """The TCP connection a request came on: close it, reset it, or wait while it lasts.

    ``ended`` is set once the client has gone away or the server has begun to shut down, so a
    request that waits on purpose waits on it and never holds the shutdown up.
    """

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.lost = asyncio.Event()
        self.ended = asyncio.Event()

    async def wait(self, seconds: float | None = None) -> bool:
        """Wait ``seconds`` (None: for ever) or until the connection ends; True when it ended first."""
        try:
            await asyncio.wait_for(self.ended.wait(), seconds)
        except asyncio.TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Close it without a response: the client sees the connection end (curl: "Empty reply")."""
        self.transport.close()
        # once uvicorn has seen the connection go, it sends nothing for a request that did not answer
        await self.lost.wait()

    async def reset(self) -> None:
        """Close it with a TCP reset: SO_LINGER 0 makes the close send RST instead of FIN."""
        if self.lost.is_set():
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()
        await self.lost.wait()


class ConnectionAccess:
    """Mixin for a uvicorn HTTP protocol: one ``Connection`` per TCP connection, in every request's scope."""

    connection: Connection

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        app = self.app  # type: ignore[has-type]

        async def with_connection(scope: dict[str, Any], receive: Any, send: Any) -> None:
            scope.setdefault("extensions", {})[EXTENSION] = self.connection
            await app(scope, receive, send)

        self.app = with_connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.connection = Connection(transport)
        super().connection_made(transport)  # type: ignore[misc]

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)  # type: ignore[misc]
        self.connection.lost.set()
        self.connection.ended.set()

    def shutdown(self) -> None:
        """The server stops: whatever waits on this connection stops waiting."""
        self.connection.ended.set()
        super().shutdown()  # type: ignore[misc]


class HttpToolsProtocol(ConnectionAccess, _HttpToolsProtocol):
    """uvicorn's httptools protocol with ``ConnectionAccess``."""


class H11Protocol(ConnectionAccess, _H11Protocol):
    """uvicorn's h11 protocol with ``ConnectionAccess``."""
