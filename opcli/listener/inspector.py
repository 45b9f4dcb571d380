"""``/_opcli/``: the listener's HTTP API for tests in any language, and the live page for people.

``Inspector(listener)`` is a raw ASGI app that the Listener mounts at ``/_opcli/``; its requests
are never journaled nor counted, and only loopback clients are answered. Lines are the
Journal's ``as_json()``. The Journal records on the event loop before each reply is sent, so
the one subscription here only appends to per-request buffers and sets events: a waiter or an
event stream never slows a call, and a stream that falls too far behind is closed (a browser
resumes it with ``Last-Event-ID``). ``close()`` ends every open stream and wait, so that a
stopping listener exits at once instead of waiting for them.
"""

from __future__ import annotations

import asyncio
import mimetypes
import re
import shlex
import sys
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from opcli import jsonl
from opcli.listener.asgi import (
    COMMON_HEADERS,
    HTTPError,
    host_is_local,
    integer,
    is_loopback,
    query,
    read_json,
    respond,
)
from opcli.listener.call import Call, Callback
from opcli.listener.forms import header
from opcli.listener.live import Follower, until_disconnect
from opcli.protocol import hide_secrets, hide_secrets_in

if TYPE_CHECKING:
    from opcli.listener.app import Listener
    from opcli.listener.journal import Entry

PREFIX = "/_opcli/"
KEEPALIVE_SECONDS = 15.0  # an idle stream sends a comment this often, so a dead client is noticed
# a stream sends what came within this time in one write: a write per call cost the listener a
# tenth of the calls it answers per second, and a person watching sees no difference
BATCH_SECONDS = 0.02
_STATIC = {
    "": ("inspector.html", "text/html; charset=utf-8"),
    "inspector.css": ("inspector.css", "text/css; charset=utf-8"),
    "inspector.js": ("inspector.js", "text/javascript; charset=utf-8"),
}
# the page loads nothing from elsewhere and runs no inline code: journal content cannot script it
_PAGE_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]


# --- curl --------------------------------------------------------------------------------------


def curl_of(line: Entry, base_url: str, webhook_encoding: str = "urlencoded") -> str:
    """The call (or callback) as the ``curl`` command ``send --dry-run`` prints, token from ``$OPCLI_TOKEN``.

    Fields and photos as ``opcli replay`` rebuilds them; a file names its saved copy when there is
    one, else its original filename (to be supplied by whoever runs the command).
    """
    from opcli.client import Outgoing  # httpx: only when asked, not at every listener's start
    from opcli.replay import journal_fields

    fields = [("token", ""), *journal_fields(line.as_json())]
    if isinstance(line, Callback):
        return Outgoing(line.url, fields, multipart=webhook_encoding == "multipart").curl()
    multipart = line.content_type != "application/x-www-form-urlencoded" or bool(line.files)
    command = Outgoing(base_url + line.path, fields, multipart=multipart).curl()
    for entry in line.files:
        path = entry.get("saved_as") or entry.get("filename") or "FILE"
        kind = mimetypes.guess_type(str(entry.get("filename") or path))[0] or "application/octet-stream"
        command += " -F " + shlex.quote(f"{entry.get('field') or 'attach'}=@{path};type={kind}")
    return command


# --- the live parts: streams and waiters ---------------------------------------------------------


# --- the app -----------------------------------------------------------------------------------

Handler = Callable[[dict[str, Any], Any, Any, tuple[str, ...]], Awaitable[None]]


class Inspector:
    """The ``/_opcli/`` ASGI app of one Listener: the API, the event stream, the page."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.journal = listener.journal
        self.followers: set[Follower] = set()
        self.closing = False
        self._static: dict[str, bytes] = {}
        self.journal.subscribe(self._recorded)
        self.routes: list[tuple[re.Pattern[str], dict[str, Handler]]] = [
            (re.compile(r"(|inspector\.css|inspector\.js)"), {"GET": self.page, "HEAD": self.page}),
            (re.compile(r"calls"), {"GET": self.calls, "DELETE": self.forget}),
            (re.compile(r"calls/([^/]+)"), {"GET": self.one}),
            (re.compile(r"calls/([^/]+)/curl"), {"GET": self.curl}),
            (re.compile(r"calls/([^/]+)/files/([^/]+)"), {"GET": self.download}),
            (re.compile(r"calls/([^/]+)/replay"), {"POST": self.replay_route}),
            (re.compile(r"wait"), {"GET": self.wait}),
            (re.compile(r"events"), {"GET": self.events}),
            (re.compile(r"faults"), {"GET": self.faults, "PUT": self.faults, "DELETE": self.faults}),
        ]

    # --- the journal's side: must stay cheap -----------------------------------------------------

    def _recorded(self, line: Any) -> None:
        if self.followers and isinstance(line, (Call, Callback)):
            self._hand_over(line)

    def _hand_over(self, item: Entry | str) -> None:
        for follower in list(self.followers):
            follower.deliver(item)

    def close(self) -> None:
        """End every open event stream and wait (the listener is stopping); later ones get 503."""
        self.closing = True
        for follower in list(self.followers):
            follower.end("the listener is stopping")

    def dumps(self, obj: Any) -> bytes:
        """``obj`` as JSON, the secrets masked (the journal's lines already are; an error may echo a request)."""
        data = jsonl.compact(obj)
        if self.journal.carries_secret(data):
            data = jsonl.compact(hide_secrets_in(obj, self.journal.secrets))
        return data

    def frame(self, item: Entry | str) -> bytes:
        """One Server-Sent Event: ``id`` the seq, ``event`` the line's event, ``data`` the line."""
        if isinstance(item, str):
            return f"event: {item}\ndata: {{}}\n\n".encode()
        return b"id: %d\nevent: %s\ndata: %s\n" % (item.seq, item.event.encode(), item.line())  # (its \n ends it)

    # --- dispatch --------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = False

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            handler, args = self.route(scope)
            await handler(scope, receive, tracked, args)
        except HTTPError as exc:
            await respond(send, exc.status, self.dumps({"status": 0, "message": exc.message}), headers=exc.headers)
        except Exception as exc:  # a bug must not print a traceback on the listener's stderr: answer 500
            if not started:
                message = f"inspector error: {type(exc).__name__}: {exc}"
                await respond(send, 500, self.dumps({"status": 0, "message": message}))

    def route(self, scope: dict[str, Any]) -> tuple[Handler, tuple[str, ...]]:
        """The handler of a request, after the loopback, Host and Origin checks; else HTTPError."""
        if not is_loopback(scope.get("client")):
            raise HTTPError(403, "/_opcli/ answers only clients on this machine (loopback)")
        host = header(scope, b"host")
        if host and not host_is_local(host):
            raise HTTPError(403, f"/_opcli/ answers only requests to a local address, not to {host!r}")
        origin = header(scope, b"origin")
        if scope["method"] not in ("GET", "HEAD") and origin and urlsplit(origin).netloc != host:
            raise HTTPError(403, f"/_opcli/ refuses {scope['method']} from another origin ({origin})")
        rest = scope["path"][len(PREFIX) :]
        method = scope["method"]
        for pattern, methods in self.routes:
            match = pattern.fullmatch(rest)
            if match:
                if method not in methods:
                    allow = ", ".join(methods)
                    message = f"{method} is not allowed on {scope['path']} (allowed: {allow})"
                    raise HTTPError(405, message, [(b"allow", allow.encode())])
                return methods[method], match.groups()
        raise HTTPError(404, f"nothing at {scope['path']}; the API is described at {PREFIX} and in the README")

    def kept(self, seq_text: str) -> Entry:
        """The kept line numbered ``seq_text``: 400 when that is no number, 404 when not kept."""
        try:
            seq = integer(seq_text, 1)
        except ValueError as exc:
            raise HTTPError(400, f"seq {exc}") from None
        entry = self.journal.get(seq)
        if entry is None:
            raise HTTPError(404, f"no line #{seq} is kept (forgotten, not yet written, or past listen.keep)")
        return entry

    # --- the API ---------------------------------------------------------------------------------

    async def calls(self, scope: dict[str, Any], receive: Any, send: Any, args: tuple[str, ...]) -> None:
        params = query(scope, "kind", "after")
        lines = self.journal.entries(params.get("kind"), params.get("after", 0))
        await respond(send, 200, self.dumps({"calls": [e.as_json() for e in lines]}))

    async def one(self, scope: dict[str, Any], receive: Any, send: Any, args: tuple[str, ...]) -> None:
        query(scope)
        await respond(send, 200, self.dumps(self.kept(args[0]).as_json()))

    async def forget(self, scope: dict[str, Any], receive: Any, send: Any, args: tuple[str, ...]) -> None:
        query(scope)
        self.journal.clear()
        self._hand_over("clear")
        await respond(send, 204, None)

    async def curl(self, scope: dict[str, Any], receive: Any, send: Any, args: tuple[str, ...]) -> None:
        query(scope)
        entry = self.kept(args[0])
        if entry.event == "call" and entry.kind == "unknown":
            raise HTTPError(400, f"line #{entry.seq} is no call to an endpoint ({entry.method} {entry.path})")
        base = f"{scope.get('scheme', 'http')}://{header(scope, b'host') or 'localhost'}"
        text = hide_secrets(curl_of(entry, base, self.listener.site.webhook_encoding) + "\n", self.journal.secrets)
        await respond(send, 200, text.encode("utf-8"), b"text/plain; charset=utf-8")

    async def download(self, scope: dict[str, Any], receive: Any, send: Any, args: tuple[str, ...]) -> None:
        """A file saved with ``--save-dir``: only one a kept line names, only from inside that directory."""
        query(scope)
        entry = self.kept(args[0])
        files = getattr(entry, "files", [])
        index = int(args[1]) if args[1].isdigit() else -1
        if not 0 <= index < len(files):
            raise HTTPError(404, f"line #{entry.seq} has no file {args[1]!r}")
        saved, save_dir = files[index].get("saved_as"), self.listener.save_dir
        if not saved or save_dir is None:
            raise HTTPError(404, f"file {index} of line #{entry.seq} was not saved (listen --save-dir keeps files)")
        path = Path(saved).resolve()
        if not path.is_relative_to(save_dir.resolve()) or not path.is_file():
            raise HTTPError(404, f"file {index} of line #{entry.seq} is no longer in {save_dir}")
        name = str(files[index].get("filename") or path.name)
        ascii_name = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:100] or "file"
        disposition = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"
        try:
            handle = open(path, "rb")
        except OSError as exc:
            raise HTTPError(404, f"file {index} of line #{entry.seq} cannot be read: {exc.strerror}") from None
        with handle:
            size = handle.seek(0, 2)
            handle.seek(0)
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/octet-stream"),  # never rendered on this origin
                        (b"content-length", str(size).encode()),
                        (b"content-disposition", disposition.encode("latin-1")),
                        *COMMON_HEADERS,
                    ],
                }
            )
            while chunk := handle.read(1024 * 1024):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def wait(self, scope: dict[str, Any], receive: Any, send: Any, args: tuple[str, ...]) -> None:
        """Long-poll until ``count`` call lines are kept: 200 with the first ``count``; 408 with what came."""
        params = query(scope, "count", "kind", "after", "timeout")
        if "count" not in params:
            raise HTTPError(400, "count is missing: /_opcli/wait?count=N[&kind=K][&after=SEQ][&timeout=S]")
        count, kind, after = params["count"], params.get("kind"), params.get("after", 0)
        timeout = params.get("timeout", 10.0)
        follower = Follower(after, backlog=sys.maxsize)  # drained at every wake: it never falls behind
        self.followers.add(follower)  # before the snapshot: a line recorded meanwhile is not lost
        found = self.journal.entries(kind, after, "call")
        follower.after = max([after, *(e.seq or 0 for e in found)])
        watcher = asyncio.create_task(until_disconnect(receive, follower))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while len(found) < count and not follower.ended and not self.closing:
                try:
                    await asyncio.wait_for(follower.wake.wait(), max(deadline - loop.time(), 0))
                except asyncio.TimeoutError:
                    break
                found += [e for e in follower.take() if not isinstance(e, str) and _is_call(e, kind)]
        finally:
            self.followers.discard(follower)
            watcher.cancel()
        if follower.ended == "client gone":
            return
        lines = [e.as_json() for e in found[:count]]
        if len(found) >= count:
            await respond(send, 200, self.dumps({"calls": lines}))
            return
        came = f"{len(found)} came"
        if self.closing:
            status, message = 503, f"the listener is stopping; {came}"
        else:
            what = f"{count} {kind + ' ' if kind else ''}call{'s' * (count != 1)}"
            status, message = 408, f"waited {timeout:g}s for {what}{f' after #{after}' if after else ''}; {came}"
        await respond(send, status, self.dumps({"status": 0, "message": message, "calls": lines}))

    async def events(self, scope: dict[str, Any], receive: Any, send: Any, args: tuple[str, ...]) -> None:
        """Server-Sent Events: the kept lines after ``after`` (or ``Last-Event-ID``), then each new one."""
        after = query(scope, "after").get("after", 0)
        last_id = header(scope, b"last-event-id").strip()
        if last_id:
            try:
                after = integer(last_id, 0)
            except ValueError as exc:
                raise HTTPError(400, f"Last-Event-ID {exc}") from None
        if self.closing:
            raise HTTPError(503, "the listener is stopping")
        body = bytearray(b"retry: 1000\n\n")
        if after > self.journal.seq:  # a seq this listener never wrote: the page saw an earlier run
            after = 0
            body += self.frame("clear")
        follower = Follower(after)
        self.followers.add(follower)
        backlog = self.journal.entries(after=after)
        watcher = asyncio.create_task(until_disconnect(receive, follower))
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-store"),
                        (b"x-accel-buffering", b"no"),
                        *COMMON_HEADERS,
                    ],
                }
            )
            for entry in backlog:
                body += self.frame(entry)
                follower.after = entry.seq or follower.after
                if len(body) > 256 * 1024:
                    await send({"type": "http.response.body", "body": bytes(body), "more_body": True})
                    body.clear()
            while not follower.ended:
                if body:
                    await send({"type": "http.response.body", "body": bytes(body), "more_body": True})
                    body.clear()
                try:
                    await asyncio.wait_for(follower.wake.wait(), KEEPALIVE_SECONDS)
                except asyncio.TimeoutError:
                    body += b": keep-alive\n\n"
                else:
                    await asyncio.sleep(BATCH_SECONDS)
                for item in follower.take():
                    body += self.frame(item)
            if follower.ended != "client gone":
                await send({"type": "http.response.body", "body": bytes(body)})
        finally:
            self.followers.discard(follower)
            watcher.cancel()

    async def replay_route(self, scope: dict[str, Any], receive: Any, send: Any, args: tuple[str, ...]) -> None:
        query(scope)
        entry = self.kept(args[0])
        if not isinstance(entry, Call) or not entry.counted:
            what = "a callback" if isinstance(entry, Callback) else f"no call to an endpoint ({entry.path})"
            raise HTTPError(400, f"line #{entry.seq} is {what}: only calls to the four endpoints are replayed")
        status, answer = await self.replay(entry, scope)
        await respond(send, status, self.dumps(answer))

    async def replay(self, call: Call, scope: dict[str, Any]) -> tuple[int, Any]:
        """Send ``call`` again to the listener's own endpoint (``opcli replay``'s core, with a valid token).

        Answers ``(200, the new journal line)``, or an envelope: 400 when the line cannot be replayed
        (a file that was not saved), 502 when the listener's own endpoint could not be reached.
        """
        from opcli.errors import UnreachableError, UsageError
        from opcli.replay import replay_entry

        host, port = scope["server"][:2]
        own = f"{scope.get('scheme', 'http')}://{f'[{host}]' if ':' in host else host}:{port}"
        before = self.listener.journal.seq
        try:
            # replay_entry blocks until the reply came, and the reply comes from this very loop
            await asyncio.to_thread(replay_entry, call.as_json(), self.listener.site, base_url=own)
        except UsageError as exc:
            return 400, {"status": 0, "message": str(exc)}
        except UnreachableError as exc:
            return 502, {"status": 0, "message": str(exc)}
        new = next(
            (e for e in self.listener.journal.entries(after=before) if getattr(e, "replay_of", None) == call.seq),
            None,
        )
        if new is None:  # journaled but no longer kept (DELETE, or listen.keep exceeded meanwhile)
            return 200, {"status": 1, "message": f"replayed #{call.seq}; its line is no longer kept"}
        return 200, new.as_json()

    async def faults(self, scope: dict[str, Any], receive: Any, send: Any, args: tuple[str, ...]) -> None:
        """The listener's fault rules: GET them, PUT a JSON list of SPEC strings, DELETE them all."""
        query(scope)
        rules = self.listener.faults
        method = scope["method"]
        if method in ("GET", "HEAD"):
            await respond(send, 200, self.dumps(rules.specs()))
            return
        if method == "DELETE":
            rules.clear()
            await respond(send, 204, None)
            return
        specs = await read_json(receive, "a JSON list of fault SPEC strings")
        if not isinstance(specs, list) or not all(isinstance(s, str) for s in specs):
            raise HTTPError(400, 'the body must be a JSON list of fault SPEC strings, e.g. ["user_info:delay=5"]')
        try:
            rules.replace(specs)
        except ValueError as exc:
            raise HTTPError(400, f"bad fault: {exc}") from None
        await respond(send, 200, self.dumps(rules.specs()))

    # --- the page --------------------------------------------------------------------------------

    async def page(self, scope: dict[str, Any], receive: Any, send: Any, args: tuple[str, ...]) -> None:
        name, content_type = _STATIC[args[0]]
        if name not in self._static:
            self._static[name] = resources.files("opcli.listener").joinpath("static", name).read_bytes()
        await respond(send, 200, self._static[name], content_type.encode(), _PAGE_HEADERS)


def _is_call(entry: Entry, kind: str | None) -> bool:
    return entry.event == "call" and (kind is None or entry.kind == kind)
