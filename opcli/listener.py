"""``opcli listen``: the site's three webhooks and the panel's endpoint, served locally.

``create_app(config)`` builds the Starlette app; ``serve(...)`` binds the socket, runs uvicorn
and returns the exit code. Bodies are parsed by feeding ``python_multipart`` from the request
stream (Starlette's ``request.form()`` drops truncated parts and has no size limit), fields as
strict UTF-8, files streamed to disk while hashed. Errors are JSON, checked in the order
parse -> token -> fields. Every call is journaled after its reply was sent, the token never.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import itertools
import os
import re
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from opcli import __version__
from opcli.config import Config, Site
from opcli.errors import ConfigError, UsageError
from opcli.forms import Body, Rejected, media_type, read_form
from opcli.output import dumps
from opcli.protocol import ACTION_MESSAGE_SENT, ID_FIELDS, KINDS, decode_attaches

MAX_PARTS = 1000
DEFAULT_PORT = 8765
_ID = re.compile(r"^[0-9]{1,18}$")
_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,10}$")


def routes_of(site: Site) -> dict[str, str]:
    """``{path: kind}`` for every URL the site has; two kinds on one path is a config error."""
    paths: dict[str, str] = {}
    for kind in KINDS:
        url = site.panel_url if kind == "message_sent" else site.webhooks.get(kind)
        if not url:
            continue
        path = urlsplit(url).path or "/"
        if path in paths:
            raise ConfigError(
                f"{site.source}: site '{site.name}': {paths[path]} and {kind} share the path "
                f"{path}; the listener tells calls apart by path"
            )
        paths[path] = kind
    if not paths:
        raise ConfigError(f"{site.source}: site '{site.name}' has no panel_url or webhooks to serve")
    return paths


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Listener:
    """The state behind one app: config, counters, where files go, who gets each journal entry."""

    def __init__(
        self, config: Config, save_dir: Path | None = None, on_call: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        self.site = config.site
        self.listen = config.listen
        self.routes = routes_of(self.site)
        self.token = self.site.token.encode("utf-8")
        self.save_dir = save_dir
        self.on_call = on_call
        self.message_ids = itertools.count(1001)
        self.journal: list[dict[str, Any]] = [] if on_call is None else None  # kept in memory for tests

    def record(self, entry: dict[str, Any]) -> None:
        """Hand an entry on once its reply was sent."""
        if self.on_call is not None:
            self.on_call(entry)
        else:
            self.journal.append(entry)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """The ASGI endpoint for every path and method: answer, then journal the call."""
        request = Request(scope, receive)
        response, entry = await self.handle(request)
        try:
            await response(scope, receive, send)
        finally:
            self.record(entry)

    async def handle(self, request: Request) -> tuple[Response, dict[str, Any]]:
        """The reply to one call and its journal entry (errors are JSON, never raised)."""
        path, method = request.scope["path"], request.method
        kind = self.routes.get(path) if method == "POST" else None
        entry: dict[str, Any] = {
            "event": "call",
            "seq": None,
            "time": _now(),
            "kind": kind or "unknown",
            "method": method,
            "path": path,
            "content_type": None,
            "fields": {},
            "attaches": [],
            "files": [],
            "token_ok": None,
            "status": None,
            "reply": None,
        }
        headers: dict[str, str] = {}
        try:
            if kind is None:
                if path == "/" and method in ("GET", "HEAD"):
                    return self._index(request, entry)
                if path in self.routes:
                    headers["Allow"] = "POST"
                    raise Rejected(405, f"{method} is not allowed on {path}: the Operator API uses POST")
                raise Rejected(404, f"no endpoint at {path}; endpoints: {', '.join(self.routes)}")
            status, reply = await self._call(request, kind, entry)
        except Rejected as exc:
            status, reply = exc.status, {"status": 0, "message": exc.message}
        except ClientDisconnect:
            status, reply = 400, {"status": 0, "message": "the client disconnected before the body ended"}
        except Exception as exc:  # a bug must not stop the listener: answer 500 and journal it
            status, reply = 500, {"status": 0, "message": f"listener error: {type(exc).__name__}: {exc}"}
        entry["status"], entry["reply"] = status, reply
        return JSONResponse(reply, status, headers=headers), entry

    def _index(self, request: Request, entry: dict[str, Any]) -> tuple[Response, dict[str, Any]]:
        info = {
            "opcli": __version__,
            "site": self.site.name,
            "endpoints": {kind: path for path, kind in self.routes.items()},
        }
        entry["status"], entry["reply"] = 200, info
        if "text/html" in request.headers.get("accept", ""):
            rows = "".join(f"<li><code>POST {p}</code> &mdash; {k}</li>" for p, k in self.routes.items())
            return HTMLResponse(
                f"<!doctype html><title>opcli listen</title><h1>opcli listen</h1>"
                f"<p>site <b>{self.site.name}</b></p><ul>{rows}</ul>"
            ), entry
        return JSONResponse(info), entry

    async def _call(self, request: Request, kind: str, entry: dict[str, Any]) -> tuple[int, Any]:
        body = Body(self.save_dir)
        try:
            status, reply = await self._parse_and_answer(request, kind, entry, body)
        except BaseException:
            body.discard_files()
            entry["files"] = [u.entry() for u in body.uploads]
            raise
        entry["files"] = [u.entry() for u in body.uploads]
        return status, reply

    async def _parse_and_answer(
        self, request: Request, kind: str, entry: dict[str, Any], body: Body
    ) -> tuple[int, Any]:
        entry["content_type"] = media_type(request)
        await read_form(request, self.listen.max_body_bytes, body)
        try:
            photos, fields = decode_attaches(body.fields)
        except ValueError as exc:
            photos, fields = [], [(k, v) for k, v in body.fields if k != "attaches"]
            bad_attaches = str(exc)
        else:
            bad_attaches = None
        token = next((v for k, v in fields if k == "token"), None)
        shown: dict[str, Any] = {}
        for name, value in fields:
            if name == "token":
                continue
            if name in shown:
                shown[name] = [*shown[name], value] if isinstance(shown[name], list) else [shown[name], value]
            else:
                shown[name] = value
        entry["fields"] = shown
        if kind == "message_sent":
            entry["attaches"] = photos
        entry["token_ok"] = token is not None and hmac.compare_digest(token.encode("utf-8"), self.token)
        if not entry["token_ok"]:
            raise Rejected(401, "missing token" if token is None else "invalid token")
        if kind == "message_sent":
            if shown.get("action") != ACTION_MESSAGE_SENT:
                raise Rejected(422, f"action must be {ACTION_MESSAGE_SENT}, got {shown.get('action')!r}")
            if bad_attaches:
                raise Rejected(422, bad_attaches)
            for k, photo in enumerate(photos):
                if not isinstance(photo.get("file_url"), str) or not photo["file_url"]:
                    raise Rejected(422, f"attaches[{k}] has no file_url")
        ids = {}
        for name in ID_FIELDS[kind]:
            value = shown.get(name)
            if value is None:
                raise Rejected(422, f"{name} is missing")
            if not isinstance(value, str) or not _ID.match(value):
                raise Rejected(422, f"{name} must be an integer, got {dumps(value)}")
            ids[name] = int(value)
        return self._answer(kind, ids)

    def _answer(self, kind: str, ids: dict[str, int]) -> tuple[int, Any]:
        if kind in ("message_sent", "send_message"):
            return 200, {"status": 1, "message": "", "data": {"message_id": next(self.message_ids)}}
        user = ids["user_id"]
        if kind == "user_info":
            profile = self.listen.user_info(user)
            if profile is None:
                return 404, {"status": 0, "message": f"no user {user}"}
            return 200, profile
        return 200, {"media": self.listen.media.get(user, [])}


def create_app(
    config: Config, save_dir: Path | None = None, on_call: Callable[[dict[str, Any]], None] | None = None
) -> Starlette:
    """The listener's Starlette app. Without ``on_call``, entries collect in ``app.state.listener.journal``."""
    listener = Listener(config, save_dir, on_call)
    # the listener is an ASGI endpoint (not a function), so the route passes every method to it
    app = Starlette(routes=[Route("/{path:path}", listener)])
    app.state.listener = listener
    return app


# --- running it --------------------------------------------------------------------------


class Recorder:
    """Writes each journal entry (stdout JSON Lines, the journal file, human blocks) and counts."""

    def __init__(
        self,
        json_mode: bool,
        journal: IO[str] | None,
        human: Callable[[dict[str, Any]], None] | None,
        count: int | None,
    ) -> None:
        self.json_mode = json_mode
        self.journal = journal
        self.human = human
        self.count = count
        self.seq = 0
        self.counted = 0
        self.rejected = 0
        self.stdout_open = True
        self.on_done: Callable[[str], None] = lambda why: None

    def write(self, entry: dict[str, Any]) -> None:
        """The journal line, then stdout: JSON Lines with --json, else the human block."""
        line = dumps(entry) + "\n"
        if self.journal is not None:
            self.journal.write(line)
            self.journal.flush()
        if not self.stdout_open:
            return
        try:
            if self.json_mode:
                sys.stdout.write(line)
                sys.stdout.flush()
            elif self.human is not None and entry["event"] == "call":
                self.human(entry)
        except BrokenPipeError:  # the reader went away (| head): stop, as a Unix tool does
            self.stdout_open = False
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            self.on_done("stdout closed")

    def __call__(self, entry: dict[str, Any]) -> None:
        self.seq += 1
        entry["seq"] = self.seq
        self.write(entry)
        if entry["kind"] != "unknown":
            self.counted += 1
            self.rejected += entry["status"] >= 400
            if self.count is not None and self.counted >= self.count:
                self.on_done("count")


def pick_address(
    site: Site, listen_host: str | None, listen_port: int | None, host: str | None, port: int | None
) -> tuple[str, int]:
    """--host/--port, else listen.host/port, else the site's loopback http URLs, else 127.0.0.1:8765."""
    url_host, url_port = None, None
    for url in [site.panel_url, *site.webhooks.values()]:
        parts = urlsplit(url or "")
        if parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1"):
            url_host, url_port = parts.hostname, parts.port or 80
            break
    chosen_host = next(h for h in (host, listen_host, url_host, "127.0.0.1") if h is not None)
    chosen_port = next(p for p in (port, listen_port, url_port, DEFAULT_PORT) if p is not None)
    return chosen_host, chosen_port


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; a port in use is a UsageError (exit 2), not uvicorn's exit 3."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        hint = " (another listener? use --port 0 for a free port)" if exc.errno == 98 else ""
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}{hint}") from None
    sock.set_inheritable(False)
    return sock


class _Signalled(BaseException):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.exit_code = 128 + signum


def _raise_signalled(signum: int, frame: Any) -> None:
    raise _Signalled(signum)


@dataclass
class Outcome:
    """How a listener run ended."""

    exit_code: int
    counted: int
    rejected: int
    reason: str


def serve(
    config: Config,
    *,
    host: str | None = None,
    port: int | None = None,
    count: int | None = None,
    timeout: float | None = None,
    journal: Path | None = None,
    save_dir: Path | None = None,
    json_mode: bool = False,
    human: Callable[[dict[str, Any]], None] | None = None,
    announce: Callable[[str, dict[str, str]], None] | None = None,
) -> Outcome:
    """Run the listener until --count calls, --timeout, or a signal; returns how it ended.

    ``announce(url, endpoints)`` is called once the socket accepts connections.
    """
    import uvicorn

    address = pick_address(config.site, config.listen.host, config.listen.port, host, port)
    app_routes = routes_of(config.site)  # config errors before binding
    if save_dir is not None:
        try:
            save_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot use --save-dir {save_dir}: {exc.strerror}") from None
    try:
        journal_file = open(journal, "a", encoding="utf-8") if journal else None  # noqa: SIM115
    except OSError as exc:
        raise UsageError(f"cannot open journal {journal}: {exc.strerror}") from None
    recorder = Recorder(json_mode, journal_file, human, count)
    app = create_app(config, save_dir, recorder)
    uv_config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=5, server_header=False
    )
    server = uvicorn.Server(uv_config)
    reasons: list[str] = []  # why it stopped: the first one counts

    def stop(why: str) -> None:
        reasons.append(why)
        server.should_exit = True

    recorder.on_done = stop
    previous = {sig: signal.signal(sig, _raise_signalled) for sig in (signal.SIGINT, signal.SIGTERM)}
    sock = None
    try:
        sock = bind(*address)
        bound_host, bound_port = sock.getsockname()[:2]
        shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        url = f"http://{shown_host}:{bound_port}"
        endpoints = {kind: url + path for path, kind in app_routes.items()}
        recorder.write({"event": "ready", "url": url, "endpoints": endpoints})
        if announce:
            announce(url, endpoints)

        async def run() -> None:
            loop = asyncio.get_running_loop()
            if timeout is not None:
                loop.call_later(timeout, stop, "timeout")
            await server.serve(sockets=[sock])

        asyncio.run(run())
        why = reasons[0] if reasons else "stopped"
        code = 124 if why == "timeout" and count is not None else 1 if recorder.rejected else 0
    except _Signalled as exc:
        code, why = exc.exit_code, "interrupted"
    except KeyboardInterrupt:
        code, why = 130, "interrupted"
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if sock is not None:
            sock.close()
        if journal_file is not None:
            journal_file.close()
    return Outcome(code, recorder.counted, recorder.rejected, why)


class InThread:
    """An ASGI app under uvicorn in a background thread on a loopback port (``opcli demo``, tests)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, **uvicorn_options: Any) -> None:
        import threading

        import uvicorn

        self.sock = bind(host, port)
        scheme = "https" if uvicorn_options.get("ssl_certfile") else "http"
        self.url = f"{scheme}://{host}:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", **uvicorn_options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> InThread:
        import time

        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
