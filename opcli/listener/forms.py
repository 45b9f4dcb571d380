"""Reading a form body from the ASGI stream: multipart/form-data or urlencoded, strictly.

Starlette's ``request.form()`` drops a truncated file part, falls back on invalid UTF-8 and has
no size limit; so the body is read here from ``receive``: fields decoded as strict UTF-8, the
body refused past its limit while reading, a multipart body that never reached its closing
boundary refused, at most ``MAX_PARTS`` fields, and file parts hashed (and saved) as they
stream by. When asked, the raw body is kept too, token values cut out (``bodies.RawBody``).
Parsing is linear in the body's size, whatever it repeats.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote_to_bytes

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from opcli.listener.bodies import RawBody, saved_path

MAX_PARTS = 1000
MAX_BOUNDARY = 256  # python_multipart's own limit (RFC 2046 allows 70)
_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,10}$")


class Rejected(Exception):
    """A call answered with a 4xx (or 5xx) JSON error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ClientGone(Exception):
    """The client disconnected before the body ended."""


@dataclass
class Upload:
    field: str
    filename: str
    handle: IO[bytes] | None
    path: Path | None
    digest: Any = field(default_factory=hashlib.sha256)
    size: int = 0

    def entry(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "filename": self.filename,
            "size": self.size,
            "sha256": self.digest.hexdigest(),
            "saved_as": str(self.path) if self.path else None,
        }


class Body:
    """The parsed body of one call: fields in order, the uploads streamed so far, and the raw body.

    The raw body is kept (``raw``) with ``save_dir``, or when ``keep_raw`` asks for it (to forward
    it); ``secret`` is the listener's token, cut out of any field that carries it.
    """

    def __init__(self, save_dir: Path | None, *, keep_raw: bool = False, secret: str = "") -> None:
        self.save_dir = save_dir
        self.keep_raw = keep_raw or save_dir is not None
        self.secret = secret
        self.fields: list[tuple[str, str]] = []
        self.uploads: list[Upload] = []
        self.raw: RawBody | None = None

    def open_raw(self) -> RawBody | None:
        """Start keeping the raw body, if it is wanted (once the content type is known to be a form)."""
        if self.keep_raw and self.raw is None:
            self.raw = RawBody(self.save_dir)
        return self.raw

    def carries_token(self, name: str, value: str) -> bool:
        """A field whose value must not be written: ``token``, or any field holding the listener's token."""
        return bool(value) and (name == "token" or (bool(self.secret) and value == self.secret))

    def close_raw(self, content_type: str) -> dict[str, Any] | None:
        """Done with the raw body: the journal's ``body`` when it was saved whole, else None (nothing kept)."""
        raw, self.raw = self.raw, None
        if raw is None:
            return None
        raw.close()
        return raw.entry(content_type) if raw.complete and raw.path is not None else None

    def discard_files(self) -> None:
        """Close uploads and remove what was written (a rejected call keeps no files)."""
        for upload in self.uploads:
            if upload.handle is not None:
                upload.handle.close()
                upload.handle = None
            if upload.path is not None:
                upload.path.unlink(missing_ok=True)
                upload.path = None

    def new_upload(self, name: str, filename: str) -> Upload:
        handle = path = None
        if self.save_dir is not None:
            suffix = Path(filename.replace("\\", "/")).suffix
            path = saved_path(self.save_dir, suffix.lower() if _SAFE_SUFFIX.match(suffix) else ".bin")
            handle = open(path, "xb")  # noqa: SIM115 - closed at the part's end or by discard_files
        upload = Upload(name, filename, handle, path)
        self.uploads.append(upload)
        return upload


async def chunks(receive: Any, connection: Any = None) -> AsyncIterator[bytes]:
    """The request body from an ASGI ``receive``, chunk by chunk; ClientGone on a disconnect.

    ``connection`` (``opcli.listener.http.Connection``) says when the protocol gave up on the
    body (it stalled, or its HTTP framing broke): that becomes the answer.
    """
    while True:
        message = await receive()
        if connection is not None and connection.failure is not None:
            raise Rejected(*connection.failure)
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def _decode(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(400, f"{what} is not valid UTF-8 (byte {exc.start})") from None


#: How much of a too-large body is still read (and dropped) so that the client gets the 413:
#: a server that closes with unread data makes the kernel send a reset instead of the answer.
DRAIN_BYTES = 64 * 1024 * 1024


async def _too_large(stream: AsyncIterator[bytes], limit: int) -> Rejected:
    drained = 0
    async for chunk in stream:
        drained += len(chunk)
        if drained > DRAIN_BYTES:
            break
    return Rejected(413, f"body larger than {limit} bytes (listen.max_body_bytes)")


async def _read_multipart(
    stream: AsyncIterator[bytes], boundary: bytes, limit: int, field_limit: int, body: Body
) -> None:
    """Feed the stream to python_multipart (and the raw body, holding each part until its name is known)."""
    headers: dict[str, bytes] = {}
    header_name = bytearray()
    header_value = bytearray()
    current: dict[str, Any] = {}
    parts = 0
    raw = body.open_raw()
    chunk: bytes = b""
    at = 0  # the stream offset of ``chunk``

    def offset(data: bytes, start: int, end: int) -> int:
        # python_multipart passes the chunk itself, or a look-behind buffer: the bytes just before it
        return at + start if data is chunk else at - (end - start)

    def on_header_field(data: bytes, start: int, end: int) -> None:
        if raw is not None:
            raw.hold(at + start)
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers[bytes(header_name).lower().decode("latin-1")] = bytes(header_value)
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        nonlocal parts
        parts += 1
        if parts > MAX_PARTS:
            raise Rejected(413, f"more than {MAX_PARTS} parts in the body")
        disposition, params = parse_options_header(headers.get("content-disposition", b""))
        if disposition != b"form-data" or b"name" not in params:
            raise Rejected(400, "a multipart part has no Content-Disposition: form-data; name=...")
        name = _decode(params[b"name"], "a part's name")
        if b"filename" in params:
            filename = params[b"filename"].decode("utf-8", "replace")
            current["upload"] = body.new_upload(name, filename)
            if raw is not None:
                raw.release()
        else:
            current["name"] = name
            current["data"] = bytearray()
            current["at"] = None
        headers.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        upload = current.get("upload")
        if upload is None:
            if current["at"] is None:
                current["at"] = offset(data, start, end)
            current["data"].extend(data[start:end])
            if len(current["data"]) > field_limit:
                raise _field_too_large(current["name"], field_limit)
            return
        chunk = data[start:end]
        upload.digest.update(chunk)
        upload.size += len(chunk)
        if upload.handle is not None:
            upload.handle.write(chunk)

    def on_part_end() -> None:
        upload = current.pop("upload", None)
        if upload is not None:
            if upload.handle is not None:
                upload.handle.close()
                upload.handle = None
        else:
            name, data, start = current.pop("name"), current.pop("data"), current.pop("at")
            value = _decode(bytes(data), f"field '{name}'")
            body.fields.append((name, value))
            if raw is not None:
                if body.carries_token(name, value):
                    raw.cut(start, start + len(data))
                raw.release()

    parser = MultipartParser(
        boundary,
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        async for chunk in stream:
            if at + len(chunk) > limit:
                raise await _too_large(stream, limit)
            parser.write(chunk)
            if raw is not None:
                raw.write(chunk)
            at += len(chunk)
    except MultipartParseError as exc:
        raise Rejected(400, f"malformed multipart body: {exc}") from None
    if at == 0:
        raise Rejected(400, "empty body")
    if parser.state != MultipartState.END:
        raise Rejected(400, "truncated multipart body: the closing boundary never came")
    if raw is not None:
        raw.finish()


async def _read_urlencoded(stream: AsyncIterator[bytes], limit: int, field_limit: int, body: Body) -> None:
    data = bytearray()
    async for chunk in stream:
        data += chunk
        if len(data) > limit:
            raise await _too_large(stream, limit)
    if not data.strip():
        raise Rejected(400, "empty body")
    raw = body.open_raw()
    pairs = bytes(data).split(b"&")
    if len(pairs) - pairs.count(b"") > MAX_PARTS:
        raise Rejected(413, f"more than {MAX_PARTS} fields in the body")
    at = 0  # the stream offset of ``pair``
    for pair in pairs:
        name, equals, value = pair.partition(b"=")
        if pair:
            name_text = _decode(unquote_to_bytes(name.replace(b"+", b" ")), "a field name")
            decoded = unquote_to_bytes(value.replace(b"+", b" "))
            if len(decoded) > field_limit:
                raise _field_too_large(name_text, field_limit)
            value_text = _decode(decoded, f"field '{name_text}'")
            body.fields.append((name_text, value_text))
            if raw is not None and body.carries_token(name_text, value_text):
                start = at + len(name) + len(equals)
                raw.cut(start, start + len(value))
        at += len(pair) + 1
    if raw is not None:
        raw.write(bytes(data))
        raw.finish()


def _field_too_large(name: str, field_limit: int) -> Rejected:
    return Rejected(413, f"field '{name}' is larger than {field_limit} bytes (listen.max_field_bytes)")


def header(scope: dict[str, Any], name: bytes) -> str:
    """A request header's value (the first one), or ``""``."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return ""


def media_type(content_type: str) -> str | None:
    """A content type without its parameters (``multipart/form-data``), or None."""
    return parse_options_header(content_type)[0].decode("latin-1") or None


async def read_form(scope: dict[str, Any], receive: Any, limit: int, field_limit: int, body: Body) -> None:
    """Read the request's form into ``body``; raises Rejected with the 4xx to answer.

    ``limit`` caps the body, ``field_limit`` each text field (files stream; text is held whole).
    """
    content_type = header(scope, b"content-type")
    ctype, params = parse_options_header(content_type)
    connection = scope.get("extensions", {}).get("opcli.connection")
    length = header(scope, b"content-length")
    if length.isdigit() and int(length) > limit:
        raise Rejected(413, f"body of {length} bytes is larger than {limit} (listen.max_body_bytes)")
    if ctype == b"multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise Rejected(400, "multipart/form-data without a boundary")
        if len(boundary) > MAX_BOUNDARY:
            raise Rejected(400, f"multipart boundary longer than {MAX_BOUNDARY} bytes")
        await _read_multipart(chunks(receive, connection), boundary, limit, field_limit, body)
    elif ctype == b"application/x-www-form-urlencoded":
        await _read_urlencoded(chunks(receive, connection), limit, field_limit, body)
    else:
        raise Rejected(
            415,
            f"unsupported content type: {content_type or 'none'} (use multipart/form-data or "
            "application/x-www-form-urlencoded)",
        )
