"""``opcli check --fuzz N``: generated hostile calls to the site's webhooks, judged by cli.md's rules.

Hypothesis draws each call: odd Unicode and very long strings, ids that are 0, negative, huge,
non-numeric or missing, repeated and unknown fields, both encodings, empty and wrong tokens.
A call fails on a 5xx, an HTML or PHP error page, a dropped connection, invalid input that is
not refused (4xx or ``"status": 0``), a profile for a bad token, or a profile or media outside
the contract; each kind of failure is shrunk to its smallest input, shown as a curl command.

Hypothesis stops drawing soon after its first failure, so the search runs in rounds: each
round treats the kinds of failure already found as passes and looks for others, until a round
of N calls finds nothing new. Hypothesis keeps no database and writes its caches outside the
working directory.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from opcli.client import Outgoing, Reply, send, webhook
from opcli.config import Site
from opcli.conformance import Check
from opcli.errors import UnreachableError, UsageError
from opcli.panel import judge
from opcli.protocol import ID_FIELDS, MAX_ID, MediaReply, UserInfo, envelope_failed, redact, unwrap

#: The check of each webhook; ``send_message`` only with ``--send`` (it delivers messages).
CHECK_NAMES = {"user_info": "fuzz-user-info", "user_media": "fuzz-user-media", "send_message": "fuzz-send-message"}
#: At most this many Hypothesis runs per webhook, each looking for a kind of failure not found yet.
MAX_ROUNDS = 8
#: Failures shown per check (each kind of failure once, by its smallest input).
MAX_SHOWN = 8

# ids on and around the limits that sites get wrong: 32-bit, 53-bit (JavaScript), 64-bit
_EDGE_IDS = (0, 1, 2**31 - 1, 2**31, 2**32, 2**53 + 1, MAX_ID)
# what a lenient parser takes for a number
_ODD_NUMBERS = ("", " ", "42 ", " 42", "+42", "042", "4.2", "1e3", "0x2a", "-0", "٤٢", "４２", "42abc", "NaN", "[]")
_NASTY = (
    "\u202eevil",  # right-to-left override
    "a\u0301\u0302\u0303",  # combining marks
    "\U0001f600\U0001f469\u200d\U0001f4bb",  # emoji and a zero-width joiner
    "\ufeff",  # byte order mark
    "'; DROP TABLE users; --",
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "%00%0d%0a",
    "\r\n\r\n",
    '{"json": true}',
    "\\u0000",
)
# PHP's messages in an error page (html_errors on or off)
_PHP_ERROR = re.compile(
    r"(?:<b>)?(?:PHP )?(?:Fatal error|Parse error|Warning|Notice|Deprecated)(?:</b>)?:.*? on line"
    r"|Uncaught [A-Za-z\\]+(?:Exception|Error)|Stack trace:",
    re.S,
)
# what PHP's FILTER_VALIDATE_INT also reads as a number: ASCII blanks around, a plus sign
_PAST_INT_DIGITS = 10**4300  # what _lenient_id gives for a longer id: no profile's id is compared with it
_LENIENT_ID = re.compile(r"^[ \t\n\r\v\f]*([+-]?[0-9]+)[ \t\n\r\v\f]*$")


@dataclass(frozen=True)
class Probe:
    """One generated call: its form fields in order (the token among them), and its encoding."""

    fields: tuple[tuple[str, str], ...]
    multipart: bool

    def last(self, name: str) -> str | None:
        """A field as PHP reads it: its last value."""
        return next((v for k, v in reversed(self.fields) if k == name), None)


@dataclass
class Failure:
    """A kind of failure with the smallest input found for it."""

    kind: str
    reason: str
    request: Outgoing
    token: str

    @property
    def curl(self) -> str:
        return self.request.curl(token=self.token)

    def describe(self) -> str:
        """The input in a line: each field (odd characters escaped, long values cut), the encoding."""
        shown = []
        for name, value in self.request.fields:
            if name == "token":
                shown.append("token=(the token)" if value == self.token else f"token={_short(value)}")
            else:
                shown.append(f"{_short(name)}={_short(value)}")
        encoding = "multipart" if self.request.multipart else "urlencoded"
        return f"{' '.join(shown) or '(no fields)'} ({encoding})"

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "reason": self.reason, "input": self.describe(), "curl": self.curl}


class _Failed(Exception):
    """Raised inside the Hypothesis test; one subclass per kind, so that each is shrunk on its own."""

    failure: Failure


_FAILED_TYPES: dict[str, type[_Failed]] = {}


def _failed(failure: Failure) -> _Failed:
    if failure.kind not in _FAILED_TYPES:
        _FAILED_TYPES[failure.kind] = type(f"Failed_{failure.kind.replace('-', '_')}", (_Failed,), {})
    exc = _FAILED_TYPES[failure.kind](failure.reason)
    exc.failure = failure
    return exc


def fuzz_checks(
    site: Site,
    client: httpx.Client,
    user: int,
    bot: int,
    count: int,
    seed: int | None = None,
    send_messages: bool = False,
) -> Iterator[Check]:
    """One Check per webhook, each after up to ``count`` generated calls (plus those that shrinking makes).

    ``seed`` makes the run repeatable (against a site that answers the same); without it one is
    drawn, and each check's detail says which. Network trouble is a failure, never an exception.
    """
    seed = random.SystemRandom().randrange(2**32) if seed is None else seed
    kinds = ["user_info", "user_media", *(["send_message"] if send_messages else [])]
    with _hypothesis_storage():
        for kind in kinds:
            started = time.perf_counter()
            calls, failures = _fuzz(site, client, kind, user, bot, count, seed)
            ms = (time.perf_counter() - started) * 1000
            yield _report(kind, calls, failures, seed, ms)


def _report(kind: str, calls: int, failures: list[Failure], seed: int, ms: float) -> Check:
    again = f"--fuzz-seed {seed}"
    if not failures:
        return Check(CHECK_NAMES[kind], True, f"{calls} hostile calls, none failed ({again})", ms)
    lines = [f"{len(failures)} kind(s) of failure in {calls} calls ({again} repeats them); smallest inputs:"]
    for k, failure in enumerate(failures[:MAX_SHOWN], 1):
        lines += [f"  {k}. {failure.reason}", f"     input: {failure.describe()}", f"     {failure.curl}"]
    check = Check(CHECK_NAMES[kind], False, "\n".join(lines), ms, lines=lines)
    check.failures = [f.as_dict() for f in failures[:MAX_SHOWN]]
    return check


def _fuzz(site: Site, client: httpx.Client, kind: str, user: int, bot: int, count: int, seed: int) -> tuple[int, list]:
    """Rounds of Hypothesis runs; returns the number of calls made and the failures, by kind."""
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as with_seed

    found: dict[str, Failure] = {}
    calls = 0

    def probe(call: Probe) -> None:
        nonlocal calls
        calls += 1
        failure = _verdict(site, kind, call, client)
        if failure is not None and failure.kind not in found:
            raise _failed(failure)

    strategy = _calls(site, kind, user, bot)
    for round_no in range(MAX_ROUNDS):
        test = given(strategy)(probe)
        test = settings(
            max_examples=count,
            database=None,
            deadline=None,
            phases=(Phase.generate, Phase.shrink),
            verbosity=Verbosity.quiet,
            print_blob=False,
            report_multiple_bugs=True,
            suppress_health_check=list(HealthCheck),
        )(test)
        test = with_seed(_round_seed(seed, kind, round_no))(test)
        new = _run(test)
        if not new:
            break
        for failure in new:
            found.setdefault(failure.kind, failure)
    return calls, list(found.values())


def _run(test: Callable[[], None]) -> list[Failure]:
    """Run a Hypothesis test; the failures it raised, each shrunk (one per kind)."""
    try:
        test()
    except Exception as exc:  # one failure, an ExceptionGroup of several, or Hypothesis' Flaky wrapping them
        failures = [e.failure for e in _leaves(exc) if isinstance(e, _Failed)]
        if not failures:
            raise
        return failures
    return []


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    inner = getattr(exc, "exceptions", None)
    if not inner:
        yield exc
        return
    for e in inner:
        yield from _leaves(e)


def _round_seed(seed: int, kind: str, round_no: int) -> int:
    """A seed per webhook and round, the same on every machine (``hash()`` of a str is not)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{kind}/{round_no}".encode()).digest()[:8], "big")


# --- the calls ---------------------------------------------------------------------------------


def _calls(site: Site, kind: str, user: int, bot: int) -> Any:
    """The strategy of one webhook's calls: a valid call with some parts made unusual or hostile.

    Each part (the token, each id, the message, unknown fields) is first drawn as valid,
    unusual-but-valid or hostile, then its values; so shrinking heads for the valid call and a
    failure keeps only the parts that cause it. A repeated field counts by its last value.
    """
    from hypothesis import strategies as st

    chars = st.characters(codec="utf-8", exclude_characters="\x00")  # curl cannot send a NUL in an argument
    long = st.builds(lambda piece, n: (piece * n)[:n], st.text(chars, min_size=1, max_size=3), st.integers(1000, 10000))
    text = st.one_of(st.text(chars, max_size=20), st.sampled_from(_NASTY), long)
    # valid ids, mostly of unknown users; beyond 32 bits as often as within
    other_id = st.one_of(st.sampled_from(_EDGE_IDS), st.integers(0, 2**31 - 1), st.integers(2**31, MAX_ID)).map(str)
    bad_id = st.one_of(
        st.sampled_from(_ODD_NUMBERS),
        st.integers(max_value=-1).map(str),
        st.integers(min_value=MAX_ID + 1).map(str),
        text,
    )
    wrong_token = st.one_of(st.just(""), text).filter(lambda t: not site.token or site.token not in t)
    ascii_name = st.from_regex(r"[a-z_]{1,12}", fullmatch=True)
    any_name = st.text(st.characters(codec="utf-8", exclude_characters="\x00="), min_size=1, max_size=12)

    def some(valid: str, one: Any) -> Any:
        """One value, or none, or several with the valid one among them."""
        return st.one_of(one.map(lambda v: [v]), st.lists(st.one_of(st.just(valid), one), max_size=3))

    def then(valid: str, before: Any) -> Any:
        """Other values, then the valid one: the call stays valid as PHP reads it."""
        return st.lists(before, min_size=1, max_size=2).map(lambda values: [*values, valid])

    ids = {"user_id": bot if kind == "send_message" else user, "contact_id": user}
    valid = {"token": site.token, **{name: str(ids[name]) for name in ID_FIELDS[kind]}}
    if kind == "send_message":
        valid["message"] = "opcli check --fuzz"
    # each part: (unusual but valid, hostile)
    variants = {
        "token": (then(site.token, wrong_token), some(site.token, wrong_token)),
        "message": (text.map(lambda m: [m]), st.lists(text, max_size=3)),
    }
    for name in ID_FIELDS[kind]:
        variants[name] = (other_id.map(lambda v: [v]), some(valid[name], st.one_of(other_id, bad_id)))
    extras = (
        st.lists(st.tuples(ascii_name, text), min_size=1, max_size=3),
        st.lists(st.tuples(any_name, text), min_size=1, max_size=3),
    )
    state = st.sampled_from((None, 0, 1))  # valid, unusual, hostile: shrinks to valid

    @st.composite
    def calls(draw: Any) -> Probe:
        fields = []
        for name, value in valid.items():
            which = draw(state)
            fields += [(name, v) for v in ([value] if which is None else draw(variants[name][which]))]
        which = draw(state)
        if which is not None:
            fields += draw(extras[which])
        return Probe(tuple(fields), draw(st.booleans()))

    return calls()


# --- the rules ---------------------------------------------------------------------------------


def _verdict(site: Site, kind: str, call: Probe, client: httpx.Client) -> Failure | None:
    """Send one call and judge the answer by the rules of ``check --fuzz`` (cli.md)."""
    request = webhook(site, kind, list(call.fields), multipart=call.multipart, omit_token=True)

    def fail(what: str, reason: str) -> Failure:
        return Failure(what, redact(reason, [site.token]), request, site.token)

    try:
        reply = send(client, request)
    except UnreachableError as exc:
        return fail("unreachable", str(exc))
    page = _error_page(reply)
    if reply.status >= 500:
        return fail("server-error", f"HTTP {reply.status}" + (f" with {page}" if page else ""))
    if page:
        return fail("error-page", f"HTTP {reply.status} with {page}")
    refused = 400 <= reply.status < 500 or envelope_failed(reply.data)
    token = call.last("token")
    if token != site.token:
        which = "no token" if token is None else "an empty token" if token == "" else "a wrong token"
        if _carries_profile(kind, reply):
            return fail("profile-for-bad-token", f"HTTP {reply.status} with a profile or media for {which}")
        if not refused:
            return fail("bad-token-accepted", f"HTTP {reply.status} without status 0 for {which}")
        return None
    requested: int | None = None
    for name in ID_FIELDS[kind]:
        value = call.last(name)
        number = _lenient_id(value)
        if number is None:
            if not refused:
                shown = "missing" if value is None else f"= {_short(value)}"
                return fail("bad-id-accepted", f"HTTP {reply.status} without status 0 for {name} {shown}")
            return None
        if name == "user_id" and number is not _PAST_INT_DIGITS:
            requested = number
    if refused:
        return None  # a valid but unknown user may be refused
    if 300 <= reply.status < 400:
        return fail("redirect", f"HTTP {reply.status}: redirected to {reply.headers.get('location', '?')}")
    if kind in ("user_info", "user_media"):
        violations = judge(kind, reply, requested).violations
        if violations:
            more = f" (+{len(violations) - 1} more)" if len(violations) > 1 else ""
            return fail("contract", f"HTTP {reply.status}, breaks the contract: {violations[0]}{more}")
    return None


def _lenient_id(value: str | None) -> int | None:
    """The integer a call names as an id, or None when it names none (missing, not an integer).

    cli.md's invalid input is a missing or non-integer id: a negative or huge integer is an id a
    site may refuse or accept -- but a profile must then be that id's. ``" 42"`` or ``"+42"`` may
    likewise be read as 42 (what PHP's ``FILTER_VALIDATE_INT`` accepts) or refused.
    """
    if value is None:
        return None
    m = _LENIENT_ID.match(value)
    if m is None:
        return None
    try:
        return int(m.group(1))
    except ValueError:  # more digits than int() takes (4,300): an integer still, but no profile's id
        return _PAST_INT_DIGITS


def _error_page(reply: Reply) -> str | None:
    """``an HTML page ('...')`` or ``a PHP error ('...')`` when the reply is one, else None."""
    if reply.is_json:
        return None
    text = re.sub(r"<[^>]*>", "", reply.body[:20000].decode("utf-8", "replace"))
    php = _PHP_ERROR.search(text)
    if php:
        return f"a PHP error: {' '.join(text[php.start() :].split())[:120]}"
    described = reply.describe_body()
    return described if described.startswith("an HTML page") else None


def _carries_profile(kind: str, reply: Reply) -> bool:
    """True when a user-info or user-media reply holds (part of) a profile or media."""
    if kind not in ("user_info", "user_media"):
        return False
    body, _ = unwrap(reply.data)
    fields = UserInfo.model_fields if kind == "user_info" else MediaReply.model_fields
    return isinstance(body, dict) and not envelope_failed(body) and any(key in body for key in fields)


def _short(value: str, limit: int = 40) -> str:
    """A value as Python would write it (odd characters escaped), long ones cut with their length."""
    if len(value) > limit:
        return f"{ascii(value[:limit])}...({len(value)} chars)"
    return ascii(value)


class _hypothesis_storage:
    """Hypothesis' caches in the user's cache dir for the run, never ``.hypothesis`` in the cwd.

    ``$HYPOTHESIS_STORAGE_DIRECTORY`` wins when set. The first run builds Unicode tables there
    (a few seconds); later runs reuse them.
    """

    def __enter__(self) -> None:
        try:
            from hypothesis.configuration import set_hypothesis_home_dir
        except ImportError:  # pragma: no cover - hypothesis is a dependency
            raise UsageError("check --fuzz needs Hypothesis: pip install hypothesis") from None
        self.reset = set_hypothesis_home_dir
        where = os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY")
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "opcli" / "hypothesis"
        set_hypothesis_home_dir(where or cache)

    def __exit__(self, *exc: object) -> None:
        self.reset(None)  # Hypothesis elsewhere in this process finds its own directory again
