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
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote_plus, unquote_to_bytes

from python_multipart.multipart import parse_options_header

from opcli.listener.bodies import RawBody, saved_path
from opcli.protocol import Memo, holds_secret, mask_token, may_hold, secret_bytes_pattern, secret_pattern

MAX_PARTS = 1000
MAX_BOUNDARY = 256  # RFC 2046 allows 70
MAX_PART_HEADERS = 8
MAX_HEADER_LINE = 4096 + 128
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # a header's name (RFC 9110)
#: Content-Type (str) and Content-Disposition (bytes) values repeat from call to call: each is parsed once
_OPTIONS = Memo(parse_options_header, 1024)
_DISPOSITIONS = Memo(parse_options_header, 1024)  # (apart: a str key and a bytes key compared warn under -b)
_SAFE_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,10}")  # fullmatch
# bytes looked for as numbers: ``b"%" in data`` first tries b"%" as a number, and that failing cost more than the search
_PERCENT, _PLUS, _CR = ord("%"), ord("+"), ord("\r")


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
    # what to look for in a file being saved, and whether it was found (the copy is then not kept)
    secrets: tuple[str, ...] = ()
    holds_secret: bool = False
    _tail: bytes = b""

    def write(self, data: bytes | bytearray) -> None:
        """The file's next bytes: hashed, and saved when it is being saved."""
        self.digest.update(data)
        self.size += len(data)
        if self.handle is None:
            return
        self.handle.write(data)
        if self.secrets and not self.holds_secret:  # a token across two chunks is found too
            window = self._tail + data
            self.holds_secret = holds_secret(window, self.secrets)
            self._tail = bytes(window[-7 * max(map(len, self.secrets)) :])  # (\\uXXXX: up to 7 bytes a character)

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
    it); ``secrets`` (the journal's) never reach it (``hide``).
    """

    def __init__(self, save_dir: Path | None, *, keep_raw: bool = False, secrets: tuple[str, ...] = ()) -> None:
        self.save_dir = save_dir
        self.keep_raw = keep_raw or save_dir is not None
        self.secrets = secrets
        self.fields: list[tuple[str, str]] = []
        self.uploads: list[Upload] = []
        self.raw: RawBody | None = None

    def open_raw(self) -> RawBody | None:
        """Start keeping the raw body, if it is wanted (once the content type is known to be a form)."""
        if self.keep_raw and self.raw is None:
            self.raw = RawBody(self.save_dir)
        return self.raw

    def hide(self, text: str, raw: bytes | bytearray, at: int, urlencoded: bool = False, name: str = "") -> None:
        """Keep a field's ``raw`` bytes (stream offset ``at``; ``text`` decoded) out of the raw body where due.

        The ``token`` field's value is cut out (``token_at``: a replay or ``--forward`` puts a token
        back there). A secret quoted anywhere else -- a message, a field's name, a part's headers --
        in any form (``secret_pattern``: as is, %-encoded, JSON-escaped) is replaced by its mask, as
        the journal shows it: where it came encoded some other way (``%2541``: %-encoded twice in a
        urlencoded body), the whole of ``raw`` is.
        """
        raw_body = self.raw
        if raw_body is None or not text:
            return
        if name == "token":
            raw_body.cut(at, at + len(raw))
            return
        for secret in self.secrets:
            if not may_hold(text, secret):
                continue
            in_text = len(secret_pattern(secret).findall(text))
            if not in_text:
                continue
            mask = mask_token(secret)
            instead = (quote_plus(mask) if urlencoded else mask).encode()
            spans = [found.span() for found in secret_bytes_pattern(secret).finditer(raw)]
            if len(spans) < in_text:  # some came encoded otherwise: all of it goes
                spans = [(0, len(raw))]
            for start, end in spans:
                raw_body.cut(at + start, at + end, instead)

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
            suffix = Path(filename.replace("\\", "/")).suffix.lower()
            safe = _SAFE_SUFFIX.fullmatch(suffix) and not any(s.lower() in suffix for s in self.secrets)
            path = saved_path(self.save_dir, suffix if safe else ".bin")
            handle = open(path, "xb")  # noqa: SIM115 - closed at the part's end or by discard_files
        # a short token (a test's "t") would keep any file from being saved: only those of 8+ characters
        upload = Upload(name, filename, handle, path, secrets=tuple(s for s in self.secrets if len(s) >= 8))
        self.uploads.append(upload)
        return upload

    def withhold_secrets(self) -> list[str]:
        """Remove the saved copies of files that hold a token -- and the raw body, which holds them too.

        Returns a warning for each such file (the journal still has its name, size and sha256).
        """
        held = [upload for upload in self.uploads if upload.holds_secret]
        for upload in held:
            if upload.path is not None:
                upload.path.unlink(missing_ok=True)
                upload.path = None
        if held and self.raw is not None:
            self.raw.complete = False  # close_raw removes it
        return [f"file '{upload.filename}' holds the token: not saved" for upload in held]


class Chunks:
    """The request body from an ASGI ``receive``, chunk by chunk (``next``) or whole; ClientGone on a disconnect.

    ``connection`` (``opcli.listener.http.Connection``) says when the protocol gave up on the
    body (it stalled, or its HTTP framing broke): that becomes the answer. (Not an async generator:
    the event loop tracks every one, and ending an ``async for`` raises; both cost each call as
    much as the rest of its reading.)
    """

    def __init__(self, receive: Any, connection: Any = None) -> None:
        self.receive = receive
        self.connection = connection
        self.ended = False

    async def next(self) -> bytes:
        """The next chunk, or ``b""`` once the body has ended."""
        while not self.ended:
            message = await self.receive()
            if self.connection is not None and self.connection.failure is not None:
                raise Rejected(*self.connection.failure)
            if message["type"] == "http.disconnect":
                raise ClientGone()
            self.ended = not message.get("more_body", False)
            chunk = message.get("body", b"")
            if chunk:
                return chunk
        return b""

    async def whole(self, limit: int) -> bytes:
        """All of the body (Rejected, 413, past ``limit`` bytes): most often its one and only chunk."""
        data = await self.next()
        if not self.ended:
            gathered = bytearray(data)
            while chunk := await self.next():
                gathered += chunk
                if len(gathered) > limit:
                    break
            data = bytes(gathered)
        if len(data) > limit:
            raise await _too_large(self, limit)
        return data


def _decode(raw: bytes | bytearray, what: str = "", field: str | None = None) -> str:
    """``raw`` as strict UTF-8; else Rejected (400) naming ``what`` it is, or the ``field`` it is the value of.

    (The field's name goes into the message only when there is one to make: a call has many fields.)
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = what if field is None else f"field '{field}'"
        raise Rejected(400, f"{where} is not valid UTF-8 (byte {exc.start})") from None


#: How much of a too-large body is still read (and dropped) so that the client gets the 413:
#: a server that closes with unread data makes the kernel send a reset instead of the answer.
DRAIN_BYTES = 64 * 1024 * 1024


async def _too_large(stream: Chunks, limit: int) -> Rejected:
    drained = 0
    while chunk := await stream.next():
        drained += len(chunk)
        if drained > DRAIN_BYTES:
            break
    return Rejected(413, f"body larger than {limit} bytes (listen.max_body_bytes)")


class _Multipart:
    """A multipart/form-data body parsed as it streams in, with ``bytes.split`` and ``find`` (no loop over bytes).

    As strict as RFC 7578 asks: the body opens with its boundary (blank lines before it aside),
    each part has at most ``MAX_PART_HEADERS`` header lines of ``Name: value``, a delimiter is
    ``CRLF--boundary`` followed by CRLF (optionally after spaces), or by ``--`` at the end;
    anything after the closing delimiter is ignored. The raw body (``bodies.RawBody``) is told
    where each part starts and where a token's value lies, in offsets of the stream.
    """

    def __init__(self, boundary: bytes, field_limit: int, body: Body) -> None:
        self.opening = b"--" + boundary + b"\r\n"  # the body's first line
        self.delimiter = b"\r\n--" + boundary
        self.field_limit = field_limit
        self.body = body
        self.raw = body.open_raw()
        self.buffer = bytearray()
        self.at = 0  # the stream offset of buffer[0]
        self.state = "start"  # -> headers -> data -> headers ... -> end
        self.parts = 0
        self.search_at = 0  # the stream offset where the next search for a delimiter starts
        self.upload: Upload | None = None
        self.name = ""  # the text field being read, and where its value starts in the stream
        self.value_at = 0
        self.epilogue: bytearray | None = None  # what follows the closing delimiter, while the raw body is kept
        self.epilogue_at = 0

    @property
    def complete(self) -> bool:
        return self.state == "end"

    def feed(self, chunk: bytes) -> None:
        """The next bytes of the body; raises Rejected for a malformed one."""
        if self.buffer:  # what the last chunk left unparsed comes first
            self.buffer += chunk
            data: bytes | bytearray = self.buffer
        else:  # most often: the chunk is parsed where it is
            data = chunk
        done = self._parse(data)
        if data is chunk:
            if done < len(chunk):  # (most often all of it is done: nothing to keep)
                self.buffer += memoryview(chunk)[done:]
        elif done:  # what was parsed leaves the buffer once per chunk: copying stays linear
            del self.buffer[:done]
        self.at += done

    def _parse(self, data: bytes | bytearray) -> int:
        """Parse as far as ``data`` (the stream from offset ``at``) allows; returns how many of its bytes are done.

        What is here is split at every delimiter, in one C call: most often a part, from the CRLF
        that ended its delimiter to the next delimiter, is one piece, read with one ``partition``
        (headers, blank line, value). A turn of the loop reads a part's headers, when they are due,
        then its data. The parser's state is in locals until it returns (a refused body leaves it
        unusable): a text field, most of every call, costs no Python call unless the raw body is kept.
        """
        pos = self._opening(data) if self.state == "start" else 0
        state = self.state
        if state == "end":  # (an empty body's opening was its closing delimiter)
            return self._epilogue(data, pos)
        if state == "start":  # the opening is not all here yet
            return pos
        if not pos and state == "headers":  # (headers begun in an earlier chunk: kept with the CRLF before them)
            pos = 2
        delimiter, length, fields, raw = self.delimiter, len(self.delimiter), self.body.fields, self.raw
        field_limit, name, parts = self.field_limit, self.name, self.parts
        array = data.__class__ is not bytes  # (a header block is a cache key: from a bytearray, it is copied)
        # where the last look stopped (what came before it holds no delimiter still to judge), or the
        # CRLF before a part's headers; a delimiter cannot overlap another (a boundary has no CR)
        resume = self.search_at - self.at
        start = max(pos - 2 if state == "headers" else pos, resume)
        pieces = data[start:].split(delimiter)
        i, last = 0, len(pieces) - 1  # pieces[i] starts at data[start]; a delimiter follows each but the last
        value: bytes | bytearray | None = None  # the part's value, when its piece held it whole
        while True:
            if state == "headers":
                # the blank line that ends them, looked for from the CRLF that ended the delimiter (at
                # pos - 2): a part without headers has it there
                head, blank_line, value = (pieces[i] if start == pos - 2 else b"").partition(b"\r\n\r\n")
                if blank_line:
                    blank, block = start + len(head), head
                else:  # not in the part's piece: still to come, after padding, or past boundary bytes in headers
                    value = None
                    blank = data.find(b"\r\n\r\n", max(pos - 2, resume))
                    if blank == -1:  # (the largest headers there may be, with the first 3 bytes of the blank line)
                        if len(data) - pos > MAX_PART_HEADERS * (MAX_HEADER_LINE + 2) + 1:
                            raise _malformed("a part's headers are too large")
                        self.state, self.parts, self.search_at = state, parts, self.at + max(pos - 2, len(data) - 3)
                        return pos - 2
                    block = data[pos - 2 : blank]
                    while i < last and start + len(pieces[i]) < blank + 4:  # (those in the headers are not delimiters)
                        start += len(pieces[i]) + length
                        i += 1
                parts += 1
                if parts > MAX_PARTS:
                    raise Rejected(413, f"more than {MAX_PARTS} parts in the body")
                if array:
                    block = bytes(block)
                name, filename = _PART_HEADERS[block]
                pos = blank + 4
                state = "data"
                if filename is not None or raw is not None:
                    self._headers(name, filename, block, self.at + pos)
            # the data runs to a delimiter followed by CRLF or "--" (or by transport padding, then CRLF)
            found = -1
            while i < last:
                found = start + len(pieces[i])
                after = found + length
                follows = data[after : after + 2]
                if follows == b"\r\n" or follows == b"--":
                    end = after + 2
                elif len(follows) < 2:  # what follows decides: wait for it
                    break
                elif follows[0] in b" \t":  # transport padding: spaces, then CRLF
                    end = data.find(b"\r\n", after) + 2
                    if end < 2 and len(data) - after <= 1024:  # (up to 1,023 spaces and a CR)
                        break
                    if end < 2 or end - 2 - after >= 1024 or data[after : end - 2].strip(b" \t"):
                        raise _malformed("no CRLF after the boundary's padding")  # (within 1 KiB, however cut)
                else:  # the boundary's bytes inside the data
                    i, start, value, found = i + 1, after, None, -1
                    continue
                i, start = i + 1, after
                if self.upload is not None:
                    self._end_upload(data[pos:found])
                else:
                    if value is None:
                        value = data[pos:found]
                    if len(value) > field_limit:
                        raise _field_too_large(name, field_limit)
                    try:
                        text = value.decode()  # (UTF-8, strict: without arguments, the quicker call)
                    except UnicodeDecodeError:
                        text = _decode(value, field=name)  # (raises Rejected, naming the field)
                    fields.append((name, text))
                    if raw is not None:
                        self.body.hide(text, value, self.value_at, name=name)
                        raw.release()
                pos = end
                if follows == b"--":  # the closing delimiter
                    self.state, self.parts = "end", parts
                    return self._epilogue(data, pos)
                state = "headers"
                if raw is not None:  # nothing of a part is written until its name is known
                    raw.hold(self.at + pos)
                break
            if state == "data":  # no whole delimiter yet: what cannot start one is data
                safe = max(pos, len(data) - length - 1 if found < 0 else found)
                if self.upload is not None:
                    self.upload.write(data[pos:safe])
                    pos = safe
                elif safe - pos > field_limit:
                    raise _field_too_large(name, field_limit)
                self.state, self.name, self.parts, self.search_at = state, name, parts, self.at + safe
                return pos

    def _opening(self, data: bytes | bytearray) -> int:
        """Where the first part's headers start, once the body's opening boundary is all here."""
        pos = 0
        if data[:1] in (b"\r", b"\n"):  # blank lines before the first boundary (stripped, the body is copied)
            pos = len(data) - len(data.lstrip(b"\r\n"))
        opening = self.opening
        line = data[pos : pos + len(opening)]
        if line == opening:
            self.state = "headers"
            if self.raw is not None:  # (as after each delimiter: see _parse)
                self.raw.hold(self.at + pos + len(line))
        elif line == opening[:-2] + b"--":  # (the body's only delimiter is its closing one)
            self.state = "end"
        elif len(line) < len(opening) and (opening.startswith(line) or (opening[:-2] + b"--").startswith(line)):
            return pos  # (the rest of it is still to come)
        else:
            raise _malformed("the body does not start with its boundary")
        return pos + len(line)

    def _epilogue(self, data: bytes | bytearray, pos: int) -> int:
        """What follows the closing delimiter (from ``pos``) is ignored, but a kept raw body holds it
        back until ``finish`` has masked any secret in it; returns that all of ``data`` is done."""
        if self.raw is not None:
            if self.epilogue is None:
                self.epilogue, self.epilogue_at = bytearray(), self.at + pos
                self.raw.hold(self.epilogue_at)
            self.epilogue += data[pos:]
        return len(data)

    def finish(self) -> None:
        """The body ended after its closing delimiter: the raw body is written, a secret in the epilogue masked."""
        if self.raw is not None:
            if self.epilogue:
                self.body.hide(self.epilogue.decode("utf-8", "replace"), self.epilogue, self.epilogue_at)
            self.raw.finish()

    def _headers(self, name: str, filename: str | None, block: bytes, data_at: int) -> None:
        """A part's headers were read: a file's upload begins; the raw body learns what to hide."""
        if block and self.raw is not None:  # a name or filename quoting a secret (held until now)
            lines = block[2:]  # (the CRLF before them ended the delimiter: it was not held)
            self.body.hide(lines.decode("utf-8", "replace"), lines, data_at - 4 - len(lines))
        if filename is not None:
            self.upload = self.body.new_upload(name, filename)
            if self.raw is not None:
                self.raw.release()
        else:
            self.value_at = data_at

    def _end_upload(self, data: bytes | bytearray) -> None:
        """A file's part ended with ``data``."""
        assert self.upload is not None
        self.upload.write(data)
        if self.upload.handle is not None:
            self.upload.handle.close()
            self.upload.handle = None
        self.upload = None


def _part_header(block: bytes) -> tuple[str, str | None]:
    """A part's name, and its filename (None for a text field), from its header block; Rejected if malformed.

    The block runs from the CRLF that ended the part's delimiter to the blank line (empty when the
    part has no headers). Looked up in ``_PART_HEADERS``: the same few blocks come with every call.
    """
    disposition = b""
    lines = block.split(b"\r\n")[1:]
    if len(lines) > MAX_PART_HEADERS:
        raise _malformed(f"a part has more than {MAX_PART_HEADERS} headers")
    for line in lines:
        if len(line) > MAX_HEADER_LINE:  # (a long name="..." too: an urlencoded field's name has the same limit)
            raise _malformed(f"a part's header line is longer than {MAX_HEADER_LINE} bytes")
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name) or b"\r" in value:
            raise _malformed("a part's header is not a line of 'Name: value'")
        if name.lower() == b"content-disposition":
            disposition = value.lstrip(b" ")
    kind, params = _DISPOSITIONS[disposition]
    if kind != b"form-data" or b"name" not in params:
        raise Rejected(400, "a multipart part has no Content-Disposition: form-data; name=...")
    filename = params.get(b"filename")
    return _decode(params[b"name"], "a part's name"), None if filename is None else filename.decode("utf-8", "replace")


_PART_HEADERS = Memo(_part_header, 1024)


def _malformed(why: str) -> Rejected:
    return Rejected(400, f"malformed multipart body: {why}")


async def _read_multipart(stream: Chunks, boundary: bytes, limit: int, field_limit: int, body: Body) -> None:
    parser = _Multipart(boundary, field_limit, body)
    size = 0
    while not stream.ended and (chunk := await stream.next()):  # (once it has ended, no await to learn so)
        if size + len(chunk) > limit:
            raise await _too_large(stream, limit)
        parser.feed(chunk)
        if parser.raw is not None:
            parser.raw.write(chunk)
        size += len(chunk)
    if size == 0:
        raise Rejected(400, "empty body")
    if not parser.complete:
        raise Rejected(400, "truncated multipart body: the closing boundary never came")
    parser.finish()


async def _read_urlencoded(stream: Chunks, limit: int, field_limit: int, body: Body) -> None:
    whole = await stream.whole(limit)
    if not whole.strip():
        raise Rejected(400, "empty body")
    raw = body.open_raw()
    pairs = whole.split(b"&")
    if len(pairs) - pairs.count(b"") > MAX_PARTS:
        raise Rejected(413, f"more than {MAX_PARTS} fields in the body")
    encoded = _PERCENT in whole or _PLUS in whole  # most bodies need no decoding at all
    fields = body.fields
    at = 0  # the stream offset of ``pair``
    for pair in pairs:
        if pair:
            name, equals, value = pair.partition(b"=")
            name_bytes, value_bytes = (_unquoted(name), _unquoted(value)) if encoded else (name, value)
            if len(name_bytes) > MAX_HEADER_LINE:  # (a multipart part's name is held to its header line too)
                raise Rejected(400, f"a field name is longer than {MAX_HEADER_LINE} bytes")
            name_text = _decode(name_bytes, "a field name")
            if len(value_bytes) > field_limit:
                raise _field_too_large(name_text, field_limit)
            value_text = _decode(value_bytes, field=name_text)
            fields.append((name_text, value_text))
            if raw is not None:
                body.hide(name_text, name, at, urlencoded=True)
                body.hide(value_text, value, at + len(name) + len(equals), urlencoded=True, name=name_text)
        at += len(pair) + 1
    if raw is not None:
        raw.write(whole)
        raw.finish()


def _unquoted(raw: bytes) -> bytes:
    """A urlencoded name or value as bytes (``+`` a space, ``%XX`` a byte)."""
    if _PERCENT in raw or _PLUS in raw:
        return unquote_to_bytes(raw.replace(b"+", b" "))
    return raw


def _field_too_large(name: str, field_limit: int) -> Rejected:
    return Rejected(413, f"field '{name}' is larger than {field_limit} bytes (listen.max_field_bytes)")


def header(scope: dict[str, Any], name: bytes) -> str:
    """A request header's value (the first one), or ``""``."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return ""


def media_type(content_type: str) -> str | None:
    """A content type without its parameters, or None: a form's in lower case (``multipart/form-data``),
    any other as the client spelled it (the journal masks a token there; lowered, it would not know it).
    """
    kind = _OPTIONS[content_type][0].decode("latin-1")
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return kind
    return content_type.split(";", 1)[0].strip() or None


def read_form(
    content_type: str, length: str, receive: Any, connection: Any, limit: int, field_limit: int, body: Body
) -> Awaitable[None]:
    """What reads the request's form into ``body``, to await; raises Rejected with the 4xx to answer.

    ``content_type`` and ``length`` are the request's headers (``""`` when absent), ``connection``
    its ``opcli.listener.http.Connection`` (or None). ``limit`` caps the body, ``field_limit``
    each text field (files stream; text is held whole). (The headers are checked now; the reader
    is returned, not awaited here: a coroutine less for every call.)
    """
    ctype, params = _OPTIONS[content_type]
    if length.isdigit() and int(length) > limit:
        raise Rejected(413, f"body of {length} bytes is larger than {limit} (listen.max_body_bytes)")
    if ctype == b"multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise Rejected(400, "multipart/form-data without a boundary")
        if len(boundary) > MAX_BOUNDARY:
            raise Rejected(400, f"multipart boundary longer than {MAX_BOUNDARY} bytes")
        if _CR in boundary:  # (RFC 2046 allows none; the parser counts on delimiters never overlapping)
            raise Rejected(400, "multipart boundary with a CR in it")
        return _read_multipart(Chunks(receive, connection), boundary, limit, field_limit, body)
    if ctype == b"application/x-www-form-urlencoded":
        return _read_urlencoded(Chunks(receive, connection), limit, field_limit, body)
    raise Rejected(
        415,
        f"unsupported content type: {content_type or 'none'} (use multipart/form-data or "
        "application/x-www-form-urlencoded)",
    )
