"""httpcore's network layer on plain asyncio streams, for ``send --batch`` (Python 3.11+).

httpcore's default backend goes through anyio, whose cancel scopes around every read and
write were a third of each batch message's CPU time. This one implements httpcore's public
``AsyncNetworkBackend`` interface with asyncio streams and ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
from typing import Any

import httpcore


class _Stream(httpcore.AsyncNetworkStream):
    """An httpcore network stream on plain asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self.reader.read(max_bytes)
        except TimeoutError:
            raise httpcore.ReadTimeout(f"no data within {timeout}s") from None
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            self.writer.write(buffer)
            async with asyncio.timeout(timeout):
                await self.writer.drain()
        except TimeoutError:
            raise httpcore.WriteTimeout(f"could not write within {timeout}s") from None
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):  # a TLS close takes a round trip; do not leave it half done
            async with asyncio.timeout(1):
                await self.writer.wait_closed()

    async def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        try:
            await self.writer.start_tls(ssl_context, server_hostname=server_hostname, ssl_handshake_timeout=timeout)
        except TimeoutError:
            self.writer.close()
            raise httpcore.ConnectTimeout(f"no TLS handshake within {timeout}s") from None
        except OSError as exc:  # ssl.SSLError is an OSError
            self.writer.close()
            raise httpcore.ConnectError(str(exc)) from exc
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # an idle keep-alive connection the server has closed
            sock = self.writer.get_extra_info("socket")
            return (
                self.reader.at_eof()
                or self.writer.is_closing()
                or (sock is not None and bool(select.select([sock], [], [], 0)[0]))
            )
        if info in ("ssl_object", "socket"):
            return self.writer.get_extra_info(info)
        if info in ("client_addr", "server_addr"):
            return self.writer.get_extra_info("sockname" if info == "client_addr" else "peername")
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network layer on plain asyncio (Python 3.11+: ``asyncio.timeout``, ``start_tls``)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> _Stream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, local_addr=(local_address, 0) if local_address else None
                )
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"no connection within {timeout}s") from None
        except OSError as exc:
            raise httpcore.ConnectError(os.strerror(exc.errno) if exc.errno else str(exc)) from exc
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Stream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
