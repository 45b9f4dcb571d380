"""The HTTP protocol opcli's servers run under uvicorn: uvicorn's own, with the connection at hand.

An ASGI app only sees messages: uvicorn answers 500 when it returns without starting a response,
and closes the transport when it fails after starting one. What acts on the connection itself
(close it without a response, reset it, keep it open until the server stops) needs the transport,
so the protocol puts a ``Connection`` in each request's ``scope["extensions"]["opcli.connection"]``,
and, over httptools, ``answer`` in ``scope["extensions"]["opcli.answer"]``: a whole reply in one step.

Everything written to a connection goes through its ``Outbox``: what one turn of the event loop
writes leaves at the end of the turn, in one piece.

``Guarded`` adds the rules no client may break (over httptools, the parser opcli runs on): headers
at most ``MAX_HEADER_BYTES`` (431), the time limits of ``listen.timeouts`` (an idle connection is
closed, slow headers get 408, a stalled body gets 408 from the app), malformed HTTP answered with a
JSON envelope and journaled like any other call, and an ``Upgrade: h2c`` offer (``curl --http2``)
ignored so the request is served as HTTP/1.1.

``HttpToolsProtocol`` is the one ``server.uvicorn_config`` passes as ``http=``; ``H11Protocol``
is the same over uvicorn's pure-Python h11 parser (h11 keeps its own limits).
"""

from __future__ import annotations

import asyncio
import functools
import re
import socket
import struct
import weakref
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httptools
from uvicorn.protocols.http.h11_impl import H11Protocol as _H11Protocol
from uvicorn.protocols.http.httptools_impl import STATUS_LINE
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpToolsProtocol

EXTENSION = "opcli.connection"
ANSWER = "opcli.answer"


class Connection:
    """The TCP connection a request came on: close it, reset it, or wait while it lasts.

    ``ended`` is set once the client has gone away or the server has begun to shut down, so a
    request that waits on purpose waits on it and never holds the shutdown up.
    """

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.lost = asyncio.Event()
        self.ended = asyncio.Event()
        # set when the protocol gives up on a request whose body the app is reading: (status, message)
        self.failure: tuple[int, str] | None = None
        # set by the app once the request's answer is decided (journaled): a half-close then waits for it
        self.answering = False

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
    """Mixin for a uvicorn HTTP protocol: one ``Connection`` per TCP connection, for every request's scope.

    (The protocol puts it in the scope: ``Guarded`` as the request's headers end, ``H11Protocol``
    around the app.) uvicorn's protocol, and the ``Connection``, write through the ``Outbox``.
    """

    connection: Connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        outbox = Outbox(transport, self.loop)  # type: ignore[attr-defined]
        self.connection = Connection(outbox)  # type: ignore[arg-type]
        super().connection_made(outbox)  # type: ignore[misc]

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)  # type: ignore[misc]
        self.connection.lost.set()
        self.connection.ended.set()

    def eof_received(self) -> bool:
        """The client half-closed (``nc -N``): close once this turn's answers have left, not at once.

        (Returning None, as uvicorn does, makes asyncio close the transport now, and an answer
        waiting in the ``Outbox`` for the end of the turn would be dropped.) ``Guarded`` does
        more, and returns True when it did.
        """
        if not super().eof_received():  # type: ignore[misc]
            self.loop.call_soon(self.transport.close)  # type: ignore[attr-defined]
        return True

    def shutdown(self) -> None:
        """The server stops: whatever waits on this connection stops waiting."""
        self.connection.ended.set()
        super().shutdown()  # type: ignore[misc]


MAX_HEADER_BYTES = 64 * 1024
_UPGRADE = re.compile(rb"\r\n(upgrade|http2-settings)([ \t]*):", re.I)


@dataclass(frozen=True)
class Rules:
    """What a server asks of its clients; the listener's come from ``listen.timeouts``."""

    idle: float = 5.0
    headers: float = 10.0
    body: float = 30.0
    header_bytes: int = MAX_HEADER_BYTES


_TLS = "a TLS handshake: the listener speaks plain HTTP (use an http:// URL, or a TLS proxy in front of it)"


class _TooLarge(Exception):
    pass


class Outbox:
    """A connection's transport as servers write to it: a turn of the event loop's writes leave at its end, together.

    Over loopback each write is a trip through the TCP stack, and it wakes the client: what is
    written in the same turn -- a response's head and body -- goes out in one ``write`` once the
    turn's work is done (more than ``LIMIT`` bytes waiting leave at once). Under 32 busy clients
    the listener answers about a third more calls a second than when it wrote each answer as soon
    as it was made. (A call's journal line is written before its reply is made, so it is in the
    file before any of the reply leaves.)
    """

    LIMIT = 64 * 1024

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.loop = loop
        self.waiting = b""

    def write(self, data: bytes) -> None:
        if type(data) is not bytes:  # the caller may reuse its buffer once write returns
            data = bytes(data)
        if not self.waiting:
            self.waiting = data
            self.loop.call_soon(self.flush)
        else:
            self.waiting += data
        if len(self.waiting) > self.LIMIT:
            self.flush()

    def writelines(self, data: Any) -> None:
        self.write(b"".join(data))

    def flush(self) -> None:
        """Send what is waiting."""
        data, self.waiting = self.waiting, b""
        if data and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        """Reset the connection: what waits is dropped."""
        self.waiting = b""
        self.transport.abort()

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return len(self.waiting) + self.transport.get_write_buffer_size()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def __getattr__(self, name: str) -> Any:  # the rest of the transport's methods (get_extra_info, ...)
        return getattr(self.transport, name)


class Guarded:
    """Mixin for uvicorn's httptools protocol: size and time limits, malformed HTTP as JSON, no h2c.

    A connection is in one phase at a time: ``idle`` (no request under way), ``headers``,
    ``body`` (the app runs and reads it), ``answer`` (the app has the whole request). Each phase
    has its deadline, and one timer per connection enforces it.
    """

    transport: asyncio.Transport
    connection: Connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        app = getattr(self.config, "app", None)  # type: ignore[attr-defined]
        self.rules: Rules = getattr(app, "connection_rules", None) or Rules()
        self.on_bad_request = getattr(app, "bad_request", None)
        self.phase = "idle"
        self.in_head = False  # a request's headers have begun and not ended (a pipelined one's too)
        self.header_bytes = 0
        self.deadline: float | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.arm(self.rules.idle)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        super().connection_lost(exc)  # type: ignore[misc]

    def arm(self, seconds: float | None) -> None:
        """Give the phase its time limit (None: none), from now.

        The timer moves only to fire sooner: a later deadline is seen when it fires, and it waits
        again. A request changes phase four times; a timer set and cancelled each time cost more
        than the rest of the rules together.
        """
        loop = self.loop  # type: ignore[attr-defined]
        self.deadline = None if seconds is None else loop.time() + seconds
        if self.deadline is not None and (self.timer is None or self.deadline < self.timer_at):
            if self.timer is not None:
                self.timer.cancel()
            self.timer_at = self.deadline
            self.timer = loop.call_at(self.deadline, self.expired)

    def data_received(self, data: bytes) -> None:
        if self.connection.failure is not None:
            return  # the request is being refused; what else comes is not read
        if self.phase == "idle":
            if data[:2] == b"\x16\x03":  # a TLS ClientHello: no HTTP request starts so
                self.phase = "headers"
                self.refuse(400, _TLS, "-", "-")
                return
            self.phase = "headers"
            self.arm(self.rules.headers)  # for the whole header block, however it trickles in
        elif self.phase == "body":
            self.arm(self.rules.body)
        if self.phase == "headers":
            # the HTTP/2 upgrade offer (curl --http2) would stop the parser at the headers:
            # rename the header so that the request is read, and answered, as HTTP/1.1
            end = data.find(b"\r\n\r\n")
            head = data if end < 0 else data[:end]  # (the body is not lowered: a multipart one is most of it)
            if head.lower().find(b"pgrade:") >= 0:  # (``in`` first tries its bytes as a number: 0.1 µs more)
                data = _UPGRADE.sub(rb"\r\nx-opcli-ignored-\1\2:", head) + data[len(head) :]
        try:
            self.parser.feed_data(data)  # type: ignore[attr-defined]
        except httptools.HttpParserUpgrade:
            self.refuse(400, "HTTP upgrades are not supported: send the request as HTTP/1.1")
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _TooLarge):
                self.refuse(431, f"request headers larger than {self.rules.header_bytes} bytes")
            elif isinstance(cause, httptools.HttpParserInvalidURLError):
                self.refuse(400, "malformed HTTP request: the request target is not a path")
            else:
                self.refuse(400, f"malformed HTTP request: {exc}")

    def on_message_begin(self) -> None:
        super().on_message_begin()  # type: ignore[misc]
        self.in_head = True
        self.header_bytes = 0
        self.connection.answering = False
        if self.phase == "idle":  # (begun in the chunk that ended a request answered early: see went_idle)
            self.phase = "headers"
            self.arm(self.rules.headers)

    # on_url and on_header, called for every request line and header, are uvicorn's own with the
    # size rule, not a call to them: that call cost 1.4 µs of a multipart call's 65

    def on_url(self, url: bytes) -> None:
        self.header_bytes += len(url)
        if self.header_bytes > self.rules.header_bytes:
            raise _TooLarge()
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > self.rules.header_bytes:
            raise _TooLarge()
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))  # type: ignore[attr-defined]

    def on_headers_complete(self) -> None:
        self.scope["extensions"] = extensions = {EXTENSION: self.connection}  # type: ignore[attr-defined]
        super().on_headers_complete()  # type: ignore[misc]
        cycle = self.cycle  # type: ignore[attr-defined]
        if cycle is not None and cycle.scope is self.scope:  # this request's (its app starts at the next turn)
            # (weakly: the scope is the cycle's, and a cycle of references would wait for the GC)
            extensions[ANSWER] = functools.partial(answer, weakref.ref(cycle))
        self.in_head = False
        self.phase = "body"
        self.arm(self.rules.body)

    def on_message_complete(self) -> None:
        super().on_message_complete()  # type: ignore[misc]
        self.phase = "answer"
        self.arm(None)
        if self.cycle is not None and self.cycle.response_complete:  # type: ignore[attr-defined]
            self.went_idle()  # answered early (a 413, a 415) and the rest of the body came since

    def on_response_complete(self) -> None:
        """An answer has gone out: the next pipelined request starts, or the connection goes idle.

        uvicorn's own method, but for its keep-alive timer: the ``idle`` rule's timer closes an
        idle connection already, and a second timer set and cancelled for every request cost
        about 3 µs of each call's 70 (this is all the rest of uvicorn 0.x's method).
        """
        self.server_state.total_requests += 1  # type: ignore[attr-defined]
        if self.transport.is_closing():
            return
        self.flow.resume_reading()  # type: ignore[attr-defined]
        if self.pipeline:  # type: ignore[attr-defined]
            self._start_asgi_task(*self.pipeline.pop())  # type: ignore[attr-defined]
        if self.phase == "answer" and self.cycle.response_complete:  # type: ignore[attr-defined]
            self.went_idle()  # (a pipelined request under way is not idle: its own answer ends it)
        elif self.phase == "body" and self.cycle.response_complete:  # type: ignore[attr-defined]
            # answered early (a 413, a 415; not a pipelined request whose body is coming): the rest of
            # the body, if it comes, is dropped; a client that sends no more is idle (each chunk re-arms body)
            self.arm(self.rules.idle)

    def eof_received(self) -> bool:
        """The client half-closed (``nc -N``) or closed: a request it cut short is answered 400 (and journaled).

        Headers cut short get it here, a body cut short from the app reading it. An answer already
        journaled (waiting for stdout to show its line) goes out, then the connection closes.
        Otherwise it closes once this turn's answers have left: an answer still to come (a delay
        fault, a slow upstream) goes nowhere, as a client that closes has most often given up.
        """
        super().eof_received()  # type: ignore[misc]
        if self.connection.failure is not None and self.phase != "body":  # refused already: its answer is coming
            return True
        if self.phase == "headers":
            self.refuse(400, "the request ended before its headers did: the client closed its side")
        elif self.phase == "body":
            self.refuse(400, "the request's body ended early: the client closed its side")
        elif self.phase == "answer" and self.connection.answering and not self.pipeline:  # type: ignore[attr-defined]
            self.cycle.keep_alive = False  # type: ignore[attr-defined]  # journaled: it goes out, then the close
        else:
            return False
        return True

    def went_idle(self) -> None:
        """The request under way was answered: the connection waits for the next one.

        When the next one's headers have begun already (in the same write as the last of this one,
        say), it is in their phase instead: they are given ``headers`` to end, and get the 408.
        """
        if self.in_head:
            self.phase = "headers"
            self.arm(self.rules.headers)
        else:
            self.phase = "idle"
            self.arm(self.rules.idle)

    def shutdown(self) -> None:
        """The server stops: an upload under way is answered 503 at once instead of waited for."""
        if self.phase == "body":
            self.refuse(503, "the listener is stopping")
        super().shutdown()  # type: ignore[misc]

    def expired(self) -> None:
        self.timer = None
        if self.deadline is None:
            return
        if self.deadline > self.loop.time():  # type: ignore[attr-defined]  # the phase changed since: wait on
            self.timer_at = self.deadline
            self.timer = self.loop.call_at(self.deadline, self.expired)  # type: ignore[attr-defined]
            return
        if self.phase == "idle":
            self.transport.close()
        elif self.phase == "headers":
            self.refuse(408, f"the request's headers did not come within {self.rules.headers:g} s")
        elif self.phase == "body":
            self.refuse(408, f"the request's body stalled: nothing came for {self.rules.body:g} s")

    def refuse(self, status: int, message: str, method: str | None = None, path: str | None = None) -> None:
        """Give up on the request under way: the app answers it when it is reading the body, else we do."""
        cycle = self.cycle  # type: ignore[attr-defined]
        self.arm(None)
        if self.phase == "body" and cycle is not None and cycle.response_started:  # answered (a 413): no 2nd
            self.transport.close()
            return
        if self.phase == "body" and cycle is not None:
            self.connection.failure = (status, message)
            cycle.keep_alive = False
            cycle.message_event.set()  # the app's receive() returns, sees the failure and answers it
            return
        scope = self.scope if self.phase == "headers" and self.scope else {}  # type: ignore[attr-defined]
        method = method or scope.get("method") or self.parser_method()
        path = path or scope.get("path") or getattr(self, "url", b"").decode("latin-1", "replace").split("?")[0] or "?"
        reply = {"status": 0, "message": message}
        body = self.on_bad_request(method, path, status, reply) if self.on_bad_request else None
        if body is None:
            from opcli import jsonl

            body = jsonl.compact(reply)
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.connection.failure = (status, message)  # what else comes is not read
        before = getattr(getattr(self.config, "app", None), "before_reply", None)  # type: ignore[attr-defined]
        shown = before() if before is not None else None  # stdout shows the line first, as for any call
        data = head.encode("latin-1") + body
        if shown is None:
            self.answer_and_close(data)
        else:
            shown.add_done_callback(lambda _: self.answer_and_close(data))

    def answer_and_close(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)
            self.transport.close()

    def parser_method(self) -> str:
        """The request's method once its request line was read, else ``?`` (the parser's is stale then)."""
        if not getattr(self, "url", b""):
            return "?"
        try:
            return self.parser.get_method().decode("ascii")  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - the request line itself was what broke
            return "?"


async def answer(
    request: Any, status: int, content_type: bytes | None, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    """Send a whole reply, with its Content-Length, as the answer of uvicorn's ``request`` (its cycle's weakref).

    The app finds it, ``request`` given, as ``scope["extensions"]["opcli.answer"]`` under opcli's
    httptools protocol. It does what uvicorn's ``send`` does with an ``http.response.start`` and
    then the last ``http.response.body`` -- flow control, no body for HEAD, ``connection:
    close`` when the connection ends after it, the next pipelined request -- in one step: the
    two messages took 4-5 µs of a call's 70. ``headers`` (after the content type and length) are
    the app's own, not checked for a CR or LF; opcli's servers keep no access log.
    """
    cycle = request()  # (alive: its app is running)
    if cycle.flow.write_paused and not cycle.disconnected:
        await cycle.flow.drain()
    if cycle.disconnected:
        return
    if cycle.response_started:
        raise RuntimeError("the response was started already")
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    head = [STATUS_LINE[status]]
    for name, value in cycle.default_headers:
        head += (name, b": ", value, b"\r\n")
    if content_type:
        head += (b"content-type: ", content_type, b"\r\n")
    head.append(b"content-length: %d\r\n" % len(body))
    for name, value in headers:
        head += (name, b": ", value, b"\r\n")
    if not cycle.keep_alive:
        head.append(b"connection: close\r\n")
    head.append(b"\r\n")
    if cycle.scope["method"] != "HEAD":
        head.append(body)
    cycle.transport.write(b"".join(head))
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()


class HttpToolsProtocol(ConnectionAccess, Guarded, _HttpToolsProtocol):
    """uvicorn's httptools protocol with ``ConnectionAccess`` and the ``Guarded`` rules."""


class H11Protocol(ConnectionAccess, _H11Protocol):
    """uvicorn's h11 protocol with ``ConnectionAccess``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        app = self.app

        async def with_connection(scope: dict[str, Any], receive: Any, send: Any) -> None:
            scope.setdefault("extensions", {})[EXTENSION] = self.connection
            await app(scope, receive, send)

        self.app = with_connection
