"""Rendering: one place decides TTY, colour and which stream a thing goes to.

Data goes to stdout, everything else to stderr. Colour and tables only on a terminal, and
never when ``NO_COLOR`` is set. Everything goes through an ``Env``, so tests can give a
terminal of their own.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property
from typing import Any

from opcli.cli.common import Env
from opcli.jsonl import dumps


class Output:
    """The streams of one command run."""

    def __init__(self, env: Env, json_mode: bool = False) -> None:
        self.env = env
        self.json_mode = json_mode

    @property
    def tty(self) -> bool:
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
            force_terminal=color or None,
            emoji=False,
        )

    @cached_property
    def out(self) -> Any:
        return self._console(stderr=False)

    @cached_property
    def err(self) -> Any:
        return self._console(stderr=True)

    def write(self, text: str) -> None:
        """Raw text on stdout, flushed (keeps stdout and stderr in order when both go to one pipe)."""
        self.env.stdout.write(text)
        self.env.stdout.flush()

    def json(self, obj: Any) -> None:
        self.write(dumps(obj) + "\n")

    def line(self, text: str = "", style: str | None = None) -> None:
        """A line of data on stdout (rich markup is not interpreted)."""
        if self.tty and style:
            self.out.print(text, style=style, markup=False)
        else:
            self.write(text + "\n")

    def note(self, text: str, style: str | None = None) -> None:
        """A notice on stderr."""
        self.err.print(text, style=style, markup=False)

    def warn(self, text: str) -> None:
        self.note(f"warning: {text}", style="yellow")

    def error(self, text: str) -> None:
        for line in text.splitlines() or [""]:
            self.err.print(f"opcli: error: {line}", style="bold red", markup=False)

    def call(self, entry: dict[str, Any]) -> None:
        """One listener call as a compact block on stdout (one write when not a terminal)."""
        self.block(call_block(entry))

    def callback(self, entry: dict[str, Any]) -> None:
        """One call the listener made as the panel (``--operator``), indented under its trigger's block."""
        self.block(callback_block(entry))

    def block(self, block: list[tuple[str, str | None]]) -> None:
        if self.tty:
            for text, style in block:
                self.out.print(text, style=style, markup=False)
        else:
            self.write("".join(text + "\n" for text, _ in block))

    # --- what the commands show -------------------------------------------------------------

    def reply(self, reply: Any, what: str) -> None:
        """A send/reply result: the reply body with --json, a short confirmation otherwise."""
        if self.json_mode:
            self.json(reply.data if reply.is_json else None)
            return
        if reply.failure() is not None:
            return  # the caller reports it as the error
        data = reply.data.get("data") if isinstance(reply.data, dict) else None
        detail = f", message_id {data['message_id']}" if isinstance(data, dict) and "message_id" in data else ""
        self.line(f"{what}: HTTP {reply.status}{detail} ({reply.ms:.0f} ms)", style="green")
        if not reply.is_json and reply.body.strip():
            self.warn(f"the reply is {reply.describe_body()}")

    def request(self, request: Any) -> None:
        """What --dry-run shows: the request (token masked) and the same request as curl."""
        info = request.describe()
        if self.json_mode:
            self.json({**info, "curl": request.curl()})
            return
        self.line(f"POST {info['url']}  ({info['encoding']})")
        for name, value in info["fields"]:
            self.line(f"  {name} = {value}")
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
            self.json(data)
        elif isinstance(data, dict) and kind == "user_info":
            keys = ("id", "name", "gender", "avatar", "balance", "location", "about")
            rows = [(key, data[key]) for key in keys if key in data]
            custom = data.get("custom")
            for attr in custom if isinstance(custom, list) else []:
                if isinstance(attr, dict):
                    rows.append((f"custom: {attr.get('name')}", attr.get("value")))
            self.table(rows, title=f"User {data.get('id', '?')}")
        elif isinstance(data, dict):
            media = data.get("media") if isinstance(data.get("media"), list) else []
            self.line(f"{len(media)} media")
            for k, item in enumerate(media, 1):
                if isinstance(item, dict):
                    self.line(f"{k}. {item.get('url')}  (big: {item.get('big', '-')})")

    def findings(self, findings: Iterable[Any]) -> None:
        """Notices, warnings and violations of a contract check, on stderr."""
        styles = {"notice": "dim", "warning": "yellow", "violation": "bold red"}
        for f in findings:
            self.note(f"{f.level}: {f}", style=styles[f.level])

    def check_row(self, check: Any) -> None:
        mark, style = ("PASS", "green") if check.ok else ("FAIL", "bold red")
        self.line(f"{mark}  {check.name:<34} {check.ms:>7.0f} ms  {check.detail}", style=style)

    def replay_row(self, result: Any) -> None:
        """One replayed call: seq, kind, status, time, and same/different (or ok/failed, or why it was not sent)."""
        if result.error:
            verdict = f"error: {result.error}"
        elif result.same is not None:
            verdict = "same" if result.same else f"different: {result.diff}"
        elif result.ok:
            verdict = "ok"
        else:
            message = result.reply.get("message") if isinstance(result.reply, dict) else None
            verdict = f"failed: {message}" if isinstance(message, str) and message else "failed"
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
                table.add_row(key, str(value))
            self.out.print(table)
        else:
            self.write("".join(f"{line}\n" for line in ([title] if title else []) + [f"{k}: {v}" for k, v in rows]))


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def _who(entry: dict[str, Any]) -> str:
    fields = entry.get("fields") or {}
    user, contact = fields.get("user_id", "?"), fields.get("contact_id", "?")
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
    shown = "-" if status is None else status  # a fault that sent nothing
    head = f"{time} {mark:>2} {shown} {entry['kind']:<12} {_who(entry):<22} {entry['method']} {entry['path']}"
    head += f"  #{entry['seq']}"
    style = "bold red" if bad else "bold yellow" if fault else "bold green"
    lines: list[tuple[str, str | None]] = [(head.rstrip(), style)]
    fields = entry.get("fields") or {}
    if "message" in fields:
        lines.append((f"      message: {fields['message']!r}", None))
    for photo in entry.get("attaches") or []:
        lines.append((f"      photo: {photo.get('file_url')}  (big: {photo.get('big', '-')})", None))
    for f in entry.get("files") or []:
        saved = f"  saved as {f['saved_as']}" if f.get("saved_as") else ""
        lines.append((f"      file: {f['filename']!r} {_size(f['size'])} sha256 {f['sha256'][:16]}…{saved}", None))
    if entry.get("forwarded_to"):
        lines.append((f"      forwarded to {entry['forwarded_to']} ({entry['upstream_ms']:.0f} ms)", "dim"))
    for f in entry.get("findings") or []:
        where = f"{f['field']}: " if f["field"] else ""
        lines.append((f"      {f['level']}: {where}{f['text']}", "red" if f["level"] == "violation" else "yellow"))
    reply = entry.get("reply")
    if fault:
        lines.append((f"      fault: {fault}", "yellow"))
    elif bad and isinstance(reply, dict):
        lines.append((f"      rejected: {reply.get('message', '')}", "red"))
    elif summary := _replied(entry["kind"], reply):
        lines.append((f"      replied: {summary}", "dim"))
    return lines


def _replied(kind: str, reply: Any) -> str | None:
    """A reply in a few words: the profile's name, the number of media, the message id."""
    if not isinstance(reply, dict):
        return None
    if kind == "user_info":
        return f"{reply.get('name')!r}, balance {reply.get('balance')}"
    if kind == "user_media":
        return f"{len(reply.get('media') or [])} media"
    if isinstance(reply.get("data"), dict):
        return f"message_id {reply['data'].get('message_id')}"
    return None


def callback_block(entry: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The human view of one callback: a line under its trigger (``#seq``), findings, the error."""
    status = entry["status"] if entry["status"] is not None else "---"
    mark, style = ("ok", "green") if entry["ok"] else ("x", "bold red")
    head = f"      after #{entry['trigger']}: {mark} {status} {entry['kind']} {_who(entry)} POST {entry['url']}"
    lines: list[tuple[str, str | None]] = [(f"{head}  ({entry['ms']:.0f} ms)", style)]
    if entry["kind"] == "send_message":
        lines.append((f"           message: {entry['fields'].get('message')!r}", None))
    if entry["ok"] and (summary := _replied(entry["kind"], entry["reply"])):
        lines.append((f"           replied: {summary}", "dim"))
    styles = {"notice": "dim", "warning": "yellow", "violation": "red"}
    for f in entry["findings"]:
        if f["field"] or f["text"] != entry["error"]:  # a non-2xx reply's finding is the error itself
            where = f"{f['field']}: " if f["field"] else ""
            lines.append((f"           {f['level']}: {where}{f['text']}", styles.get(f["level"])))
    if entry["error"]:
        lines.append((f"           error: {entry['error']}", "red"))
    return lines
