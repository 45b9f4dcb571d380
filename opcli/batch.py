"""``opcli send --batch``: many ``message_sent`` events, concurrently, with one result each.

Input is JSON Lines or CSV (columns ``user, bot, message, photos, attach``; ``photos`` holds a
JSON array), read as a stream so that a replay of any size runs in constant memory. A bad line
(invalid JSON, an unknown key, a bad id or photo, bytes that are not UTF-8) is reported with its
number and skipped; a UTF-8 byte-order mark is ignored.

Requests go through httpcore, httpx's own connection layer, without the client's per-request
layers (cookies, auth, redirects: opcli uses none): each worker keeps one connection alive, and
``retries`` is httpcore's -- what httpx's ``AsyncHTTPTransport(retries=N)`` passes down -- which
retries only failures to connect, so a message is never sent twice by surprise.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import difflib
import itertools
import json
import math
import os
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpcore

from opcli.aionet import AsyncioBackend
from opcli.client import Outgoing, asend, check_file, message_sent, tls
from opcli.config import Site
from opcli.errors import UnreachableError, UsageError
from opcli.protocol import Photo, make_photos, parse_id

COLUMNS = ("user", "bot", "message", "photos", "attach")


@dataclass
class Item:
    """One input line: a request to send, or why the line cannot be sent."""

    line: int
    request: Outgoing | None = None
    error: str | None = None


def _photos(value: Any) -> list[Photo]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"photos is not a JSON array ({exc.msg})") from None
    if not isinstance(value, list):
        raise ValueError("photos must be a list of {file_url, big} objects")
    for k, item in enumerate(value):
        if not isinstance(item, dict) or "file_url" not in item:
            raise ValueError(f"photos[{k}] must be an object with a file_url")
    return make_photos((item["file_url"], item.get("big")) for item in value)


def unknown_keys(keys: Iterable[Any], what: str = "key") -> str | None:
    """Why a record's keys are wrong (naming the nearest valid one), or None: one typo must not drop every photo."""
    for key in keys:
        if key not in COLUMNS:
            near = difflib.get_close_matches(str(key), COLUMNS, n=1)
            hint = f"did you mean '{near[0]}'?" if near else f"valid: {', '.join(COLUMNS)}"
            return f"unknown {what} '{key}' ({hint})"
    return None


def to_request(site: Site, record: dict[str, Any]) -> Outgoing:
    """Turn one input record into the request; raises ValueError with a readable reason."""
    problem = unknown_keys(record)
    if problem:
        raise ValueError(problem)
    for key in ("user", "bot"):
        if record.get(key) in (None, ""):
            raise ValueError(f"{key} is missing")
    user, bot = parse_id(record["user"], "user"), parse_id(record["bot"], "bot")
    message = record.get("message") or ""
    if not isinstance(message, str):
        raise ValueError("message must be a string")
    photos = _photos(record.get("photos"))
    attach = record.get("attach") or None
    if attach is not None:
        try:
            attach = check_file(Path(str(attach)))
        except UsageError as exc:
            raise ValueError(str(exc)) from None
    if not message and not photos and attach is None:
        raise ValueError("nothing to send (no message, photos or attach)")
    return message_sent(site, user, bot, message, photos, attach)


def _decoded(lines: Iterable[bytes | str]) -> Iterator[tuple[int, str | None, str | None]]:
    """``(number, text, None)`` per input line, or ``(number, None, why)`` for a line that is not UTF-8."""
    for number, raw in enumerate(lines, 1):
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, None, f"not UTF-8 ({exc.reason} at byte {exc.start + 1})"
                continue
        yield number, raw.removeprefix("\ufeff") if number == 1 else raw, None


def _csv_records(lines: Iterator[tuple[int, str | None, str | None]]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    bad: list[tuple[int, str]] = []

    def texts() -> Iterator[str]:
        for number, text, problem in lines:
            if problem is not None:
                bad.append((number, problem))
                yield "\n"  # an empty row, which the reader skips; the line is reported by number
            else:
                yield text

    reader = csv.DictReader(texts())
    columns = reader.fieldnames or ()
    missing = {"user", "bot"} - set(columns)
    problem = unknown_keys(columns, "column")
    if missing or problem:
        why = problem or f"missing: {', '.join(sorted(missing))}"
        raise UsageError(f"line 1: the CSV header must name the columns {', '.join(COLUMNS)} ({why})")
    for row in reader:
        yield from bad
        bad.clear()
        if None in row:
            yield reader.line_num, f"more cells than the header has columns ({len(columns)})"
        else:
            yield reader.line_num, row
    yield from bad


def _records(stream: Iterable[bytes | str], fmt: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """``(line number, record or error)`` for each input line."""
    lines = _decoded(stream)
    if fmt == "csv":
        yield from _csv_records(lines)
        return
    for number, text, problem in lines:
        if problem is not None:
            yield number, problem
            continue
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            yield number, f"not valid JSON ({exc.msg} at column {exc.colno})"
            continue
        yield number, record if isinstance(record, dict) else "expected a JSON object"


def read_items(site: Site, stream: Iterable[bytes | str], fmt: str) -> Iterator[Item]:
    """The input as Items, lazily; bad lines become Items with an error."""
    for number, record in _records(stream, fmt):
        if isinstance(record, str):
            yield Item(number, error=record)
            continue
        try:
            yield Item(number, request=to_request(site, record))
        except ValueError as exc:
            yield Item(number, error=str(exc))


def count_lines(source: str) -> int | None:
    """The number of messages in a batch file, for a progress bar (None for stdin or when unreadable)."""
    if source == "-":
        return None
    try:
        with open(source, "rb") as stream:
            lines = sum(1 for line in stream if line.strip())
    except OSError:
        return None
    return lines - 1 if source.lower().endswith(".csv") else lines


def detect_format(path: str, head: bytes | str) -> str:
    """``csv`` or ``jsonl``: by the file's ending, else by its first line."""
    lowered = path.lower()
    if lowered.endswith(".csv"):
        return "csv"
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if isinstance(head, bytes):
        head = head.decode("utf-8", "replace")
    return "jsonl" if head.removeprefix("\ufeff").lstrip().startswith("{") else "csv"


@dataclass
class Summary:
    """What a batch did so far; the caller may hold it, so that it is there however the run ends.

    ``through_line`` is the last input line up to which every message has its result: a run that
    was stopped resumes after it (messages in flight past it may have been sent too; see the results).
    ``total`` counts the messages read; when a run on a regular file stops early, the rest of the
    file is then read without sending, so that ``total`` and ``not_attempted`` cover the whole file
    (from stdin or a pipe, only what was read: the rest may never come).
    """

    total: int = 0
    sent: int = 0
    failed: int = 0
    invalid: int = 0
    unreachable: int = 0
    first_unreachable: str = ""
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    through_line: int = 0
    in_flight: set[int] = field(default_factory=set, repr=False)  # being sent: their outcome is unknown when stopped
    _lines: dict[int, int] = field(default_factory=dict, repr=False)  # read, no result yet: index -> line
    _done: set[int] = field(default_factory=set, repr=False)
    _next: int = 0

    @property
    def not_attempted(self) -> int:
        """Messages never sent: queued when the run stopped, or (from a regular file) not read yet."""
        return self.total - self.sent - self.failed - len(self.in_flight)

    @property
    def unknown_lines(self) -> list[int]:
        """The input lines of messages being sent when the run stopped: they may have been delivered."""
        return sorted(self._lines[index] for index in self.in_flight)

    def started(self, index: int, line: int) -> None:
        self.total += 1
        self._lines[index] = line

    def finished(self, index: int, ok: bool) -> None:
        self.in_flight.discard(index)
        self.sent += ok
        self.failed += not ok
        self._done.add(index)
        while self._next in self._done:
            self._done.remove(self._next)
            self.through_line = self._lines.pop(self._next)
            self._next += 1

    def percentile(self, p: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)  # nearest rank
        return round(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)], 1)

    def as_dict(self) -> dict[str, Any]:
        rate = self.sent / self.seconds if self.seconds else 0.0
        return {
            "total": self.total,
            "sent": self.sent,
            "failed": self.failed,
            "invalid": self.invalid,
            "not_attempted": self.not_attempted,
            "in_flight": self.unknown_lines,
            "through_line": self.through_line,
            "seconds": round(self.seconds, 3),
            "messages_per_second": round(rate, 1),
            "p50_ms": self.percentile(50),
            "p95_ms": self.percentile(95),
            "p99_ms": self.percentile(99),
        }


class _Pacer:
    """At most ``rate`` starts per second, shared by every worker."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1 / rate if rate else 0.0
        self.next = time.monotonic()

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()  # no await until the slot is taken: workers cannot interleave here
        delay = self.next - now
        self.next = max(now, self.next) + self.interval
        if delay > 0:
            await asyncio.sleep(delay)


class _NothingReached(Exception):
    """A message could not reach the panel, and none has yet: the run stops (exit 3)."""


async def _send_all(
    site: Site,
    items: Iterator[Item],
    concurrency: int,
    rate: float | None,
    retries: int,
    timeout: float | None,
    on_result: Callable[[dict[str, Any]], None],
    summary: Summary,
    piped: bool = False,
) -> None:
    queue: asyncio.Queue[tuple[int, Item] | None] = asyncio.Queue(maxsize=concurrency * 4)
    pacer = _Pacer(rate)
    seconds = timeout or site.timeout
    timeouts = {"connect": seconds, "read": seconds, "write": seconds, "pool": seconds}
    ssl_context = None
    if site.url("message_sent").startswith("https:"):
        ssl_context = tls(site)
    backend = AsyncioBackend() if sys.version_info >= (3, 11) else None

    async def worker() -> None:
        # one keep-alive connection per worker: httpcore's pool scans all its connections for
        # every request, a quarter of the CPU time when eight share one pool
        async with httpcore.AsyncConnectionPool(
            max_connections=1,
            max_keepalive_connections=1,
            retries=retries,
            ssl_context=ssl_context,
            network_backend=backend,
        ) as pool:
            while (entry := await queue.get()) is not None:
                index, item = entry
                await pacer.wait()
                result: dict[str, Any] = {
                    "line": item.line,
                    "ok": False,
                    "status": None,
                    "reply": None,
                    "error": None,
                    "ms": 0.0,
                }
                started = time.perf_counter()
                summary.in_flight.add(index)
                down = False  # the panel could not even be connected to
                try:
                    reply = await asend(pool, item.request, timeouts)
                except UnreachableError as exc:
                    result["error"] = str(exc)
                    summary.unreachable += 1
                    summary.first_unreachable = summary.first_unreachable or str(exc)
                    down = exc.never_sent
                except OSError as exc:  # the attach file went away after its line was read
                    result["error"] = f"cannot read attach file: {exc.strerror or exc}"
                else:
                    result.update(
                        ok=reply.ok,
                        status=reply.status,
                        reply=reply.data if reply.is_json else None,
                        error=reply.failure(),
                    )
                    summary.latencies.append(reply.ms)
                result["ms"] = round((time.perf_counter() - started) * 1000, 1)
                summary.finished(index, result["ok"])
                on_result(result)
                if down and not summary.latencies:  # the panel is down (refused, DNS, TLS): stop, as replay does
                    raise _NothingReached()

    async def produce() -> None:
        index = -1
        # a pipe may make the next line wait: read it off the loop so that the workers go on meanwhile
        while (item := await asyncio.to_thread(next, items, None) if piped else next(items, None)) is not None:
            index += 1
            summary.started(index, item.line)
            if item.error is not None:
                summary.invalid += 1
                summary.finished(index, False)
                on_result(
                    {"line": item.line, "ok": False, "status": None, "reply": None, "error": item.error, "ms": 0.0}
                )
                continue
            await queue.put((index, item))
        for _ in range(concurrency):
            await queue.put(None)

    # the first failure (stdout's reader gone, Ctrl-C) stops every task at once: a worker that died
    # must not leave the producer blocked on a full queue
    tasks = [asyncio.create_task(produce()), *(asyncio.create_task(worker()) for _ in range(concurrency))]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                raise task.exception()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _count_the_rest(summary: Summary, source: str, fmt: str) -> None:
    """After an early stop, count the messages a regular file holds past those read (as not attempted).

    The file is read again from its start, parsed but nothing sent; another Ctrl-C or SIGTERM
    meanwhile gives up counting (``total`` stays what was read).
    """
    try:
        if not stat.S_ISREG(os.stat(source).st_mode):
            return
        with open(source, "rb") as stream:
            records = sum(1 for _ in _records(stream, fmt))  # one Item per record, read or not
    except (OSError, UsageError, KeyboardInterrupt):  # KeyboardInterrupt: Ctrl-C, and SIGTERM's Signalled
        return
    summary.total = max(summary.total, records)


def send_batch(
    site: Site,
    source: str,
    *,
    concurrency: int = 8,
    rate: float | None = None,
    retries: int = 0,
    timeout: float | None = None,
    fmt: str | None = None,
    stdin: IO[Any] | None = None,
    on_result: Callable[[dict[str, Any]], None] = lambda r: None,
    summary: Summary | None = None,
) -> Summary:
    """Send every message of ``source`` (a path, or ``-`` for ``stdin``); returns the summary.

    ``on_result`` gets each result as it finishes; an exception it raises (a closed stdout) stops
    the whole batch at once. Pass your own ``summary`` to keep what was done when the run ends
    early (Ctrl-C, an exception). Raises UnreachableError when no message reached the panel at all.
    """
    summary = summary if summary is not None else Summary()
    if source == "-":
        stdin = sys.stdin if stdin is None else stdin
        stream = getattr(stdin, "buffer", stdin)  # bytes when there are: each line decoded on its own
    else:
        try:
            stream = open(source, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise UsageError(f"cannot read batch file {source}: {exc.strerror}") from None
    started = time.perf_counter()
    stopped = True
    try:
        head = stream.readline()
        fmt = fmt or detect_format(source, head)
        items = read_items(site, itertools.chain([head], stream), fmt)
        with contextlib.suppress(_NothingReached):
            asyncio.run(_send_all(site, items, concurrency, rate, retries, timeout, on_result, summary, source == "-"))
            stopped = False
    finally:
        summary.seconds = time.perf_counter() - started
        if source != "-":
            stream.close()
            if stopped and fmt is not None:
                _count_the_rest(summary, source, fmt)
    if summary.unreachable and not summary.latencies:
        raise UnreachableError(f"no message reached the panel: {summary.first_unreachable}")
    return summary
