"""``Call`` and ``Callback``: the journal's lines as dataclasses -- the one schema of a line.

``as_json()`` gives the line exactly as ``listen --json``, the ``--journal`` file, ``/_opcli/``
and the pytest plugin show it; ``line()`` the same as the journal file's bytes. The token is never
stored in either (the Journal masks it wherever a client put it). A journaled entry does not change.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from opcli import jsonl

_second: tuple[int, str] = (0, "")  # the last whole second formatted: every call made within it reuses it
_MILLIS = tuple(f".{n:03d}Z" for n in range(1000))  # a timestamp's end, made once (formatting it cost each call)


def now() -> str:
    """The journal's timestamp: UTC, milliseconds, ``Z`` (``2024-05-01T12:00:00.123Z``)."""
    global _second
    second, milli = divmod(time.time_ns() // 1_000_000, 1000)
    stamp = _second
    if second != stamp[0]:
        stamp = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return stamp[1] + _MILLIS[milli]


def ms_since(started: int) -> float:
    """Milliseconds, to two decimals, since ``started`` (a ``time.perf_counter_ns()``): a line's ``ms``."""
    return (time.perf_counter_ns() - started + 5000) // 10000 / 100


@dataclass(eq=False, slots=True)  # slots: made and read for every call the listener answers
class Call:
    """One request to the listener: what came (token aside), what it answered, and why.

    ``kind`` is ``message_sent``, ``send_message``, ``user_info``, ``user_media`` or ``unknown``
    (any other path or method). ``fields`` maps each non-file field but ``token`` and the
    ``attaches`` fields to its value, a list when repeated. ``seq`` is set by the Journal.
    """

    event: ClassVar[str] = "call"

    kind: str
    method: str
    path: str
    time: str = field(default_factory=now)
    seq: int | None = None
    content_type: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    attaches: list[dict[str, Any]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    token_ok: bool | None = None
    status: int | None = None
    reply: Any = None
    warnings: list[str] = field(default_factory=list)
    fault: str | None = None
    ms: float = 0.0
    # set only by the features that fill them: --save-dir (body), --forward (forwarded_to, upstream_ms,
    # findings), a replayed request (replay_of: the seq it replays), photos (the encoding they came in)
    body: dict[str, Any] | None = None
    forwarded_to: str | None = None
    upstream_ms: float | None = None
    findings: list[dict[str, Any]] | None = None
    replay_of: int | None = None
    attaches_encoding: str | None = None
    _line: bytes | None = field(default=None, init=False, repr=False)

    @property
    def counted(self) -> bool:
        """A call to one of the four endpoints (``--count`` counts these)."""
        return self.kind != "unknown"

    @property
    def rejected(self) -> bool:
        """Answered 400 or more by the listener itself (a fault's answer is not a rejection)."""
        return self.status is not None and self.status >= 400 and self.fault is None

    def field(self, name: str) -> Any:
        """A field's value as PHP reads it: the last one when the field was repeated."""
        value = self.fields.get(name)
        return value[-1] if isinstance(value, list) else value

    def line(self) -> bytes:
        """The journal line as the journal file holds it (compact JSON and a newline), made once."""
        if self._line is None:
            self._line = jsonl.line(self.as_json())
        return self._line

    def as_json(self) -> dict[str, Any]:
        """The journal line."""
        line = {
            "event": self.event,
            "seq": self.seq,
            "time": self.time,
            "kind": self.kind,
            "method": self.method,
            "path": self.path,
            "content_type": self.content_type,
            "fields": self.fields,
            "attaches": self.attaches,
            "files": self.files,
            "token_ok": self.token_ok,
            "status": self.status,
            "reply": self.reply,
            "warnings": self.warnings,
            "fault": self.fault,
            "ms": self.ms,
        }
        # the optional ones, when set (one by one: a loop of getattr() made this method half as slow again)
        if self.body is not None:
            line["body"] = self.body
        if self.forwarded_to is not None:
            line["forwarded_to"] = self.forwarded_to
        if self.upstream_ms is not None:
            line["upstream_ms"] = self.upstream_ms
        if self.findings is not None:
            line["findings"] = self.findings
        if self.replay_of is not None:
            line["replay_of"] = self.replay_of
        if self.attaches_encoding is not None:
            line["attaches_encoding"] = self.attaches_encoding
        return line


@dataclass(eq=False)
class Callback:
    """One call the listener made as the panel (``--operator``), journaled when it ended.

    ``trigger`` is the seq of the ``message_sent`` call that caused it; ``ok`` is false for a
    non-2xx reply, an envelope ``"status": 0``, a contract violation, a timeout or an
    unreachable site, and ``error`` then says which in one line.
    """

    event: ClassVar[str] = "callback"

    trigger: int
    kind: str
    url: str
    fields: dict[str, Any] = field(default_factory=dict)
    time: str = field(default_factory=now)
    seq: int | None = None
    status: int | None = None
    ms: float = 0.0
    reply: Any = None
    findings: list[dict[str, Any]] = field(default_factory=list)
    ok: bool = False
    error: str | None = None
    _line: bytes | None = field(default=None, init=False, repr=False)

    counted: ClassVar[bool] = False

    line = Call.line

    @property
    def rejected(self) -> bool:
        return not self.ok

    def as_json(self) -> dict[str, Any]:
        """The journal line."""
        return {
            "event": self.event,
            "seq": self.seq,
            "time": self.time,
            "trigger": self.trigger,
            "kind": self.kind,
            "url": self.url,
            "fields": self.fields,
            "status": self.status,
            "ms": self.ms,
            "reply": self.reply,
            "findings": self.findings,
            "ok": self.ok,
            "error": self.error,
        }


@dataclass(eq=False)
class Ready:
    """The first line: where the listener serves, written once the socket accepts connections."""

    event: ClassVar[str] = "ready"

    url: str
    endpoints: dict[str, str]
    inspector: str | None = None

    def line(self) -> bytes:
        return jsonl.line(self.as_json())

    def as_json(self) -> dict[str, Any]:
        line: dict[str, Any] = {"event": self.event, "url": self.url, "endpoints": self.endpoints}
        if self.inspector:
            line["inspector"] = self.inspector
        return line
