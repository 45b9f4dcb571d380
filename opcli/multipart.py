"""The bodies opcli sends: multipart/form-data in few writes, and a body the listener recorded.

``MultipartBody`` encodes the text fields in one chunk and streams a file; ``SavedBody`` sends a
recorded body byte for byte with only the token put back where the listener cut it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import IO
from urllib.parse import quote_plus

import httpx

# HTML5's form encoding of a name in Content-Disposition (what browsers and httpx do): a quote
# and the control characters but ESC become %XX, a backslash is doubled
_NAME_ESCAPES = {'"': "%22", "\\": "\\\\", **{chr(c): f"%{c:02X}" for c in range(0x20) if c != 0x1B}}
_NAME_ESCAPE = re.compile("|".join(re.escape(c) for c in _NAME_ESCAPES))


def quote_name(name: str) -> str:
    """A name in a Content-Disposition header, escaped as browsers (and httpx) do."""
    return _NAME_ESCAPE.sub(lambda m: _NAME_ESCAPES[m.group(0)], name)


class MultipartBody(httpx.SyncByteStream, httpx.AsyncByteStream):
    """multipart/form-data with every text field in one chunk and the file streamed in 1 MiB chunks.

    httpx's own encoder writes each piece of each part separately (some 25 socket writes for a
    small message), which made ``send --batch`` CPU-bound; this one makes 2 or 3.
    """

    CHUNK = 1024 * 1024

    def __init__(
        self,
        fields: list[tuple[str, str]],
        file: Path | None,
        file_field: str,
        file_type: str,
        filename: str | None = None,
    ) -> None:
        self.boundary = os.urandom(16).hex()
        dash = f"--{self.boundary}\r\n".encode()
        head = bytearray()
        for name, value in fields:
            head += dash + f'Content-Disposition: form-data; name="{quote_name(name)}"\r\n\r\n'.encode()
            head += value.encode("utf-8") + b"\r\n"
        self.file = file
        self.size = 0
        if file is not None:
            self.size = file.stat().st_size
            head += (
                dash
                + (
                    f'Content-Disposition: form-data; name="{quote_name(file_field)}"; '
                    f'filename="{quote_name(filename or file.name)}"\r\nContent-Type: {file_type}\r\n\r\n'
                ).encode()
            )
        self.head = bytes(head)
        self.tail = (b"\r\n" if file is not None else b"") + f"--{self.boundary}--\r\n".encode()
        self.length = len(self.head) + self.size + len(self.tail)

    def __iter__(self) -> Iterator[bytes]:
        if self.file is None:
            yield self.head + self.tail
            return
        yield self.head
        with open(self.file, "rb") as handle:
            while chunk := handle.read(self.CHUNK):
                yield chunk
        yield self.tail

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self:
            yield chunk


def token_bytes(token: str, content_type: str) -> bytes:
    """A token as it stands in a body of ``content_type``: as is in multipart, URL-encoded in a form."""
    if content_type.lower().startswith("application/x-www-form-urlencoded"):
        return quote_plus(token).encode("ascii")
    return token.encode("utf-8")


class SavedBody(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body recorded by the listener, token values cut out, sent again with ``token`` put back.

    ``source`` is the saved file, or an open file read from its start; ``token_at`` are the
    offsets where the listener cut a token's value (the journal's ``body.token_at``). Everything
    else goes byte for byte, in 1 MiB chunks; a large body is read off the event loop.
    """

    CHUNK = 1024 * 1024

    def __init__(
        self, source: Path | IO[bytes], size: int, token_at: Sequence[int], token: bytes, content_type: str
    ) -> None:
        self.source = source
        self.size = size
        self.token_at = sorted(token_at)
        self.token = token
        self.content_type = content_type
        self.length = size + len(token) * len(self.token_at)

    def __iter__(self) -> Iterator[bytes]:
        opened = open(self.source, "rb") if isinstance(self.source, Path) else contextlib.nullcontext(self.source)  # noqa: SIM115
        with opened as handle:
            handle.seek(0)
            position = 0
            for at in self.token_at:
                yield from self._read(handle, position, at)
                if self.token:
                    yield self.token
                position = at
            yield from self._read(handle, position, self.size)

    def _read(self, handle: IO[bytes], position: int, end: int) -> Iterator[bytes]:
        while position < end:
            chunk = handle.read(min(self.CHUNK, end - position))
            if not chunk:
                raise OSError(f"{self.source} ended after {position} of {self.size} bytes")
            position += len(chunk)
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = iter(self)
        while True:
            chunk = await asyncio.to_thread(next, chunks, None) if self.size > self.CHUNK else next(chunks, None)
            if chunk is None:
                return
            yield chunk
