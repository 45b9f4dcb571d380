"""The Journal: numbers every call and callback, keeps the recent ones, hands each to its subscribers.

Subscribers are the journal file, stdout (JSON Lines or the human view), the run's counters and,
when asked, waiters, the inspector's event streams and the operator loop. ``record`` runs on
the listener's event loop, before the call's reply is sent; ``wait_for`` may be called from any
thread (the pytest plugin's test thread).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Union

from opcli.errors import UsageError
from opcli.listener.call import Call, Callback, Ready
from opcli.protocol import hide_secrets_in, holds_secret

Entry = Union[Call, Callback]  # noqa: UP007 (a runtime alias on 3.10)
Line = Union[Call, Callback, Ready]  # noqa: UP007


class JournalError(UsageError):
    """The journal file could not be written: the listener stops rather than lose a call (exit 2)."""


class Journal:
    """The record of one listener: ``seq`` in journal order, the last ``keep`` entries in memory.

    The values given to ``hide`` (the listener's token, ``--forward``'s) are masked in every
    entry before anyone sees it, wherever a client put them: a message, a field's name, a
    filename, a URL's query, an upstream's reply.
    """

    def __init__(self, keep: int = 10000) -> None:
        self.keep = keep
        self.secrets: tuple[str, ...] = ()
        self.seq = 0
        self._entries: deque[Entry] = deque(maxlen=keep)
        self._subscribers: list[Callable[[Line], None]] = []
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._waiting = 0  # threads in wait_for: record() wakes them only when there are some

    def subscribe(self, subscriber: Callable[[Line], None]) -> Callable[[], None]:
        """Hand every later line to ``subscriber`` (in order of subscription); returns the unsubscribe."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber) if subscriber in self._subscribers else None

    def hide(self, *secrets: str | None) -> None:
        """Mask these values in every entry recorded from now on."""
        self.secrets = tuple(dict.fromkeys(s for s in (*self.secrets, *secrets) if s))

    def carries_secret(self, data: bytes) -> bool:
        """True when ``data`` (text or JSON) may hold one of the secrets, in any of its forms (``holds_secret``)."""
        return holds_secret(data, self.secrets)

    def _hidden(self, entry: Entry) -> None:
        """Mask the secrets in ``entry``; costs one look at its line when there is none (the usual case)."""
        if self.carries_secret(entry.line()):
            for f in dataclasses.fields(entry):
                if not f.name.startswith("_"):
                    setattr(entry, f.name, hide_secrets_in(getattr(entry, f.name), self.secrets))
            entry._line = None

    def announce(self, ready: Ready) -> None:
        """The ready line: to the subscribers, not kept (it is no call)."""
        for subscriber in list(self._subscribers):
            subscriber(ready)

    def record(self, entry: Entry) -> Entry:
        """Number an entry, hand it to every subscriber, keep it; a subscriber's error propagates."""
        with self._lock:
            self.seq += 1
            entry.seq = self.seq
            entry._line = None  # made now, with its seq
            if self.secrets:
                self._hidden(entry)
            for subscriber in list(self._subscribers):
                subscriber(entry)
            self._entries.append(entry)
            if self._waiting:
                self._changed.notify_all()
        return entry

    def entries(self, kind: str | None = None, after: int = 0, event: str | None = None) -> list[Entry]:
        """Kept entries, oldest first: of ``kind`` and ``event`` if given, with seq above ``after``."""
        with self._changed:
            return [
                e
                for e in self._entries
                if e.seq > after and (kind is None or e.kind == kind) and (event is None or e.event == event)
            ]

    def get(self, seq: int) -> Entry | None:
        """The kept entry numbered ``seq``, or None."""
        with self._changed:
            return next((e for e in self._entries if e.seq == seq), None)

    def clear(self) -> None:
        """Forget the kept entries (seq goes on; the journal file is untouched)."""
        with self._changed:
            self._entries.clear()

    def wait_for(
        self, kind: str | None = None, count: int = 1, timeout: float = 5.0, after: int = 0, event: str = "call"
    ) -> tuple[list[Entry], bool]:
        """Wait until ``count`` entries match; returns ``(the first count of them, True)``.

        On timeout returns ``(what matched, False)``. Blocks the calling thread: not for the loop.
        """
        found: list[Entry] = []
        seen = after  # each wake-up looks only at what came since the last one

        def enough() -> bool:
            nonlocal seen
            new = list(itertools.takewhile(lambda e: e.seq > seen, reversed(self._entries)))
            if new:
                seen = new[0].seq
                found.extend(
                    e for e in reversed(new) if (kind is None or e.kind == kind) and (event is None or e.event == event)
                )
            return len(found) >= count

        with self._changed:
            self._waiting += 1
            try:
                self._changed.wait_for(enough, timeout)
            finally:
                self._waiting -= 1
        return found[:count], len(found) >= count


class JournalFile:
    """The ``--journal`` subscriber: one write per line, appended, in the OS before the reply is sent.

    A failed write (disk full, ``/dev/full``) raises JournalError, and a partly written line is
    cut off again: the listener then answers 503 and stops with exit 2, rather than answer a
    call it could not record. (Only this process appends while it runs.)
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UsageError(f"cannot open journal {path}: {exc.strerror}") from None
        self.size = os.fstat(self.fd).st_size  # where the next line starts: a failed write is cut back to it

    def __call__(self, line: Line) -> None:
        data = line.line()
        written = 0
        try:
            while written < len(data):
                written += os.write(self.fd, data[written:])
        except OSError as exc:
            if written:  # never leave a torn line
                with contextlib.suppress(OSError):
                    os.ftruncate(self.fd, self.size)
            raise JournalError(f"cannot write the journal {self.path}: {exc.strerror}; stopping") from None
        self.size += written

    def close(self) -> None:
        os.close(self.fd)


def entry_summary(entry: Any) -> str:
    """One line about an entry, for failure messages: seq, kind, status, the key fields."""
    if entry.event == "callback":
        return f"#{entry.seq} callback {entry.kind} -> {entry.status} {'ok' if entry.ok else entry.error or 'not ok'}"
    keys = ("user_id", "contact_id", "message")
    shown = " ".join(f"{k}={entry.field(k)!r}" for k in keys if entry.field(k) is not None)
    return f"#{entry.seq} {entry.kind} {entry.method} {entry.path} -> {entry.status} {shown}".rstrip()
