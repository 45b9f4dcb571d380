"""Rendering: one place decides TTY, colour and which stream a thing goes to.

Data goes to stdout, everything else to stderr. Colour and tables only on a terminal, and
never when ``NO_COLOR`` is set. Everything goes through an ``Env``, so tests can give a
terminal of their own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cached_property
from typing import Any

from opcli import jsonl
from opcli.cli.common import Env
from opcli.jsonl import dumps

# Control characters received from the other side must not reach the terminal as such (an ESC
# could forge an "ok 200" line): C0 (newline too, in a one-line item), DEL, C1 and the bidi
# overrides become escapes.
_CONTROLS = [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
_ESCAPES = {c: _NAMED.get(c, f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _CONTROLS}
_ESCAPES_KEEP_NEWLINE = {c: e for c, e in _ESCAPES.items() if c != 0x0A}
# in JSON, the characters json.dumps leaves raw (DEL, C1, bidi) become \u escapes: still the same JSON
_JSON_ESCAPES = {c: f"\\u{c:04x}" for c in _CONTROLS if c >= 0x7F}
# a search finds them much faster than translate() copies a text that has none (the listener's every line)
_ANY_CONTROL = re.compile("[" + "".join(re.escape(chr(c)) for c in _CONTROLS) + "]")


def printable(text: str, keep_newlines: bool = False) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``, ``\\n``)."""
    if not _ANY_CONTROL.search(text):
        return text
    return text.translate(_ESCAPES_KEEP_NEWLINE if keep_newlines else _ESCAPES)


class Output:
    """The streams of one command run; every text passes ``clean``: token redacted, controls escaped.

    ``secrets`` holds the token values to redact (the run's State adds the config's token when it
    loads it, so an Output made before the config still redacts it).
    """

    def __init__(self, env: Env, json_mode: bool = False, secrets: set[str] | None = None) -> None:
        self.env = env
        self.json_mode = json_mode
        self.secrets = secrets if secrets is not None else set()
        self.autoflush = True

    @cached_property
    def tty(self) -> bool:  # asked for every call the listener shows: isatty() is a system call
        return self.env.stdout_tty

    def _console(self, stderr: bool) -> Any:
        from rich.console import Console

        stream = self.env.stderr if stderr else self.env.stdout
        color = self.env.color(stream)
        return Console(
            file=stream,
            highlight=False,
            soft_wrap=True,
            no_color=not color,
            color_system="auto" if color else None,  # NO_COLOR: no bold or dim either, not only no colours
            force_terminal=color or None,
            emoji=False,
        )

    @cached_property
    def out(self) -> Any:
        return self._console(stderr=False)

    @cached_property
    def err(self) -> Any:
        return self._console(stderr=True)

    def redact(self, text: str) -> str:
        """``text`` with the run's token values and any URL password masked (also for files opcli writes)."""
        from opcli.protocol import redact

        return redact(text, self.secrets)

    def clean(self, text: str, keep_newlines: bool = False) -> str:
        """What may reach a terminal or a pipe: redacted, control characters escaped."""
        return printable(self.redact(text), keep_newlines)

    def write(self, text: str) -> None:
        """Raw text on stdout, flushed (keeps stdout and stderr in order when both go to one pipe).

        With ``autoflush`` off, whoever turned it off calls ``flush()`` (the listener's stdout
        thread does, after each batch of lines).
        """
        self.env.stdout.write(text)
        if self.autoflush:
            self.env.stdout.flush()

    def flush(self) -> None:
        self.env.stdout.flush()

    def _json_text(self, obj: Any, indent: int | None = None) -> str:
        # one line: the same bytes as the listener's journal (jsonl.line); indented: for a person
        text = jsonl.compact(obj).decode("utf-8") if indent is None else dumps(obj, indent)
        return self.redact(text).translate(_JSON_ESCAPES)

    def json(self, obj: Any) -> None:
        """One JSON document on one line: the JSON Lines streams (``listen``, ``send --batch``) write these."""
        self.write(self._json_text(obj) + "\n")

    def document(self, obj: Any) -> None:
        """A command's one JSON document: indented and coloured on a terminal, one compact line otherwise."""
        if not self.tty:
            self.json(obj)
            return
        from rich.highlighter import JSONHighlighter
        from rich.text import Text

        self.out.print(JSONHighlighter()(Text(self._json_text(obj, indent=2))))

    def line(self, text: str = "", style: str | None = None) -> None:
        """A line (or lines) of data on stdout; rich markup is not interpreted.

        Received values in it go through ``shown`` first, which escapes their newlines too.
        """
        text = self.clean(text, keep_newlines=True)
        if self.tty and style:
            self.out.print(text, style=style, markup=False)
        else:
            self.write(text + "\n")

    def note(self, text: str, style: str | None = None) -> None:
        """A notice on stderr."""
        self.err.print(self.clean(text, keep_newlines=True), style=style, markup=False)

    def warn(self, text: str) -> None:
        """One warning line on stderr (a newline in it is escaped)."""
        self.err.print(self.clean(f"warning: {text}"), style="yellow", markup=False)

    def error(self, text: str) -> None:
        for line in text.splitlines() or [""]:
            self.err.print(f"opcli: error: {self.clean(line)}", style="bold red", markup=False)

    def verbose(self, line: str) -> None:
        """A ``-v`` line on stderr, dim; a JSON body is indented and coloured when stderr is a terminal."""
        body = line[2:] if line.startswith("< ") and line[2:3] in ("{", "[") else None
        if body is not None and self.env.stderr_tty:
            import json

            try:
                data = json.loads(body)
            except (ValueError, RecursionError):
                pass
            else:
                from rich.highlighter import JSONHighlighter
                from rich.text import Text

                pretty = self._json_text(data, indent=2)
                self.err.print(JSONHighlighter()(Text("".join(f"< {row}\n" for row in pretty.splitlines())[:-1])))
                return
        self.err.print(self.clean(line), markup=False, style="dim")

    def call(self, entry: dict[str, Any]) -> None:
        """One listener call as a compact block on stdout (one write when not a terminal)."""
        self.block(call_block(entry))

    def callback(self, entry: dict[str, Any]) -> None:
        """One call the listener made as the panel (``--operator``), indented under its trigger's block."""
        self.block(callback_block(entry))

    def block(self, block: list[tuple[str, str | None]]) -> None:
        """Lines of received data: redacted and escaped, styled on a terminal, one write otherwise."""
        whole = "\n".join(text for text, _ in block)
        if self.redact(whole) == whole:  # nothing to hide in any line (the usual case): escape only
            block = [(printable(text), style) for text, style in block]
        else:
            block = [(self.clean(text), style) for text, style in block]
        if self.tty:
            for text, style in block:
                self.out.print(text, style=style, markup=False)
        else:
            self.write("".join(text + "\n" for text, _ in block))

    # --- what the commands show -------------------------------------------------------------

    def reply(self, reply: Any, what: str) -> None:
        """A send/reply result: the reply body with --json, a short confirmation otherwise."""
        if not reply.is_json and reply.body.strip():  # in every mode: stdout keeps exactly the body (null)
            self.warn(f"the reply is {reply.describe_body()}")
        if self.json_mode:
            self.document(reply.data if reply.is_json else None)
            return
        if reply.failure() is not None:
            return  # the caller reports it as the error
        data = reply.data.get("data") if isinstance(reply.data, dict) else None
        detail = f", message_id {shown(data['message_id'])}" if isinstance(data, dict) and "message_id" in data else ""
        self.line(f"{what}: HTTP {reply.status}{detail} ({reply.ms:.0f} ms)", style="green")

    def request(self, request: Any) -> None:
        """What --dry-run shows: the request (token masked) and the same request as curl."""
        info = request.describe()
        if self.json_mode:
            self.document({**info, "curl": request.curl()})
            return
        self.line(f"POST {info['url']}  ({info['encoding']})")
        for name, value in info["fields"]:
            self.line(f"  {name} = {shown(value)}")
        if info["file"]:
            f = info["file"]
            self.line(f"  {f['field']} = @{f['path']} ({f['size']} bytes, {f['content_type']})")
        self.line("")
        self.line("# the same with curl (set OPCLI_TOKEN to the site's token):")
        self.line(request.curl())
        self.note("dry run: nothing was sent")

    def webhook_reply(self, kind: str, data: Any) -> None:
        """A user-info reply as a table, a user-media reply as a list; the object itself with --json."""
        if self.json_mode:
            self.document(data)
        elif isinstance(data, dict) and kind == "user_info":
            keys = ("id", "name", "gender", "avatar", "balance", "location", "about")
            rows = [(key, data[key]) for key in keys if key in data]
            custom = data.get("custom")
            for attr in custom if isinstance(custom, list) else []:
                if isinstance(attr, dict):
                    rows.append((f"custom: {shown(attr.get('name'))}", attr.get("value")))
            self.table(rows, title=f"User {shown(data.get('id', '-'))}")
        elif isinstance(data, dict):
            media = data.get("media") if isinstance(data.get("media"), list) else []
            self.line(f"{len(media)} media")
            for k, item in enumerate(media, 1):
                if isinstance(item, dict):
                    self.line(f"{k}. {shown(item.get('url', '-'))}  (big: {shown(item.get('big', '-'))})")

    def findings(self, findings: Iterable[Any]) -> None:
        """Notices, warnings and violations of a contract check, on stderr."""
        styles = {"notice": "dim", "warning": "yellow", "violation": "bold red"}
        for f in findings:
            self.note(shown(f"{f.level}: {f}"), style=styles[f.level])

    def check_row(self, check: Any, every_problem: bool = False) -> None:
        """One check as a row; a check with several violations shows the first and how many more.

        A detail of several lines (``check --fuzz``'s smallest inputs) follows the row, a line each;
        control characters inside a line (a newline in a received value too) are escaped.
        """
        mark, style = ("PASS", "green") if check.ok else ("FAIL", "bold red")
        head, *rest = check.lines or [check.detail]
        if len(check.problems) > 1 and not every_problem:
            head = f"{check.problems[0]} (+{len(check.problems) - 1} more; -v or --json shows all)"
        row = f"{mark}  {check.name:<34} {check.ms:>7.0f} ms  {head}"
        self.block([(row, style), *((text, None) for text in rest)])

    def replay_row(self, result: Any) -> None:
        """One replayed call: seq, kind, status, time, and same/different (or ok/failed, or why it was not sent)."""
        if result.error:
            verdict = f"error: {shown(result.error)}"
        elif result.same is not None:
            verdict = "same" if result.same else f"different: {shown(result.diff)}"
        elif result.ok:
            verdict = "ok" + (f" (not compared: {result.not_compared})" if result.not_compared else "")
        else:  # what the site said, a newline escaped like any control character: it cannot forge a row
            message = result.reply.get("message") if isinstance(result.reply, dict) else None
            verdict = f"failed: {shown(message)}" if isinstance(message, str) and message else "failed"
        status = "-" if result.status is None else result.status
        text = f"#{result.seq:<5} {result.kind:<13} {status:>3} {result.ms:>7.0f} ms  {verdict}"
        self.line(text, style="green" if result.ok else "bold red")

    def table(self, rows: Iterable[tuple[str, Any]], title: str | None = None) -> None:
        """Key/value rows: a rich table on a terminal, ``key: value`` lines otherwise."""
        rows = list(rows)
        if self.tty:
            from rich.table import Table

            table = Table(title=title, show_header=False, title_justify="left", box=None, padding=(0, 2, 0, 0))
            table.add_column(style="bold cyan", no_wrap=True)
            table.add_column(overflow="fold")
            for key, value in rows:
                table.add_row(self.clean(key), self.clean(shown(value)))
            self.out.print(table)
        else:
            lines = ([title] if title else []) + [f"{k}: {shown(v)}" for k, v in rows]
            self.write("".join(f"{self.clean(line)}\n" for line in lines))


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def shown(value: Any) -> str:
    """A received value in human output: a string as it is, anything else as JSON (``null``, never ``None``).

    Control characters, newlines too, are escaped: a value cannot start a line of its own.
    """
    return printable(value if isinstance(value, str) else dumps(value))


def _last(value: Any) -> Any:
    """A field's value as PHP reads it: the last one when it was repeated."""
    return value[-1] if isinstance(value, list) and value else value


def _who(entry: dict[str, Any]) -> str:
    fields = entry.get("fields") or {}
    user, contact = shown(_last(fields.get("user_id", "?"))), shown(_last(fields.get("contact_id", "?")))
    kind = entry["kind"]
    if kind == "message_sent":
        return f"user {user} -> bot {contact}"
    if kind == "send_message":
        return f"bot {user} -> user {contact}"
    if kind in ("user_info", "user_media"):
        return f"user {user}"
    return ""


def call_block(entry: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The human view of one listener call: ``(line, style)`` pairs, the first one the summary."""
    status, fault = entry["status"], entry.get("fault")
    bad = status is not None and status >= 400 and not fault  # a fault's answer is not a rejection
    mark = "x" if bad else "!" if fault else "ok"
    time = entry["time"][11:19]
    sent = "-" if status is None else status  # a fault that sent nothing
    head = f"{time} {mark:>2} {sent} {entry['kind']:<12} {_who(entry):<22} {entry['method']} {entry['path']}"
    head += f"  #{entry['seq']}"
    health = entry["kind"] == "unknown" and entry["path"] == "/" and entry["method"] in ("GET", "HEAD") and not bad
    style = "bold red" if bad else "bold yellow" if fault else "dim" if health else "bold green"
    lines: list[tuple[str, str | None]] = [(head.rstrip(), style)]
    fields = entry.get("fields") or {}
    if "message" in fields:
        lines.append((f"      message: {dumps(fields['message'])}", None))
    for photo in entry.get("attaches") or []:
        lines.append((f"      photo: {shown(photo.get('file_url', '-'))}  (big: {shown(photo.get('big', '-'))})", None))
    for f in entry.get("files") or []:
        saved = f"  saved as {f['saved_as']}" if f.get("saved_as") else ""
        lines.append((f"      file: {dumps(f['filename'])} {_size(f['size'])} sha256 {f['sha256'][:16]}…{saved}", None))
    if entry.get("forwarded_to"):
        lines.append((f"      forwarded to {entry['forwarded_to']} ({entry['upstream_ms']:.0f} ms)", "dim"))
    for f in entry.get("findings") or []:
        where = f"{shown(f['field'])}: " if f["field"] else ""
        lines.append(
            (f"      {f['level']}: {where}{shown(f['text'])}", "red" if f["level"] == "violation" else "yellow")
        )
    for warning in entry.get("warnings") or []:
        lines.append((f"      warning: {shown(warning)}", "yellow"))
    reply = entry.get("reply")
    if fault:
        lines.append((f"      fault: {shown(fault)}", "yellow"))
    elif bad and isinstance(reply, dict):
        lines.append((f"      rejected: {shown(reply.get('message', ''))}", "red"))
    elif summary := _replied(entry["kind"], reply):
        lines.append((f"      replied: {summary}", "dim"))
    return lines


def _replied(kind: str, reply: Any) -> str | None:
    """A reply in a few words: the profile's name, the number of media, the message id."""
    if not isinstance(reply, dict):
        return None
    if kind == "user_info":
        return f"{dumps(reply.get('name'))}, balance {shown(reply.get('balance', '-'))}"
    if kind == "user_media":
        return f"{len(reply.get('media') or [])} media"
    if isinstance(reply.get("data"), dict):
        return f"message_id {shown(reply['data'].get('message_id', '-'))}"
    return None


def callback_block(entry: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The human view of one callback: a line under its trigger (``#seq``), findings, the error."""
    status = entry["status"] if entry["status"] is not None else "---"
    mark, style = ("ok", "green") if entry["ok"] else ("x", "bold red")
    head = f"      after #{entry['trigger']}: {mark} {status} {entry['kind']} {_who(entry)} POST {entry['url']}"
    lines: list[tuple[str, str | None]] = [(f"{head}  ({entry['ms']:.0f} ms)", style)]
    if entry["kind"] == "send_message":
        lines.append((f"           message: {dumps(entry['fields'].get('message'))}", None))
    if entry["ok"] and (summary := _replied(entry["kind"], entry["reply"])):
        lines.append((f"           replied: {summary}", "dim"))
    styles = {"notice": "dim", "warning": "yellow", "violation": "red"}
    for f in entry["findings"]:
        if f["field"] or f["text"] != entry["error"]:  # a non-2xx reply's finding is the error itself
            where = f"{shown(f['field'])}: " if f["field"] else ""
            lines.append((f"           {f['level']}: {where}{shown(f['text'])}", styles.get(f["level"])))
    if entry["error"]:
        lines.append((f"           error: {shown(entry['error'])}", "red"))
    return lines
