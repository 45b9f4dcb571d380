"""HTTP calls in both directions: the site's ``message_sent`` to the panel, the panel's webhooks.

A call is first described as an ``Outgoing`` (what ``--dry-run`` and ``-v`` show), then sent
with an ``httpx.Client`` the caller owns. A recorded body (``SavedBody``) is sent as it was
saved, with only the token put back. Network trouble becomes ``UnreachableError``; what
the other side answered is returned as a ``Reply`` for the caller to judge.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import re
import shlex
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, urlencode

import httpcore
import httpx

from opcli import __version__
from opcli.config import Site
from opcli.errors import UnreachableError, UsageError
from opcli.multipart import MultipartBody, SavedBody, quote_name
from opcli.protocol import (
    ACTION_MESSAGE_SENT,
    Photo,
    encode_attaches,
    envelope_failed,
    envelope_message,
    mask_token,
)

Log = Callable[[str], None]


@dataclass
class Outgoing:
    """One request as opcli will send it: its fields in order (the token among them), a file, the encoding.

    ``filename`` is the file's name as sent (default: its own); ``raw``, a recorded body sent
    instead of ``fields`` and ``file``; ``headers``, extra request headers.
    """

    url: str
    fields: list[tuple[str, str]]
    file: Path | None = None
    file_field: str = "attach"
    multipart: bool = True
    filename: str | None = None
    raw: SavedBody | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def file_type(self) -> str:
        if self.file is None:
            return ""
        return mimetypes.guess_type(self.filename or self.file.name)[0] or "application/octet-stream"

    def shown_fields(self) -> list[tuple[str, str]]:
        """The fields with the token masked."""
        return [(k, mask_token(v) if k == "token" else v) for k, v in self.fields]

    def describe(self) -> dict[str, Any]:
        """What ``--dry-run --json`` prints: URL, encoding, fields (token masked), the file."""
        file = None
        if self.file is not None:
            file = {
                "field": self.file_field,
                "path": str(self.file),
                "size": self.file.stat().st_size,
                "content_type": self.file_type,
            }
        return {
            "method": "POST",
            "url": self.url,
            "encoding": "multipart/form-data" if self.multipart else "application/x-www-form-urlencoded",
            "fields": [[k, v] for k, v in self.shown_fields()],
            "file": file,
        }

    def curl(self, token: str | None = None) -> str:
        """The same request as a ``curl`` command line, the token read from ``$OPCLI_TOKEN``.

        With ``token``, only ``token`` fields holding that value read it from the variable; others
        (a wrong or empty token that ``check --fuzz`` sent) are shown as they were sent.
        """
        flag = "--form-string" if self.multipart else "--data-urlencode"
        secret = token if token is not None else next((v for name, v in self.fields if name == "token"), "")
        url = shlex.quote(self.url)
        if secret and secret in self.url:  # a token in the URL (?token=...) is read from $OPCLI_TOKEN too
            pieces = [re.sub(r'([$`"\\])', r"\\\1", piece) for piece in self.url.split(secret)]
            url = '"' + "$OPCLI_TOKEN".join(pieces) + '"'
        parts = ["curl", "-sS", "-X", "POST", url]
        for name, value in self.fields:
            if name == "token" and (token is None or value == token):
                parts += [flag, '"token=$OPCLI_TOKEN"']
            elif self.multipart:
                # curl escapes only a quote, CR and LF in a part's name: given the name as opcli
                # sends it, curl sends the same bytes
                parts += [flag, shell_word(f"{quote_name(name)}={value}")]
            elif name and f"{name}{value}".isprintable():
                # --data-urlencode encodes only what follows the first "=": the name goes as written
                parts += [flag, shlex.quote(f"{quote_plus(name, safe='[]')}={value}")]
            else:  # odd characters: the pair as opcli encodes it, nothing left for curl (or a terminal) to change
                parts += ["--data-raw", shlex.quote(f"{quote_plus(name, safe='')}={quote_plus(value, safe='')}")]
        if self.file is not None:
            parts += ["-F", shlex.quote(f"{self.file_field}=@{self.file};type={self.file_type}")]
        return " ".join(parts)

    def encode(self) -> tuple[dict[str, str], bytes | MultipartBody | SavedBody]:
        """Headers and body: urlencoded bytes, or a multipart stream that reads the file as it goes."""
        headers = {"User-Agent": f"opcli/{__version__}", **self.headers}
        if self.raw is not None:
            headers["Content-Type"] = self.raw.content_type
            headers["Content-Length"] = str(self.raw.length)
            return headers, self.raw
        if not self.multipart:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            return headers, urlencode(self.fields).encode()
        body = MultipartBody(self.fields, self.file, self.file_field, self.file_type, self.filename)
        headers["Content-Type"] = f"multipart/form-data; boundary={body.boundary}"
        headers["Content-Length"] = str(body.length)
        return headers, body

    def build(self) -> httpx.Request:
        """The request for an httpx client."""
        url = httpx.URL(self.url)
        headers, body = self.encode()
        if isinstance(body, bytes):
            return httpx.Request("POST", url, headers=headers, content=body)
        headers["Host"] = url.netloc.decode("ascii")  # httpx adds it only to bodies it encodes itself
        return httpx.Request("POST", url, headers=headers, stream=body)


_SHELL_ESCAPES = {"'": "\\'", "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def shell_word(text: str) -> str:
    """``text`` as one shell word, pasted as is: printable text single-quoted (``shlex.quote``).

    Text with a character that is not printable (a control character, a bidi mark, an invalid
    UTF-8 byte kept as a surrogate) becomes bash's ``$'...'``, that character as its UTF-8 bytes
    (``\\xc2\\x80``, or ``\\n``): the shell makes the same bytes of it, and no terminal or report
    that escapes control characters changes the line.
    """
    if text.isprintable():
        return shlex.quote(text)
    word = []
    for char in text:
        if char in _SHELL_ESCAPES:
            word.append(_SHELL_ESCAPES[char])
        elif char.isprintable():
            word.append(char)
        else:
            word.extend(f"\\x{byte:02x}" for byte in _utf8(char))
    return "$'" + "".join(word) + "'"


def _utf8(char: str) -> bytes:
    try:
        return char.encode("utf-8", "surrogateescape")  # an invalid byte a decoder kept: that byte again
    except UnicodeEncodeError:
        return char.encode("utf-8", "surrogatepass")


@dataclass
class Reply:
    """What the other side answered."""

    url: str
    status: int
    headers: dict[str, str]
    body: bytes
    ms: float
    data: Any = None
    is_json: bool = False

    @property
    def ok(self) -> bool:
        """2xx and no envelope ``"status": 0``/``false``."""
        return 200 <= self.status < 300 and not envelope_failed(self.data)

    def describe_body(self) -> str:
        """A short description of a body that is not JSON: empty, HTML (its title), or text."""
        text = self.body.decode("utf-8", "replace").strip()
        if not text:
            return "an empty reply"
        first = text.splitlines()[0].strip()[:120]
        lowered = text[:2000].lower()
        if (
            lowered.startswith("<!doctype html")
            or "<html" in lowered
            or "text/html" in self.headers.get("content-type", "")
        ):
            shown = first
            if "<title>" in lowered:
                start = lowered.index("<title>") + 7
                shown = text[start : lowered.find("</title>", start)].strip()[:120] or first
            return f"an HTML page ({shown!r})"
        return f"not JSON ({first!r})"

    def failure(self) -> str | None:
        """Why this reply counts as a failure, or None."""
        if self.ok:
            return None
        reason = f"HTTP {self.status}"
        if 300 <= self.status < 400:
            return f"{reason}: redirect to {self.headers.get('location', '?')} (redirects are not followed)"
        if envelope_failed(self.data):
            return f"{reason}, status 0: {envelope_message(self.data) or '(no message)'}"
        message = envelope_message(self.data)
        if message:
            return f"{reason}: {message}"
        return f"{reason}: {self.describe_body()}" if not self.is_json else reason


def message_sent(
    site: Site, user: int, bot: int, message: str = "", photos: Sequence[Photo] = (), attach: Path | None = None
) -> Outgoing:
    """The site's ``message_sent`` call to the panel (always multipart/form-data)."""
    fields = [
        ("token", site.token),
        ("action", ACTION_MESSAGE_SENT),
        ("user_id", str(user)),
        ("contact_id", str(bot)),
        ("message", message),
    ]
    fields += encode_attaches(photos, site.attaches_encoding)
    return Outgoing(site.url("message_sent"), fields, file=attach, multipart=True)


def webhook(
    site: Site,
    kind: str,
    fields: Sequence[tuple[str, str]],
    attach: Path | None = None,
    token: str | None = None,
    multipart: bool | None = None,
    omit_token: bool = False,
) -> Outgoing:
    """A panel -> site webhook call, encoded as the deployed panel does (urlencoded unless a file).

    ``token`` replaces the site's token and ``omit_token`` leaves the field out (for ``check``).
    """
    if multipart is None:
        multipart = attach is not None or site.webhook_encoding == "multipart"
    head = [] if omit_token else [("token", site.token if token is None else token)]
    return Outgoing(site.url(kind), [*head, *fields], file=attach, multipart=multipart)


def check_file(path: Path | None) -> Path | None:
    """Refuse a missing or unreadable file before anything is sent."""
    if path is None:
        return None
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise UsageError(f"cannot read file {path}: {exc.strerror or exc}") from None
    if path.is_dir():
        raise UsageError(f"cannot send {path}: it is a directory")
    return path


def tls(site: Site) -> ssl.SSLContext:
    """The site's TLS setting as a context: system/certifi CAs, none (``verify: false``), or a CA bundle."""
    if isinstance(site.verify, str):
        return ssl.create_default_context(cafile=site.verify)
    return httpx.create_ssl_context(verify=site.verify)


def make_client(site: Site, timeout: float | None = None) -> httpx.Client:
    """An httpx client for a site: its TLS setting, its timeout, no redirects followed."""
    return httpx.Client(verify=tls(site), timeout=timeout or site.timeout, follow_redirects=False)


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and what caused it, outermost first (httpx wraps httpcore, which wraps OSError)."""
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def unreachable(url: str, exc: Exception, timeout: float | None = None) -> UnreachableError:
    """Turn an httpx (or httpcore) transport error into the one-line error of exit code 3.

    The cause is told by the exception types in the chain, not by the wording of messages.
    """
    chain = _chain(exc)
    root = chain[-1]
    text = str(root) or type(root).__name__

    def found(*types: type) -> bool:
        return any(isinstance(e, types) for e in chain)

    if found(httpx.TimeoutException, httpcore.TimeoutException, TimeoutError, asyncio.TimeoutError):  # (3.10: two)
        cause = f"no answer within {timeout:g}s (timeout)" if timeout else "timed out"
    elif found(ssl.SSLError):
        cause = f"TLS error ({text}){_tls_hint(text.lower())}"
    elif found(ConnectionRefusedError):
        cause = "connection refused"
        if httpx.URL(url).host in ("127.0.0.1", "localhost", "::1"):
            cause += " (is `opcli listen` running?)"
    elif found(socket.gaierror):
        cause = f"host not found ({text})"
    elif found(
        httpx.RemoteProtocolError,
        httpx.ReadError,
        httpx.WriteError,
        httpcore.RemoteProtocolError,
        httpcore.ReadError,
        httpcore.WriteError,
        ConnectionResetError,
        BrokenPipeError,
    ):
        cause = f"connection dropped ({text})"
    else:
        cause = text
    error = UnreachableError(f"cannot reach {url}: {cause}")
    error.never_sent = found(httpx.ConnectError, httpx.ConnectTimeout, httpcore.ConnectError, httpcore.ConnectTimeout)
    return error


def _tls_hint(error: str) -> str:
    """What to do about a TLS failure, by what OpenSSL said."""
    if "certificate_verify_failed" in error or "certificate verify failed" in error:
        return "; a self-signed or private CA? set the site's `verify: /path/to/CA.pem` (or `verify: false` to test)"
    if any(s in error for s in ("wrong_version_number", "wrong version number", "record layer", "packet length")):
        return "; does the server speak plain HTTP? use an http:// URL"
    return ""


def to_reply(out: Outgoing, status: int, headers: Any, body: bytes, started: float) -> Reply:
    """A Reply from a fully read response (httpx's or httpcore's)."""
    data, is_json = None, False
    if body.strip():
        try:
            data, is_json = json.loads(body), True
        except (ValueError, RecursionError):  # (nested past Python's limit: as unreadable as broken JSON)
            pass
    headers = {
        (k.decode("latin-1") if isinstance(k, bytes) else k).lower(): v.decode("latin-1") if isinstance(v, bytes) else v
        for k, v in headers
    }
    return Reply(out.url, status, headers, body, (time.perf_counter() - started) * 1000, data, is_json)


def send(client: httpx.Client, out: Outgoing, log: Log | None = None) -> Reply:
    """Send one request and read its reply; network trouble raises UnreachableError."""
    request = out.build()
    if log:
        log_request(log, out, request)
    started = time.perf_counter()
    limit = client.timeout.read
    try:
        response = client.send(request, stream=True)
        try:
            body = _read_by(response, None if limit is None else started + limit)
        finally:
            response.close()
    except httpx.TransportError as exc:
        raise unreachable(out.url, exc, limit) from None
    except OSError as exc:  # the file could not be read while streaming
        raise UsageError(f"cannot read file {out.file}: {exc.strerror or exc}") from None
    reply = to_reply(out, response.status_code, response.headers.items(), body, started)
    if log:
        log_reply(log, reply)
    return reply


#: A reply larger than this is not read on: no site's answer comes near it, an endless one would fill the memory.
MAX_REPLY_BYTES = 64 * 1024 * 1024


def _read_by(response: httpx.Response, deadline: float | None) -> bytes:
    """The reply's body, read by ``deadline`` (a ``perf_counter`` time): the site's ``timeout`` is per call.

    (httpx's timeout is per read: a reply that dribbles in would take as long as the site likes.)
    Raises httpx.ReadTimeout past the deadline, and UnreachableError past ``MAX_REPLY_BYTES``.
    """
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > MAX_REPLY_BYTES:
            raise UnreachableError(f"cannot use {response.request.url}: its reply is over 64 MiB; stopped reading")
        if deadline is not None and time.perf_counter() > deadline:
            raise httpx.ReadTimeout("the reply did not end in time", request=response.request)
    return bytes(body)


#: asyncio.timeout (3.11+) limits the calling task itself; wait_for's task of its own outlives a SIGTERM
_deadline = getattr(asyncio, "timeout", None)


async def within(awaitable: Any, seconds: float) -> Any:
    """``await awaitable``, ``seconds`` at most in all (a site's timeout is per call): TimeoutError past it."""
    if _deadline is None:  # (Python 3.10)
        return await asyncio.wait_for(awaitable, seconds)
    async with _deadline(seconds):
        return await awaitable


async def asend(pool: httpcore.AsyncConnectionPool, out: Outgoing, timeouts: dict[str, float]) -> Reply:
    """``send`` on an event loop, through httpcore (``send --batch``, the operator loop).

    ``timeouts`` is httpcore's (``connect``, ``read``, ``write``, ``pool``); ``read`` is also the
    limit of the whole call, as in ``send``. Network trouble raises UnreachableError.
    """
    headers, body = out.encode()
    started = time.perf_counter()
    request = pool.request("POST", out.url, headers=headers, content=body, extensions={"timeout": timeouts})
    try:
        response = await within(request, timeouts["read"])
    except (httpcore.NetworkError, httpcore.TimeoutException, httpcore.ProtocolError, asyncio.TimeoutError) as exc:
        raise unreachable(out.url, exc, timeouts["read"]) from None
    return to_reply(out, response.status, response.headers, response.content, started)


def deliver(
    site: Site,
    request: Outgoing,
    *,
    http: httpx.Client | None = None,
    timeout: float | None = None,
    log: Log | None = None,
) -> Reply:
    """Send one request with the caller's client, or with a client made of the site's settings."""
    if http is not None:
        return send(http, request, log)
    with make_client(site, timeout) as own:
        return send(own, request, log)


def send_message(
    site: Site,
    user: int,
    bot: int,
    message: str = "",
    photos: Sequence[Photo] = (),
    attach: Path | None = None,
    *,
    http: httpx.Client | None = None,
    timeout: float | None = None,
    log: Log | None = None,
) -> Reply:
    """Send a ``message_sent`` from ``user`` to ``bot`` to the site's panel; ``reply.failure()`` says if it failed.

    Network trouble raises UnreachableError.
    """
    return deliver(site, message_sent(site, user, bot, message, photos, attach), http=http, timeout=timeout, log=log)


def log_request(log: Log, out: Outgoing, request: httpx.Request) -> None:
    """What ``-v`` shows of a request: headers and fields, token masked, file contents elided."""
    log(f"> POST {out.url}")
    for name, value in request.headers.items():
        log(f"> {name}: {value}")
    if request.url.userinfo:  # httpx adds it when it sends: from the URL's user and password
        log("> authorization: Basic ***")
    log(">")
    for name, value in out.shown_fields():
        log(f">   {name}={value}")
    if out.file is not None:
        log(
            f">   {out.file_field}=@{out.file.name} ({out.file.stat().st_size} bytes, {out.file_type}, "
            "contents not shown)"
        )


def log_reply(log: Log, reply: Reply) -> None:
    """What ``-v`` shows of a reply: status, headers, body."""
    log(f"< HTTP {reply.status} ({reply.ms:.0f} ms)")
    for name, value in reply.headers.items():
        log(f"< {name}: {value}")
    log("<")
    text = reply.body.decode("utf-8", "replace")
    if len(text) > 4000:
        text = text[:4000] + f"... ({len(reply.body)} bytes in all)"
    for line in text.splitlines() or [""]:
        log(f"< {line}")
