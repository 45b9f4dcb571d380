"""The operator loop (``listen --operator``): after each accepted message, the listener acts as the panel.

For each accepted ``message_sent`` call, once it has been answered, an ``Operator`` waits
``delay``, fetches the webhooks of ``fetch`` for the message's user (judged as ``opcli
user-info`` judges them) and, when ``reply`` is set, sends the operator's reply through
``send_message`` -- the bot as ``user_id``, the user as ``contact_id``. Every outgoing call is a
``Callback`` journal line, written when it ends.

It all runs on the listener's event loop, through httpcore (as ``send --batch`` does), so calls
keep being answered meanwhile. At most ``concurrency`` messages are worked on at once (a
semaphore over triggers), each one's calls one after another: however many messages arrive at
once, at most ``concurrency`` connections are open to the site.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

import httpcore

from opcli.aionet import AsyncioBackend
from opcli.client import Outgoing, asend, tls, webhook
from opcli.config import Site
from opcli.config.model import OperatorConfig
from opcli.errors import UnreachableError
from opcli.listener.app import Listener
from opcli.listener.call import Call, Callback, ms_since
from opcli.listener.journal import JournalError, Line
from opcli.panel import operator_reply, verdict
from opcli.protocol import parse_id

#: messages worked on at once, hence connections open to the site at most
CONCURRENCY = 10


class Operator:
    """The operator loop of one listener; ``attach()`` turns it on, ``close()`` (on the loop) off.

    ``site`` is where the calls go (default: the listener's site). Everything but ``attach``,
    ``detach`` and the constructor runs on the listener's event loop.
    """

    def __init__(
        self,
        listener: Listener,
        settings: OperatorConfig | None = None,
        site: Site | None = None,
        concurrency: int = CONCURRENCY,
    ) -> None:
        self.listener = listener
        self.settings = settings or OperatorConfig()
        self.site = site or listener.site
        listener.journal.hide(self.site.token)  # masked wherever it shows: a URL, a site echoing it back
        self.concurrency = concurrency
        self.gate = asyncio.Semaphore(concurrency)
        # made now, off the loop: loading the CA certificates would hold up the calls being answered.
        # No retries: the deployed panel makes each call once.
        self.pool = httpcore.AsyncConnectionPool(
            ssl_context=tls(self.site),
            max_connections=concurrency,
            max_keepalive_connections=concurrency,
            network_backend=AsyncioBackend() if sys.version_info >= (3, 11) else None,
        )
        self.timeouts = dict.fromkeys(("connect", "read", "write", "pool"), self.settings.timeout)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.waiting: set[int] = set()  # seqs of messages journaled, not yet answered
        self.tasks: set[asyncio.Task[None]] = set()
        self.closed = False
        self.last: int | None = None  # set by finish(): later messages start nothing
        self.then: Callable[[], None] | None = None
        self._unsubscribe: Callable[[], None] | None = None

    # --- on and off ---------------------------------------------------------------------------

    def attach(self) -> Operator:
        """Start watching the listener's calls (from any thread)."""
        self._unsubscribe = self.listener.journal.subscribe(self.noticed)
        self.listener.answered.append(self.answered)
        return self

    def detach(self) -> None:
        """Stop watching; callbacks under way go on until ``close()``."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.answered in self.listener.answered:
            self.listener.answered.remove(self.answered)

    def finish(self, then: Callable[[], None]) -> None:
        """Start nothing for later messages; call ``then`` once the callbacks of the earlier ones ended."""
        self.last = self.listener.journal.seq
        self.then = then
        asyncio.get_running_loop().call_soon(self._maybe_done)  # after the journal line that got here is kept

    def cancel(self) -> None:
        """Cancel every callback under way or to come; each is journaled as not ok, ``cancelled``."""
        self.closed = True
        self.waiting.clear()
        for task in self.tasks:
            task.cancel()

    async def close(self) -> None:
        """Cancel, wait until the cancelled callbacks are journaled, close the connections."""
        self.detach()
        self.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.pool.aclose()

    # --- from the listener --------------------------------------------------------------------

    def noticed(self, line: Line) -> None:
        """A journal subscriber: remember each accepted message, to start on once it is answered."""
        if (
            isinstance(line, Call)
            and line.kind == "message_sent"
            and line.status is not None
            and line.status < 400
            and line.fault is None
            and not self.closed
            and (self.last is None or line.seq <= self.last)
        ):
            self.waiting.add(line.seq)

    def answered(self, call: Call) -> None:
        """The listener's hook after a reply went out: start the loop for an accepted message."""
        if call.seq in self.waiting:
            self.waiting.discard(call.seq)
            self.loop = asyncio.get_running_loop()
            task = self.loop.create_task(self.respond(call))
            self.tasks.add(task)
            task.add_done_callback(self._ended)
        self._maybe_done()

    def _ended(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: respond() journals its own trouble
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.then is not None and not self.waiting and not self.tasks:
            then, self.then = self.then, None
            then()

    # --- the loop for one message -------------------------------------------------------------

    async def respond(self, call: Call) -> None:
        """Fetch, then reply, one call after another; on cancellation journal what did not happen."""
        user, bot = parse_id(call.field("user_id"), "user_id"), parse_id(call.field("contact_id"), "contact_id")
        values = {"message": str(call.field("message") or ""), "user": str(user), "bot": str(bot), "name": str(user)}
        remaining = [*self.settings.fetch, *(["send_message"] if self.settings.reply is not None else [])]
        try:
            if self.settings.delay:
                await asyncio.sleep(self.settings.delay)
            async with self.gate:
                while remaining:
                    kind = remaining.pop(0)  # call() journals it, also when cancelled
                    data = await self.call(call.seq, kind, self.request(kind, user, bot, values), user)
                    name = data.get("name") if kind == "user_info" and isinstance(data, dict) else None
                    if isinstance(name, str) and name:
                        values["name"] = name
        except asyncio.CancelledError:
            for kind in remaining:
                self.record(self.callback(call.seq, kind, self.request(kind, user, bot, values), error="cancelled"))
            raise

    def request(self, kind: str, user: int, bot: int, values: dict[str, str]) -> Outgoing:
        """One outgoing call, encoded as the site's ``webhook_encoding`` by the client's own encoder."""
        if kind == "send_message":
            return operator_reply(self.site, bot, user, self.settings.reply_text(values))
        return webhook(self.site, kind, [("user_id", str(user))])

    def callback(self, trigger: int, kind: str, out: Outgoing, **values: Any) -> Callback:
        """A Callback for ``out``: fields as sent but the token, which is never journaled."""
        return Callback(trigger, kind, out.url, {k: v for k, v in out.fields if k != "token"}, **values)

    async def call(self, trigger: int, kind: str, out: Outgoing, user: int) -> Any:
        """Make one call, judge its reply, journal it; returns the object the reply carried."""
        callback = self.callback(trigger, kind, out)
        started = time.perf_counter_ns()
        data = None
        try:
            reply = await asend(self.pool, out, self.timeouts)  # (its timeout is for the whole call, as the panel's)
        except UnreachableError as exc:
            callback.error = str(exc)
        except asyncio.CancelledError:
            callback.error = "cancelled"
            raise
        except Exception as exc:  # a bug must not silence the loop: journal it as this call's error
            callback.error = f"opcli error: {type(exc).__name__}: {exc}"
        else:
            callback.status = reply.status
            callback.reply = reply.data if reply.is_json else None
            judged = verdict(kind, reply, user)
            data = judged.data
            callback.error = reply.failure() or judged.failure
            if kind != "send_message":
                callback.findings = [f.as_json() for f in judged.findings]
            callback.ok = callback.error is None
        finally:
            callback.ms = ms_since(started)
            self.record(callback)
        return data

    def record(self, callback: Callback) -> None:
        """Journal a callback (the journal masks the token in it)."""
        try:
            self.listener.journal.record(callback)
        except JournalError as exc:  # the runner stops the listener, as for a call it could not journal
            self.listener.on_journal_error(exc)
