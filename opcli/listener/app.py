"""The listener's ASGI app: one answer per kind, and one path through which every call is journaled.

``Listener.__call__`` is that path: it reads and parses the body, checks the token (constant
time) and the fields -- in the order parse -> token -> fields -- asks the kind's answer, writes
the journal line, and only then sends the reply, so an answered call is always journaled.
Once the body is parsed, a fault rule (``faults.py``) may answer instead, or send nothing.
Errors are JSON envelopes, never raised. Prefixes in ``mounts`` (the inspector's ``/_opcli/``)
are served by their own apps and never journaled. An answer is JSON, or a ``Raw`` reply passed on
as it came (``--forward``).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from opcli import __version__, jsonl
from opcli.config import Config, Site
from opcli.errors import ConfigError
from opcli.listener.call import Call, ms_since
from opcli.listener.canned import Canned
from opcli.listener.faults import Faults, respond
from opcli.listener.forms import Body, ClientGone, Rejected, media_type, read_form
from opcli.listener.http import ANSWER, EXTENSION, Rules
from opcli.listener.inspector import PREFIX as INSPECTOR
from opcli.listener.inspector import Inspector
from opcli.listener.journal import Journal, JournalError
from opcli.protocol import (
    ACTION_MESSAGE_SENT,
    FILE_FIELD,
    ID_FIELDS,
    KINDS,
    KNOWN_FIELDS,
    REPLAY_HEADER,
    Memo,
    decode_attaches,
    hide_secrets,
    is_url,
    parse_id,
)

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
Answer = tuple[int, Any]
_TOKEN_LIKE = re.compile(r"[\s\[\]]")
_REPLAY_HEADER = REPLAY_HEADER.lower().encode()


def _token_like(name: str) -> bool:
    """A field named like ``token`` (``Token``, ``token[]``, ``token `` with a space)."""
    return _TOKEN_LIKE.sub("", name).lower() == "token"


_TOKEN_LIKE_NAMES = Memo(_token_like, 1024)  # the same few names come with every call


@dataclass(frozen=True)
class Raw:
    """A reply sent as it is (``--forward``): its bytes and content type, and what the journal shows of it."""

    body: bytes
    content_type: bytes | None
    shown: Any


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


class Listener:
    """One listener: the site it stands in for, its canned data, its journal; the ASGI app itself."""

    def __init__(
        self,
        config: Config,
        *,
        journal: Journal | None = None,
        save_dir: Path | None = None,
        strict: bool | None = None,
        faults: Sequence[str] = (),
        seed: int | None = None,
        forward: Site | None = None,
    ) -> None:
        self.site = config.site
        self.settings = config.listen
        self.routes = routes_of(self.site)
        self.token = self.site.token.encode("utf-8")
        self.token_sha256 = hashlib.sha256(self.token).hexdigest()
        self.journal = journal if journal is not None else Journal(self.settings.keep)
        self.journal.hide(self.site.token, forward.token if forward is not None else None)
        self.canned = Canned(self.settings)
        self.save_dir = save_dir
        self.strict = self.settings.strict if strict is None else strict
        timeouts = self.settings.timeouts
        self.connection_rules = Rules(timeouts.idle, timeouts.headers, timeouts.body)  # for the HTTP protocol
        self.accepting = True  # false once --count is reached: later calls get 503 while it stops
        # --fault rules first, then the config's; ValueError for a bad one
        self.faults = Faults([*faults, *self.settings.faults], self.settings.seed if seed is None else seed)
        self.mounts: dict[str, ASGIApp] = {}
        # told after each call's reply went out: the operator loop starts there
        self.answered: list[Callable[[Call], None]] = []
        # what a reply waits for once its call is journaled (the runner's: stdout has shown the line), or None
        self.before_reply: Callable[[], Awaitable[None] | None] | None = None
        self.mounts[INSPECTOR] = Inspector(self)
        self.message_ids = itertools.count(1001)
        self.answers: dict[str, Callable[[Call, dict[str, int]], Answer]] = {
            "message_sent": self.message,
            "send_message": self.message,
            "user_info": self.user_info,
            "user_media": self.user_media,
        }
        self.forward = None  # --forward: sends each checked call on to another site instead of answering it
        if forward is not None:
            from opcli.listener.forward import Forwarder

            self.forward = Forwarder(forward, self.routes.values())

    # --- the one path of every call ---------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        for prefix, app in self.mounts.items():
            if path.startswith(prefix):
                await app(scope, receive, send)
                return
        started = time.perf_counter_ns()
        method = scope["method"]
        kind = self.routes.get(path) if method == "POST" else None
        call = Call(kind or "unknown", method, path)  # (by position: by keyword cost 0.25 µs more)
        sent = dict(reversed(scope["headers"]))  # the request's headers: the first of each name
        replayed = sent.get(_REPLAY_HEADER)
        if replayed is not None and replayed.isdigit():
            call.replay_of = int(replayed)
        headers: list[tuple[bytes, bytes]] = []
        try:
            if kind is None:
                status, reply, content_type = self.elsewhere(call, sent, headers)
            else:
                answer = await self.endpoint(call, kind, scope, sent, receive)
                (status, reply), content_type = answer, b"application/json"
        except Rejected as exc:  # (a message may quote what the client sent: the token too)
            status, reply, content_type = exc.status, self.error(exc.message), b"application/json"
        except ClientGone:
            status, reply = 400, self.error("the client disconnected before the body ended")
            content_type = b"application/json"
        except Exception as exc:  # a bug must not stop the listener: answer 500 and journal it
            status, reply = 500, self.error(f"listener error: {type(exc).__name__}: {exc}")
            content_type = b"application/json"
        raw = reply if isinstance(reply, Raw) else None
        if raw is not None:
            reply, content_type = raw.shown, raw.content_type
        call.status, call.reply = status, reply
        call.ms = ms_since(started)
        extensions = scope.get("extensions") or {}
        connection = extensions.get(EXTENSION)
        if connection is not None and call.fault is None:  # (a fault's hang or dribble ends when the client goes)
            connection.answering = True  # a half-close from now on waits for the answer
        if connection is not None and connection.lost.is_set() and status is not None:
            # the client gave up first (its timeout, during a delay or a slow upstream): nothing goes out
            why = f": {reply['message']}" if status >= 400 and isinstance(reply, dict) and reply.get("message") else ""
            call.status, call.reply = None, None
            call.warnings.append(f"the client closed the connection before the reply ({status}{why}) was sent")
        if raw is not None:
            body = raw.body
        else:
            body = reply.encode("utf-8") if isinstance(reply, str) else jsonl.compact(reply)
        try:
            self.journal.record(call)
        except JournalError as exc:
            self.accepting = False
            status, body = 503, jsonl.compact({"status": 0, "message": str(exc)})
            content_type = b"application/json"
            self.on_journal_error(exc)
        if self.before_reply is not None and (shown := self.before_reply()) is not None:
            await shown
        if call.fault is not None:
            await respond(call.fault, scope, send, status, body)
            return
        answer = extensions.get(ANSWER)
        if answer is not None:  # opcli's own server: the whole reply in one step
            await answer(status, content_type, headers, body)
        else:
            start = [(b"content-type", content_type)] if content_type else []
            start += [(b"content-length", b"%d" % len(body)), *headers]
            await send({"type": "http.response.start", "status": status, "headers": start})
            await send({"type": "http.response.body", "body": body})
        if self.answered:
            for hook in list(self.answered):
                hook(call)

    def error(self, message: str) -> dict[str, Any]:
        """The envelope of a 4xx or 5xx answer; the secrets masked in its message, as in the journal."""
        return {"status": 0, "message": hide_secrets(message, self.journal.secrets)}

    def bad_request(self, method: str, path: str, status: int, reply: dict[str, Any]) -> bytes:
        """A request the HTTP layer refused (malformed, too large, too slow): journaled, as JSON.

        Called by the protocol (``opcli.listener.http``), which sends the returned body itself.
        """
        kind = self.routes.get(path) if method == "POST" else None  # a broken call to an endpoint counts
        reply = self.error(reply["message"])
        call = Call(kind=kind or "unknown", method=method, path=path, status=status, reply=reply)
        try:
            self.journal.record(call)
        except JournalError as exc:
            self.on_journal_error(exc)
        return jsonl.compact(reply)

    def shutting_down(self) -> None:
        """Told as the server begins to stop: the mounted apps end their open streams and waits."""
        for app in self.mounts.values():
            close = getattr(app, "close", None)
            if close is not None:
                close()

    def on_journal_error(self, error: JournalError) -> None:
        """Told when the journal file failed; the runner replaces this to stop the listener."""

    async def endpoint(
        self, call: Call, kind: str, scope: dict[str, Any], sent: dict[bytes, bytes], receive: Any
    ) -> Answer:
        """A POST to one of the four endpoints: parse, token, fields, then the kind's answer."""
        if not self.accepting:
            raise Rejected(503, "the listener is stopping and takes no more calls")
        content_type = sent.get(b"content-type", b"").decode("latin-1")
        call.content_type = media_type(content_type)
        body = Body(self.save_dir, keep_raw=self.forward is not None, secrets=self.journal.secrets)
        settings = self.settings
        try:
            parameters = content_type.partition(";")[2]
            if body.keep_raw and hide_secrets(parameters, self.journal.secrets) != parameters:
                # (a boundary or a charset holding the token: the raw body cannot go anywhere without it)
                if self.forward is not None:
                    raise Rejected(400, "the Content-Type holds the token: the call cannot be forwarded without it")
                body.keep_raw = False
                call.warnings.append("the Content-Type holds the token: the body is not saved")
            await read_form(
                content_type,
                sent.get(b"content-length", b"").decode("latin-1"),
                receive,
                scope.get("extensions", {}).get(EXTENSION),
                settings.max_body_bytes,
                settings.max_field_bytes,
                body,
            )
            bad_attaches = self.fill(call, kind, body)
            refusal = self.check_token(call, body)  # token_ok is journaled for a faulted call too
            # a fault rule's answer (after its delay), or None
            answer = await self.faults.apply(call, scope) if self.faults else None
            if answer is None and self.forward is not None:
                answer = self.forward.looped(kind, scope)
            if answer is None:
                if refusal is not None:
                    raise refusal
                ids = self.check_fields(call, kind, bad_attaches)
                if self.forward is not None:
                    answer = await self.forward(call, kind, ids, body.raw, scope)
                else:
                    answer = self.answers[kind](call, ids)
            return answer
        except BaseException:
            body.discard_files()
            raise
        finally:
            if body.uploads or body.raw is not None:  # (text fields alone leave nothing to do here)
                call.warnings += body.withhold_secrets()
                call.files = self.shown_files(body)
                call.body = body.close_raw(content_type)  # kept for rejected calls too: replay reproduces them

    def elsewhere(self, call: Call, sent: dict[bytes, bytes], headers: list) -> tuple[int, Any, bytes]:
        """Anything but a POST to an endpoint: the health check at ``/``, else 404 or 405."""
        path, method = call.path, call.method
        if path == "/" and method in ("GET", "HEAD"):
            info = {
                "opcli": __version__,
                "site": self.site.name,
                "endpoints": {kind: path for path, kind in self.routes.items()},
                "inspector": INSPECTOR,
            }
            if b"text/html" in sent.get(b"accept", b""):
                rows = "".join(f"<li><code>POST {p}</code> &mdash; {k}</li>" for p, k in self.routes.items())
                page = (
                    "<!doctype html><meta charset=utf-8><title>opcli listen</title><h1>opcli listen</h1>"
                    f"<p>site <b>{self.site.name}</b></p><ul>{rows}</ul>"
                    f'<p><a href="{INSPECTOR}">Open the inspector</a>: every call, live</p>'
                )
                return 200, page, b"text/html; charset=utf-8"
            return 200, info, b"application/json"
        if path in self.routes:
            headers.append((b"allow", b"POST"))
            raise Rejected(405, f"{method} is not allowed on {path}: the Operator API uses POST")
        raise Rejected(404, f"no endpoint at {path}; endpoints: {', '.join(self.routes)}")

    # --- parse -> token -> fields -------------------------------------------------------------

    def fill(self, call: Call, kind: str, body: Body) -> str | None:
        """Put what came into the journal line: fields (token masked wherever it hides), photos.

        Returns why ``attaches`` could not be read, if it could not.
        """
        try:
            photos, fields, encoding = decode_attaches(body.fields)
        except ValueError as exc:
            call.fields = self.shown_fields([(k, v) for k, v in body.fields if not k.startswith("attaches")])
            return str(exc)
        call.fields = self.shown_fields(fields)
        call.attaches_encoding = encoding  # replay re-encodes the photos as they came
        if kind == "message_sent":
            call.attaches = photos
        elif photos:
            call.warnings.append(f"attaches is not a field of {kind}")
        return None

    def shown_fields(self, fields: list[tuple[str, str]]) -> dict[str, Any]:
        """Fields as journaled: no ``token``, a near-miss name's value (``Token``, ``token[]``) masked.

        (The journal masks the token's value wherever else it shows.)
        """
        shown: dict[str, Any] = {}
        for name, value in fields:
            if name == "token":
                continue
            if _TOKEN_LIKE_NAMES[name]:
                value = "***"
            if name in shown:
                if isinstance(shown[name], list):
                    shown[name].append(value)
                else:
                    shown[name] = [shown[name], value]
            else:
                shown[name] = value
        return shown

    def shown_files(self, body: Body) -> list[dict[str, Any]]:
        """Uploads as journaled; a file holding just the token does not get its sha256 shown."""
        files = [upload.entry() for upload in body.uploads]
        for entry in files:
            if entry["sha256"] == self.token_sha256:
                entry["sha256"] = "***"
        return files

    def check_token(self, call: Call, body: Body) -> Rejected | None:
        """The token as PHP reads it (the last ``token`` field), compared in constant time: the 401 if wrong."""
        token = None
        for name, value in body.fields:
            if name == "token":
                token = value  # the last one, as PHP reads it
        call.token_ok = token is not None and hmac.compare_digest(token.encode("utf-8"), self.token)
        if not call.token_ok:
            return Rejected(401, "missing token" if token is None else "invalid token")
        for upload in body.uploads:
            if upload.field != FILE_FIELD:
                call.warnings.append(f"file part '{upload.field}' is not named '{FILE_FIELD}'")
        return None

    def check_fields(self, call: Call, kind: str, bad_attaches: str | None) -> dict[str, int]:
        """422 for what the panel cannot use; warnings (``--strict``: 422) for what it would ignore."""
        if kind == "message_sent":
            if call.field("action") != ACTION_MESSAGE_SENT:
                raise Rejected(422, f"action must be {ACTION_MESSAGE_SENT}, got {jsonl.dumps(call.field('action'))}")
            if bad_attaches:
                raise Rejected(422, bad_attaches)
            for k, photo in enumerate(call.attaches):
                file_url = photo.get("file_url")
                if not isinstance(file_url, str) or not file_url:
                    raise Rejected(422, f"attaches[{k}] has no file_url")
                if not is_url(file_url):
                    call.warnings.append(f"attaches[{k}][file_url] is not an http(s) URL")
                if "big" not in photo:
                    call.warnings.append(f"attaches[{k}] has no big (thumbnail)")
                elif not is_url(photo["big"]):
                    call.warnings.append(f"attaches[{k}][big] is not an http(s) URL")
        elif bad_attaches:
            call.warnings.append(f"attaches is not a field of {kind}")
        ids = {}
        for name in ID_FIELDS[kind]:
            value = call.field(name)
            if value is None:
                raise Rejected(422, f"{name} is missing")
            try:
                ids[name] = parse_id(value, name)
            except ValueError as exc:
                raise Rejected(422, str(exc)) from None
        if not call.fields.keys() <= KNOWN_FIELDS[kind]:
            unknown = [name for name in call.fields if name not in KNOWN_FIELDS[kind]]
            call.warnings.append(f"unknown field{'s' * (len(unknown) > 1)}: {', '.join(unknown)}")
        if kind in ("message_sent", "send_message") and "message" not in call.fields:
            call.warnings.append("message is missing")
        if self.strict and call.warnings:
            raise Rejected(422, f"--strict: {'; '.join(call.warnings)}")
        return ids

    # --- the answers, one per kind ------------------------------------------------------------

    def message(self, call: Call, ids: dict[str, int]) -> Answer:
        """``message_sent`` and ``send_message``: the deployed panel's envelope with a new message id."""
        return 200, {"status": 1, "message": "", "data": {"message_id": next(self.message_ids)}}

    def user_info(self, call: Call, ids: dict[str, int]) -> Answer:
        user = ids["user_id"]
        profile = self.canned.user_info(user)
        if profile is None:
            return 404, {"status": 0, "message": f"no user {user}"}
        return 200, profile

    def user_media(self, call: Call, ids: dict[str, int]) -> Answer:
        return 200, {"media": self.canned.user_media(ids["user_id"])}


def create_app(
    config: Config,
    *,
    journal: Journal | None = None,
    save_dir: Path | None = None,
    strict: bool | None = None,
    forward: Site | None = None,
) -> Listener:
    """The listener's ASGI app for ``config``'s site; its Journal is ``app.journal``.

    ``forward`` sends each checked call on to that site instead of answering it (``--forward``).
    """
    return Listener(config, journal=journal, save_dir=save_dir, strict=strict, forward=forward)
