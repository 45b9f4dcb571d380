"""Running the listener as ``opcli listen``: serve under uvicorn, stop on --count, --timeout or a signal.

``serve`` runs in the main thread until the run ends and returns how it ended. Running it in a
thread is ``opcli.listener.thread.ListenerThread``; the uvicorn plumbing is ``opcli.listener.server``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from opcli.config import Config, Site
from opcli.errors import Signalled, UsageError, raise_on
from opcli.listener.app import Listener, routes_of
from opcli.listener.call import Call, Callback, Ready
from opcli.listener.faults import parse_rules
from opcli.listener.inspector import PREFIX as INSPECTOR
from opcli.listener.journal import Journal, JournalError, JournalFile, Line
from opcli.listener.operator import Operator
from opcli.listener.server import base_url, bind, make_server, run_loop

DEFAULT_PORT = 8765
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


STOP_GRACE_SECONDS = 0.3  # after --count, how long calls still coming in are answered 503


def pick_address(
    site: Site,
    listen_host: str | None,
    listen_port: int | None,
    host: str | None,
    port: int | None,
    operator: bool = False,
) -> tuple[str, int]:
    """--host/--port, else listen.host/port, else the site's loopback http URLs, else 127.0.0.1:8765.

    With ``operator`` (the listener plays the panel and calls the site back) only the panel's URL
    counts: the webhooks are the site's, wherever they are.
    """
    url_host, url_port = None, None
    for url in [site.panel_url, *([] if operator else site.webhooks.values())]:
        parts = urlsplit(url or "")
        if parts.scheme == "http" and parts.hostname in _LOOPBACK:
            url_host, url_port = parts.hostname, parts.port or 80
            break
    chosen_host = next(h for h in (host, listen_host, url_host, "127.0.0.1") if h is not None)
    chosen_port = next(p for p in (port, listen_port, url_port, DEFAULT_PORT) if p is not None)
    return chosen_host, chosen_port


def served_site(config: Config, url: str) -> Site:
    """The config's site with the URLs that name the listener's configured address moved to ``url``,
    where it serves (``--port 0``): the site the operator loop calls back.
    """
    own = pick_address(config.site, config.listen.host, config.listen.port, None, None, operator=True)
    return config.site.rebased(url, only=own)


def endpoints_of(listener: Listener, url: str) -> dict[str, str]:
    """``{kind: URL}`` of the four endpoints, in protocol order."""
    return {kind: url + path for path, kind in listener.routes.items()}


# --- `opcli listen` --------------------------------------------------------------------------


class _OnceHandler(logging.Handler):
    """uvicorn's and asyncio's complaints as one ``opcli: warning:`` line each, never a traceback.

    A flood of the same complaint (a client sending garbage in a loop, accept() out of file
    descriptors) is said once.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage().splitlines()[0] if record.getMessage() else record.name
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text = f"{text} ({type(exc).__name__}: {exc})" if str(exc) else f"{text} ({type(exc).__name__})"
        key = text[:60]
        if key in self.seen:
            return
        self.seen.add(key)
        with contextlib.suppress(OSError, ValueError):
            print(f"opcli: warning: {text} (said once)", file=sys.stderr, flush=True)


def _quiet_logs() -> Callable[[], None]:
    """Route uvicorn's and asyncio's log records to one-line warnings; returns the undo."""
    handler = _OnceHandler()
    loggers = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "asyncio")]
    saved = [(lg, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.propagate = False

    def undo() -> None:
        for lg, propagate in saved:
            lg.removeHandler(handler)
            lg.propagate = propagate

    return undo


def raise_fd_limit() -> None:
    """Open-file soft limit up to the hard limit: each idle client holds a descriptor."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = max(soft, 1 << 20)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):  # not on this platform, or not allowed: keep the soft limit
        pass


@dataclass
class Tally:
    """What a run saw: counted calls, rejected ones, calls elsewhere; stops at ``count``."""

    count: int | None
    stop: Callable[[str], None]
    counted: int = 0
    rejected: int = 0
    callbacks: int = 0
    failed_callbacks: int = 0
    unknown: int = 0  # calls to no endpoint, health checks (GET / answered) aside
    unknown_paths: list[str] = field(default_factory=list)  # the first few distinct "METHOD path", to name them
    dropped: int = 0  # lines stdout could not take (the journal file has them)

    def __call__(self, line: Line) -> None:
        if isinstance(line, Callback):
            self.callbacks += 1
            self.failed_callbacks += not line.ok
        elif isinstance(line, Call):
            if not line.counted:
                if line.path == "/" and line.method in ("GET", "HEAD") and not line.rejected:
                    return  # a health check: no sign of a misconfigured client
                self.unknown += 1
                path = line.path if len(line.path) <= 80 else line.path[:77] + "..."  # (the stop line stays short)
                where = f"{line.method} {path}"  # a GET to an endpoint's path is no call to it either
                if len(self.unknown_paths) < 4 and where not in self.unknown_paths:
                    self.unknown_paths.append(where)
            elif self.count is None or self.counted < self.count:
                self.counted += 1
                self.rejected += line.rejected
                if self.count is not None and self.counted >= self.count:
                    self.stop("count")

    @property
    def failed(self) -> bool:
        return bool(self.rejected or self.failed_callbacks)


@dataclass
class Outcome:
    """How a listener run ended."""

    exit_code: int
    reason: str
    tally: Tally

    @property
    def counted(self) -> int:
        return self.tally.counted

    @property
    def rejected(self) -> int:
        return self.tally.rejected


def serve(
    config: Config,
    *,
    host: str | None = None,
    port: int | None = None,
    count: int | None = None,
    timeout: float | None = None,
    journal: Path | None = None,
    save_dir: Path | None = None,
    strict: bool | None = None,
    forward: Site | None = None,
    faults: Sequence[str] = (),
    seed: int | None = None,
    operator: bool = False,
    show: Callable[[Line], None] | None = None,
    flush: Callable[[], None] | None = None,
    announce: Callable[[Ready], None] | None = None,
    show_on_loop: bool = False,
) -> Outcome:
    """Run the listener until --count calls, --timeout, or a signal; returns how it ended.

    ``show`` gets every line (ready, calls, callbacks) for stdout, from a thread of its own, a
    batch at a time; ``flush`` is called after each batch (show need not flush each line), and
    a call's reply waits until its line was flushed (``StdoutPump``). ``show_on_loop`` (stdout is a
    regular file, which never stalls) shows and flushes each line on the loop instead, as it is journaled. When
    stdout's reader goes away (BrokenPipeError) the listener stops. ``announce(ready)`` is called once the socket
    accepts connections. ``faults`` (``--fault``) come before the config's rules; ``seed``
    (``--seed``) wins over ``listen.seed``. ``operator`` (or ``listen.operator`` in the config)
    turns the operator loop on; with ``count`` the run then ends once the callbacks of the
    counted calls ended. ``forward`` sends each checked call on to that site (``--forward``).
    Raises UsageError (exit 2) for a port in use, a bad ``--fault``, an unusable ``--journal`` or
    ``--save-dir``, or a journal that could not be written during the run; ConfigError for a
    ``forward`` site without a URL the listener serves.
    """
    operator = operator or config.listen.operator is not None
    address = pick_address(config.site, config.listen.host, config.listen.port, host, port, operator)
    routes_of(config.site)  # config errors before binding
    try:
        parse_rules(faults)
    except ValueError as exc:
        raise UsageError(f"--fault {exc}") from None
    if save_dir is not None:
        try:
            save_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot use --save-dir {save_dir}: {exc.strerror}") from None
    book = Journal(config.listen.keep)
    app = Listener(config, journal=book, save_dir=save_dir, strict=strict, faults=faults, seed=seed, forward=forward)
    server = make_server(app)
    journal_file = JournalFile(journal) if journal else None  # last: closed in the finally below
    reasons: list[str] = []  # why it stopped: the first one counts
    failures: list[JournalError] = []
    panel: Operator | None = None  # the operator loop, when on

    def stop(why: str) -> None:
        reasons.append(why)
        app.accepting = False
        server.should_exit = True
        if panel is not None:
            panel.cancel()

    def counted_out(why: str) -> None:  # --count reached: stop once the callbacks it waits for ended
        loop = asyncio.get_running_loop()

        def done() -> None:
            reasons.append(why)  # reached: a --timeout that fires during the grace does not make it 124
            app.accepting = False
            # calls already under way (a burst of clients) still get their 503 before the server closes
            loop.call_later(STOP_GRACE_SECONDS, stop, why)

        if panel is None:
            done()
        else:
            panel.finish(done)

    def journal_failed(error: JournalError) -> None:
        failures.append(error)
        stop("journal error")

    app.on_journal_error = journal_failed
    tally = Tally(count, counted_out)
    if journal_file is not None:
        book.subscribe(journal_file)
    pump = StdoutPump(show, stop, flush) if show is not None and not show_on_loop else None
    if pump is not None:
        book.subscribe(pump)
        app.before_reply = pump.written
    elif show is not None:
        book.subscribe(ShownOnLoop(show, flush))
    book.subscribe(tally)
    raise_fd_limit()
    undo_logs = _quiet_logs()
    undo_signals = raise_on(signal.SIGINT, signal.SIGTERM)
    sock = None
    try:
        sock = bind(*address)
        url = base_url(sock)
        ready = Ready(url, endpoints_of(app, url), inspector=url + INSPECTOR)
        if operator:
            panel = Operator(app, config.listen.operator, served_site(config, url)).attach()
        book.announce(ready)
        if announce:
            announce(ready)

        async def main() -> None:
            if timeout is not None:
                asyncio.get_running_loop().call_later(timeout, stop, "timeout")
            try:
                await server.serve(sockets=[sock])
            finally:
                if panel is not None:
                    await panel.close()

        run_loop(main(), server.config.get_loop_factory())
        why = reasons[0] if reasons else "stopped"
        code = 124 if why == "timeout" and count is not None else 1 if tally.failed else 0
    except Signalled as exc:
        code, why = exc.exit_code, "interrupted"
    except KeyboardInterrupt:
        code, why = 130, "interrupted"
    finally:
        undo_signals()
        undo_logs()
        if sock is not None:
            sock.close()
        if journal_file is not None:
            journal_file.close()
        if pump is not None:
            pump.close()
            tally.dropped = pump.dropped
    if failures:
        raise failures[0]
    return Outcome(code, why, tally)


class ShownOnLoop:
    """Shows and flushes each line as it is journaled, on the loop: for a stdout that is a regular file.

    A file never stalls, so the thread and the wait of ``StdoutPump`` would only cost (about a
    third of the calls per second). A write that fails (a full disk) stops the showing, with one
    warning; the journal file is another matter.
    """

    def __init__(self, show: Callable[[Line], None], flush: Callable[[], None] | None) -> None:
        self.show, self.flush, self.failed = show, flush, False

    def __call__(self, line: Line) -> None:
        if self.failed:
            return
        try:
            self.show(line)
            if self.flush is not None:
                self.flush()
        except OSError as exc:
            self.failed = True
            print(f"opcli: warning: cannot write stdout ({exc.strerror or exc}); no more lines shown", file=sys.stderr)


class StdoutPump:
    """Writes the lines ``show`` renders from a thread of its own; a call's reply waits until its line was flushed.

    The listener awaits ``written()`` before each reply, as cli.md promises: the line is on stdout
    (flushed) before the reply is sent. The thread shows every line queued since it last woke,
    flushes once, and releases the replies waiting on them: under many clients a flush serves a
    batch. The event loop never writes to stdout itself, so a reader that stops reading (a stalled
    ``| less``) holds replies up for at most ``STALL_SECONDS``; after that replies go out without
    waiting, lines gather in a bounded queue, and past it they are dropped from stdout -- never
    from the journal file -- with one warning and a count. When the reader goes away
    (BrokenPipeError) the listener stops, as a Unix tool does (``| head``).
    """

    STALL_SECONDS = 1.0

    def __init__(
        self,
        show: Callable[[Line], None],
        stop: Callable[[str], None],
        flush: Callable[[], None] | None = None,
        bound: int = 10000,
    ) -> None:
        self.show, self.stop, self.flush, self.bound = show, stop, flush, bound
        self.queue: deque[Line | None] = deque()
        self.wake = threading.Event()  # set when lines wait: the loop sets it once per batch, not per line
        self.dropped = 0
        self.closed = False
        self.queued = 0  # lines queued so far, and (by the thread) shown and flushed so far
        self.flushed = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        # each reply waiting: the lines to be flushed for it, its wait, since when (the loop's time)
        self.waiters: deque[tuple[int, asyncio.Future[None], float]] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.stalled = False
        self.thread = threading.Thread(target=self._run, daemon=True, name="opcli stdout")
        self.thread.start()

    def __call__(self, line: Line) -> None:
        if self.closed:
            return
        if len(self.queue) >= self.bound:
            if not self.dropped:
                print(
                    "opcli: warning: stdout is not being read; dropping lines from it (the journal file keeps them)",
                    file=sys.stderr,
                    flush=True,
                )
            self.dropped += 1
            return
        self.queue.append(line)
        self.queued += 1
        if not self.wake.is_set():
            self.wake.set()

    def written(self) -> asyncio.Future[None] | None:
        """What a reply awaits (on the event loop): every line queued so far shown and flushed.

        None when they are, or when stdout has stalled.
        """
        loop = self.loop = asyncio.get_running_loop()  # (before flushed is read: the thread reads it after)
        if self.flushed >= self.queued or self.stalled or self.closed:
            return None
        waiter = loop.create_future()
        self.waiters.append((self.queued, waiter, loop.time()))
        if self.timer is None:
            self.timer = loop.call_later(self.STALL_SECONDS, self._release, True)
        return waiter

    def _release(self, stalled: bool = False) -> None:
        """On the loop: the replies whose lines were flushed go on (all of them when stdout ``stalled``)."""
        self.stalled = stalled
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        while self.waiters and (stalled or self.waiters[0][0] <= self.flushed):
            waiter = self.waiters.popleft()[1]
            if not waiter.done():
                waiter.set_result(None)
        if self.waiters:  # a flush is still to come for these: the oldest waits STALL_SECONDS in all
            loop = asyncio.get_running_loop()
            self.timer = loop.call_at(self.waiters[0][2] + self.STALL_SECONDS, self._release, True)

    def _run(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            taken = len(self.queue)  # what is shown now: lines queued meanwhile wait for the next turn
            ended = self._show_queued(taken)
            try:
                if self.flush is not None and not self.closed:
                    self.flush()
            except BrokenPipeError:
                self._reader_gone()
            self.flushed += taken - ended
            if self.loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop has ended (the listener stopped)
                    self.loop.call_soon_threadsafe(self._release)
            if ended:
                return

    def _show_queued(self, count: int) -> bool:
        """Show the first ``count`` lines queued; True once the end mark (None) came."""
        for _ in range(count):
            line = self.queue.popleft()
            if line is None:
                return True
            if self.closed:
                continue
            try:
                self.show(line)
            except BrokenPipeError:
                self._reader_gone()
        return False

    def _reader_gone(self) -> None:
        self.closed = True
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        self.stop("stdout closed")

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued (waiting at most ``timeout`` for a stalled reader), then end."""
        self.queue.append(None)
        self.wake.set()
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.dropped += len(self.queue) - 1
            self.closed = True
