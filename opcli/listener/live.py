"""Following the journal live: one ``Follower`` per open event stream or wait under ``/_opcli/``.

The Journal records on the event loop before each reply is sent; a follower's subscription only
appends to its buffer and sets an event, so it never slows a call, and one that falls
``STREAM_BACKLOG`` lines behind is ended (a browser resumes with ``Last-Event-ID``).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opcli.listener.journal import Entry

STREAM_BACKLOG = 5000  # lines a stream may fall behind before it is closed


class Follower:
    """One open event stream or wait: the lines recorded since it began, and an event to wake it."""

    def __init__(self, after: int, backlog: int = STREAM_BACKLOG) -> None:
        self.after = after  # the last seq handed over: older lines are never handed twice
        self.backlog = backlog
        self.pending: deque[Entry | str] = deque()
        self.wake = asyncio.Event()
        self.ended = ""  # why it ended, once it has
        self.loop = asyncio.get_running_loop()
        self.thread = threading.get_ident()

    def deliver(self, item: Entry | str) -> None:
        """``push`` from any thread: at once on the follower's own loop, else through it."""
        if threading.get_ident() == self.thread:
            self.push(item)
            return
        try:
            self.loop.call_soon_threadsafe(self.push, item)
        except RuntimeError:  # its loop has closed: nobody reads this follower any more
            pass

    def push(self, item: Entry | str) -> None:
        """A new line (or the ``clear`` notice); called by the Journal, so it must never wait."""
        if self.ended:
            return
        if len(self.pending) >= self.backlog:
            self.end("too far behind")
            return
        self.pending.append(item)
        self.wake.set()

    def end(self, why: str) -> None:
        self.ended = self.ended or why
        self.wake.set()

    def take(self) -> list[Entry | str]:
        """What came since the last take, each line once and in seq order."""
        items: list[Entry | str] = []
        while self.pending:
            item = self.pending.popleft()
            if isinstance(item, str) or (item.seq or 0) > self.after:
                items.append(item)
                if not isinstance(item, str):
                    self.after = item.seq or self.after
        self.wake.clear()
        return items


async def until_disconnect(receive: Any, follower: Follower) -> None:
    """Read until the client goes away, then end the follower (nothing else is sent on a GET)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    follower.end("client gone")
