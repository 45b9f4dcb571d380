"""``opcli replay``: journaled calls sent again -- byte-exact where the body was saved -- and their replies compared.

``replay_entry`` sends one ``call`` line of a listener's journal to a site: its saved raw body
(``body.saved_as``) with only the token put back (same content type and boundary), or else a
request rebuilt from ``fields``, ``attaches`` (in the encoding the call used) and
``files[].saved_as`` with opcli's own encoders; ``--set`` always rebuilds. The token is always
the site's, wherever the call carried one. Every request carries ``X-Opcli-Replay: SEQ``, which
the listener journals as ``replay_of``. ``replay`` is the command: a journal's selected calls,
each result handed to ``on_result`` as it ends, compared with the journaled reply when asked.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from opcli import jsonl
from opcli.client import Outgoing, deliver, make_client
from opcli.config import Site
from opcli.errors import OpcliError, UnreachableError, UsageError
from opcli.multipart import SavedBody, token_bytes
from opcli.protocol import KINDS, REPLAY_HEADER, encode_attaches, is_url, kind_name, redact

#: Left out of every comparison: a new message gets a new id.
ALWAYS_IGNORED = ("data.message_id",)
_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")


@dataclass
class Replayed:
    """One journaled call sent again: where, what came back, and how it compares.

    ``reply`` is the reply's JSON, or its text when it was not JSON. ``error`` says why the call
    could not be sent or got no answer (``reached`` is then false, ``unreachable`` true when nobody
    answered); ``same`` and ``diff`` are
    set only when compared (``--expect-same``).
    """

    seq: int
    kind: str
    url: str
    status: int | None = None
    ms: float = 0.0
    reply: Any = None
    ok: bool = False
    reached: bool = False
    same: bool | None = None
    diff: str | None = None
    error: str | None = None
    unreachable: bool = False
    not_compared: str | None = None  # --expect-same, but the recorded reply was no site's answer to it

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` line."""
        return {
            "seq": self.seq,
            "kind": self.kind,
            "url": self.url,
            "status": self.status,
            "ms": self.ms,
            "ok": self.ok,
            "same": self.same,
            "diff": self.diff,
            "error": self.error,
        }


@dataclass
class Summary:
    """What a replay run did."""

    total: int = 0
    ok: int = 0
    failed: int = 0
    same: int | None = None
    different: int | None = None
    seconds: float = 0.0
    results: list[Replayed] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "ok": self.ok,
            "failed": self.failed,
            "same": self.same,
            "different": self.different,
            "seconds": round(self.seconds, 3),
        }


# --- the journal ------------------------------------------------------------------------------


def line_problem(line: Any) -> str | None:
    """Why a ``call`` line cannot be replayed, or None."""
    if not isinstance(line, dict):
        return "not a JSON object"
    checks = (
        ("seq", lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
        ("kind", lambda v: v in KINDS, f"one of {', '.join(KINDS)}"),
        ("path", lambda v: isinstance(v, str) and v.startswith("/"), "a path"),
        ("content_type", lambda v: v is None or isinstance(v, str), "a string"),
        ("fields", lambda v: isinstance(v, dict), "an object"),
        ("attaches", lambda v: isinstance(v, list) and all(isinstance(p, dict) for p in v), "a list of objects"),
        ("files", lambda v: isinstance(v, list) and all(isinstance(f, dict) for f in v), "a list of objects"),
    )
    for key, good, what in checks:
        if key not in line:
            return f"no '{key}'"
        if not good(line[key]):
            return f"'{key}' must be {what}, got {jsonl.dumps(line[key])[:60]}"
    body = line.get("body")
    if body is not None:
        if not (
            isinstance(body, dict)
            and isinstance(body.get("saved_as"), str)
            and isinstance(body.get("size"), int)
            and isinstance(body.get("content_type"), str)
            and isinstance(body.get("token_at"), list)
            and all(isinstance(at, int) and 0 <= at <= body["size"] for at in body["token_at"])
        ):
            return "'body' must be {saved_as, size, sha256, content_type, token_at} as the listener writes it"
    return None


def read_journal(
    source: str, stdin: IO[str] | None = None, *, seqs: set[int] | None = None, kind: str | None = None
) -> list[dict[str, Any]]:
    """The ``call`` lines to replay from a journal file (``-``: stdin); ``unknown`` calls are left out,
    and so are calls refused before their body was read.

    They come in the file's order, which is seq order (a file appended by several listener runs
    holds them one after the other; ``seqs`` then picks those seqs in each run). Raises
    UsageError naming the file and line for a line that is not JSON or not a usable call.
    """
    try:
        stream = (stdin or sys.stdin) if source == "-" else open(source, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise UsageError(f"cannot read journal {source}: {exc.strerror}") from None
    name = "stdin" if source == "-" else source
    found = []
    try:
        for number, text in enumerate(stream, 1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except ValueError as exc:
                raise UsageError(f"{name}:{number}: not a JSON line ({exc})") from None
            if not isinstance(line, dict):
                raise UsageError(f'{name}:{number}: not a journal line (a JSON object with an "event")')
            if line.get("event") != "call" or line.get("kind") == "unknown":
                continue
            problem = line_problem(line)
            if problem:
                raise UsageError(f"{name}:{number}: cannot replay this call: {problem}")
            if line.get("token_ok") is None and not line["fields"] and not line.get("body"):
                continue  # refused before its body was read (malformed HTTP, 415): nothing of it to send again
            if (seqs is None or line["seq"] in seqs) and (kind is None or line["kind"] == kind):
                found.append(line)
    except UnicodeDecodeError as exc:
        raise UsageError(f"{name}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    finally:
        if stream is not stdin and stream is not sys.stdin:
            stream.close()
    return found


def parse_seqs(text: str) -> set[int]:
    """``3,5-9`` as a set of seqs; UsageError when it is not that."""
    seqs: set[int] = set()
    for item in text.split(","):
        low, dash, high = item.strip().partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise UsageError(f"--seq {text}: expected numbers and ranges, like 3,5-9")
        seqs.update(range(int(low), int(high if dash else low) + 1))
    return seqs


def parse_set(text: str) -> tuple[str, str]:
    """``FIELD=VALUE`` as a pair; UsageError without a field name."""
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise UsageError(f"--set {text}: expected FIELD=VALUE")
    return name, value


# --- one call -----------------------------------------------------------------------------


def _with_sets(fields: list[tuple[str, str]], sets: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Each ``(name, value)`` replaces the field's value (once, however often it came) or is added."""
    fields = list(fields)
    for name, value in sets:
        at = [i for i, (k, _) in enumerate(fields) if k == name]
        if at:
            fields[at[0]] = (name, value)
            fields = [f for i, f in enumerate(fields) if i not in at[1:]]
        else:
            fields.append((name, value))
    return fields


def journal_fields(line: dict[str, Any]) -> list[tuple[str, str]]:
    """A journaled call's form fields, the token aside: repeated ones in order, photos as the call sent them."""
    fields = []
    for name, value in line["fields"].items():
        fields += [(name, str(v)) for v in value] if isinstance(value, list) else [(name, str(value))]
    return fields + encode_attaches(line.get("attaches") or [], line.get("attaches_encoding") or "brackets")


def check_base_url(base_url: str, secrets: Iterable[str | None] = ()) -> None:
    """UsageError unless ``base_url`` is one the journaled path can go after: http(s), no query, no fragment.

    The message shows no query or fragment (a token may be in it), and ``secrets`` masked.
    """
    if not is_url(base_url):
        raise UsageError(f"--to {redact(base_url, secrets)}: expected an http:// or https:// base URL")
    cut = min((base_url.index(c) for c in "?#" if c in base_url), default=None)
    if cut is not None:
        shown = redact(base_url[:cut], secrets) + base_url[cut] + "..."
        raise UsageError(
            f"--to {shown}: a base URL cannot have a query or a fragment (the journaled path goes after it); "
            "give scheme://host[:port][/prefix]"
        )


def request_for(
    line: dict[str, Any], site: Site, *, base_url: str | None = None, sets: Sequence[tuple[str, str]] = ()
) -> Outgoing:
    """The request that replays a journal line; UsageError when it cannot be made (a file not saved...)."""
    seq, kind = line["seq"], line["kind"]
    url = base_url.rstrip("/") + line["path"] if base_url else site.url(kind)
    headers = {REPLAY_HEADER: str(seq)}
    saved = line.get("body")
    if saved and not sets:
        path = Path(saved["saved_as"])
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise UsageError(f"call #{seq}: cannot read its saved body {path}: {exc.strerror}") from None
        if size != saved["size"]:
            raise UsageError(f"call #{seq}: its saved body {path} has {size} bytes, the journal says {saved['size']}")
        token = token_bytes(site.token, saved["content_type"])
        raw = SavedBody(path, size, saved["token_at"], token, saved["content_type"])
        return Outgoing(url, [("token", site.token)], raw=raw, headers=headers)
    content_type = line["content_type"]
    if content_type not in _FORMS:
        raise UsageError(f"call #{seq}: cannot rebuild a body of type {content_type or 'none'} (no saved body)")
    fields = _with_sets([("token", site.token), *journal_fields(line)], sets)
    files = line["files"]
    if len(files) > 1:
        raise UsageError(f"call #{seq}: {len(files)} files can only be replayed from a saved body")
    file = None
    if files:
        saved_as = files[0].get("saved_as")
        if not saved_as:
            raise UsageError(f"call #{seq}: its file {files[0].get('filename')!r} was not saved (use --save-dir)")
        file = Path(saved_as)
        if not file.is_file():
            raise UsageError(f"call #{seq}: its saved file {file} is missing")
    return Outgoing(
        url,
        fields,
        file=file,
        file_field=str(files[0].get("field") or "attach") if files else "attach",
        filename=files[0].get("filename") if files else None,
        multipart=content_type == "multipart/form-data",
        headers=headers,
    )


def replay_entry(
    line: dict[str, Any],
    site: Site,
    *,
    base_url: str | None = None,
    sets: Sequence[tuple[str, str]] = (),
    http: httpx.Client | None = None,
) -> Replayed:
    """Send one journaled call again to ``site`` (or ``base_url`` + the journaled path) and read the reply.

    ``sets`` are ``(field, value)`` pairs that change or add fields (the body is then rebuilt).
    Raises UsageError when the line cannot be replayed, UnreachableError when nobody answered.
    It blocks until the reply came: on an event loop (the listener's own), run it in a thread.
    """
    problem = line_problem(line)
    if problem:
        raise UsageError(f"cannot replay this journal line: {problem}")
    if base_url is not None:
        check_base_url(base_url, [site.token])
    out = request_for(line, site, base_url=base_url, sets=sets)
    reply = deliver(site, out, http=http)
    shown = reply.data if reply.is_json else reply.body.decode("utf-8", "replace")
    return Replayed(
        line["seq"], line["kind"], out.url, reply.status, round(reply.ms, 1), shown, ok=reply.ok, reached=True
    )


# --- comparing ----------------------------------------------------------------------------


def _shown(value: Any) -> str:
    text = jsonl.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def first_difference(expected: Any, actual: Any, ignore: Iterable[str] = (), path: str = "") -> str | None:
    """The first difference between two JSON values, as ``path: expected X, got Y``; None when equal.

    Paths are dotted, list items by index (``custom.0.value``); those in ``ignore`` are left out.
    """
    ignore = set(ignore)
    where = path or "reply"
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in [*expected, *(k for k in actual if k not in expected)]:
            sub = f"{path}.{key}" if path else str(key)
            if sub in ignore:
                continue
            if key not in actual:
                return f"{sub}: missing (expected {_shown(expected[key])})"
            if key not in expected:
                return f"{sub}: not expected (got {_shown(actual[key])})"
            found = first_difference(expected[key], actual[key], ignore, sub)
            if found:
                return found
        return None
    if isinstance(expected, list) and isinstance(actual, list):
        for k, (want, got) in enumerate(zip(expected, actual, strict=False)):
            sub = f"{path}.{k}" if path else str(k)
            found = None if sub in ignore else first_difference(want, got, ignore, sub)
            if found:
                return found
        if len(expected) != len(actual):
            return f"{where}: expected {len(expected)} items, got {len(actual)}"
        return None
    if type(expected) is not type(actual) or expected != actual:
        return f"{where}: expected {_shown(expected)}, got {_shown(actual)}"
    return None


def uncomparable(line: dict[str, Any]) -> str | None:
    """Why a journaled reply cannot be compared with a replay's (or None): a fault answered it, or
    it was sent with a wrong token (replay sends a valid one)."""
    if line.get("fault"):
        return "its recorded reply was a fault's"
    if line.get("token_ok") is False:
        return "it was recorded with a wrong token"
    return None


def compare(line: dict[str, Any], result: Replayed, ignore: Iterable[str] = ()) -> str | None:
    """How a replayed call's reply differs from the journaled one (HTTP status, then the body), or None."""
    if line.get("status") != result.status:
        return f"HTTP status: expected {line.get('status')}, got {result.status}"
    return first_difference(line.get("reply"), result.reply, [*ALWAYS_IGNORED, *ignore])


# --- the command --------------------------------------------------------------------------


def replay(
    source: str,
    site: Site,
    *,
    stdin: IO[str] | None = None,
    seqs: set[int] | None = None,
    kind: str | None = None,
    base_url: str | None = None,
    sets: Sequence[tuple[str, str]] = (),
    expect_same: bool = False,
    ignore: Sequence[str] = (),
    concurrency: int = 1,
    timeout: float | None = None,
    on_result: Callable[[Replayed], None] | None = None,
) -> Summary:
    """Replay a journal's selected calls; ``on_result`` gets each result as it ends (in seq order with concurrency 1).

    A call that failed, could not be sent, or (``expect_same``) differs is not ok. Raises
    UsageError for an unusable journal line or option (before anything is sent), and
    UnreachableError when the target could not be reached at all (it stops at the first such
    call when none has been answered yet).
    """
    if kind is not None:
        try:
            kind = kind_name(kind)  # user-info is user_info
        except ValueError as exc:
            raise UsageError(f"--kind {kind}: {exc}") from None
    if base_url is not None:
        check_base_url(base_url, [site.token])
    lines = read_journal(source, stdin, seqs=seqs, kind=kind)
    if not lines:
        raise UsageError(f"no calls to replay in {'stdin' if source == '-' else source} (after --seq and --kind)")
    if base_url is None:
        for kind in {line["kind"] for line in lines}:
            site.url(kind)  # a site without the URL of a kind to replay: ConfigError before anything is sent
    summary = Summary(same=0 if expect_same else None, different=0 if expect_same else None)
    started = time.perf_counter()
    with make_client(site, timeout) as http, ThreadPoolExecutor(concurrency) as pool:

        def one(line: dict[str, Any]) -> Replayed:
            started = time.perf_counter()
            try:
                result = replay_entry(line, site, base_url=base_url, sets=sets, http=http)
            except OpcliError as exc:  # a timeout, a refused connection: the time it took, as for any call
                url = base_url.rstrip("/") + line["path"] if base_url else site.url(line["kind"])
                ms = round((time.perf_counter() - started) * 1000, 1)
                return Replayed(
                    line["seq"], line["kind"], url, ms=ms, error=str(exc), unreachable=isinstance(exc, UnreachableError)
                )
            if expect_same and (why := uncomparable(line)) is not None:
                result.not_compared = why  # ok as any replayed call is; counted neither same nor different
            elif expect_same:
                result.diff = compare(line, result, ignore)
                result.same = result.diff is None
                result.ok = result.same
            return result

        waiting = iter(enumerate(lines))
        running: dict[Future[Replayed], int] = {}  # each call in flight, by its place in the journal
        answered = False
        held: list[Replayed] = []  # unreachable before anything was answered: the target may be down
        while True:
            while not held and len(running) < concurrency and (item := next(waiting, None)) is not None:
                running[pool.submit(one, item[1])] = item[0]
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: running[f]):  # journal order among those that ended together
                del running[future]
                result = future.result()
                answered = answered or result.reached
                if not answered and result.unreachable:
                    held.append(result)
                    continue
                for shown in [*held, result]:
                    _count(summary, shown)
                    if on_result is not None:
                        on_result(shown)
                held.clear()
    summary.seconds = time.perf_counter() - started
    if held:
        raise UnreachableError(held[0].error or "the target could not be reached")
    return summary


def _count(summary: Summary, result: Replayed) -> None:
    summary.results.append(result)
    summary.total += 1
    summary.ok += result.ok
    summary.failed += not result.ok
    if result.same is not None:
        summary.same += result.same  # type: ignore[operator]
        summary.different += not result.same  # type: ignore[operator]
