"""Fault rules: chosen calls misbehave on purpose (``--fault SPEC``, ``listen.faults``).

A SPEC is ``KIND:ACTION[,OPTION]...`` (cli.md, "Faults"); ``parse_rule`` reads one. ``Faults``
holds the rules in force, in order (the first that matches a call decides), and may be changed
from other threads while the listener serves (``ListenerThread.fault``, ``/_opcli/faults``).

The listener asks ``Faults.apply`` once a call has been read and parsed, before its token is
checked: a matching rule waits its delay and gives the answer (or none, for ``empty``, ``reset``
and ``hang``). Once the call is journaled, ``respond`` sends it as the rule says; what acts on
the connection uses the ``Connection`` that opcli's HTTP protocol (``listener/http.py``) puts
in the request's scope.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from opcli.protocol import KINDS, kind_name, parse_id

ACTIONS = ("delay", "status", "html", "status0", "malformed", "empty", "reset", "dribble", "hang")
OPTIONS = ("rate", "times", "user", "delay")
#: Actions that send no response at all: the call's status is null.
NO_RESPONSE = ("empty", "reset", "hang")
DEFAULT_STATUS0 = "Invalid API token"
#: ``dribble`` sends the body in this many pieces (fewer when it is shorter).
DRIBBLE_PIECES = 10
#: ``malformed``: valid JSON until it stops, as a reply cut off by a crashing PHP script.
MALFORMED = '{"status": 1, "message": "", "data": {"id": 4'
#: ``html``: the error page a PHP site shows when it fails (display_errors on).
HTML_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>500 Internal Server Error</title></head><body>\n"
    "<h1>Internal Server Error</h1>\n<br />\n<b>Fatal error</b>:  Uncaught Exception: fault injected by opcli"
    " in <b>/var/www/html/operator-api.php</b> on line <b>42</b><br />\n</body></html>\n"
)


@dataclass(eq=False)
class Rule:
    """One fault rule: which calls it takes (kind, user, times, rate) and what it does to them.

    ``spec`` is the rule as written: the journal's ``fault``. ``value`` is the action's
    argument: seconds for ``delay`` and ``dribble``, the code for ``status``, the message for
    ``status0``. ``used`` counts the calls it took (``times``).
    """

    spec: str
    kind: str | None  # None: every kind (``*``)
    action: str
    value: float | int | str | None = None
    rate: float | None = None
    times: int | None = None
    user: int | None = None
    delay: float = 0.0
    used: int = field(default=0, compare=False)

    def takes(self, call: Any, draw: random.Random) -> bool:
        """Whether this rule applies to ``call``; a ``rate`` is drawn only for calls it would take."""
        if self.kind is not None and call.kind != self.kind:
            return False
        if self.times is not None and self.used >= self.times:
            return False
        if self.user is not None:
            try:
                if parse_id(call.field("user_id"), "user_id") != self.user:
                    return False
            except ValueError:
                return False
        return self.rate is None or draw.random() < self.rate

    @property
    def wait(self) -> float:
        """Seconds before the answer: the ``delay`` option, plus the ``delay`` action's own."""
        return self.delay + (float(self.value) if self.action == "delay" else 0.0)  # type: ignore[arg-type]

    def answer(self) -> tuple[int | None, Any] | None:
        """``(status, reply)`` sent instead of the listener's; None when the listener answers."""
        if self.action == "status":
            return self.value, {"status": 0, "message": f"fault: HTTP {self.value}"}  # type: ignore[return-value]
        if self.action == "status0":
            return 200, {"status": 0, "message": self.value}
        if self.action == "html":
            return 500, HTML_PAGE
        if self.action == "malformed":
            return 200, MALFORMED
        if self.action in NO_RESPONSE:
            return None, None
        return None  # delay, dribble: the normal answer, late or slow


# --- the grammar ------------------------------------------------------------------------------


def _seconds(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: expected seconds (a number, 0 or more), got {raw!r}")
    return value


def _status(raw: str) -> int:
    code = int(raw) if raw.isdigit() else 0
    if not 200 <= code <= 599 or code in (204, 304):
        raise ValueError(f"status: expected an HTTP status from 200 to 599 that has a body (not 204, 304), got {raw!r}")
    return code


def _rate(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise ValueError(f"rate: expected a fraction above 0 and at most 1, got {raw!r}")
    return value


def _times(raw: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"times: expected a whole number of at least 1, got {raw!r}")
    return int(raw)


def _user(raw: str) -> int:
    return parse_id(raw, "user")


_OPTION_VALUES = {"rate": _rate, "times": _times, "user": _user, "delay": lambda raw: _seconds("delay", raw)}


def parse_rule(spec: str) -> Rule:
    """One SPEC (``KIND:ACTION[,OPTION]...``) as a Rule; ValueError naming the part that is wrong."""
    if not isinstance(spec, str):
        raise ValueError(f"expected a string KIND:ACTION[,OPTION]..., got {type(spec).__name__}")
    written_kind, colon, rest = spec.partition(":")
    if not colon or not rest.strip():
        raise ValueError("expected KIND:ACTION[,OPTION]... (for example user_info:delay=5)")
    kind = kind_name(written_kind.strip(), (*KINDS, "*"))
    action_part, *option_parts = (part.strip() for part in rest.split(","))
    action, has_value, raw = action_part.partition("=")
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r} (expected one of {', '.join(ACTIONS)})")
    value: float | int | str | None = None
    if action in ("delay", "dribble"):
        if not has_value:
            raise ValueError(f"action {action!r} needs seconds ({action}=SECONDS)")
        value = _seconds(action, raw)
    elif action == "status":
        if not has_value:
            raise ValueError("action 'status' needs a code (status=CODE)")
        value = _status(raw)
    elif action == "status0":
        value = raw if has_value else DEFAULT_STATUS0
    elif has_value:
        raise ValueError(f"action {action!r} takes no value, got {action_part!r}")
    options: dict[str, Any] = {}
    for part in option_parts:
        name, has_value, raw = part.partition("=")
        if not part:
            raise ValueError("an empty option (a stray comma?)")
        if name not in OPTIONS:
            raise ValueError(f"unknown option {name!r} (expected one of {', '.join(OPTIONS)})")
        if name in options:
            raise ValueError(f"option {name!r} is given twice")
        if not has_value:
            raise ValueError(f"option {name!r} needs a value ({name}=...)")
        options[name] = _OPTION_VALUES[name](raw)
    return Rule(spec=spec, kind=None if kind == "*" else kind, action=action, value=value, **options)


def parse_rules(specs: Iterable[str]) -> list[Rule]:
    """Every SPEC as a Rule, in order; ValueError ``'SPEC': problem`` for the first bad one."""
    rules = []
    for spec in specs:
        try:
            rules.append(parse_rule(spec))
        except ValueError as exc:
            raise ValueError(f"{spec!r}: {exc}") from None
    return rules


# --- the rules in force -----------------------------------------------------------------------


class Faults:
    """The fault rules in force, in order: the first that takes a call decides.

    Safe to change from another thread while the listener serves; ``replace`` starts every rule's
    ``times`` afresh, ``add`` leaves the others' counts as they are. ``rate`` draws from
    ``random.Random(seed)``: a seeded run with the same calls faults the same ones. ``replace`` and
    ``add`` raise ValueError (``'SPEC': problem``) and then change nothing.
    """

    def __init__(self, specs: Iterable[str] = (), seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._draw = random.Random(seed)
        self._rules = parse_rules(specs)

    def __len__(self) -> int:
        return len(self._rules)

    def specs(self) -> list[str]:
        """The rules in force, as written."""
        return [rule.spec for rule in self._rules]

    def replace(self, specs: Iterable[str]) -> None:
        """Put ``specs`` in force instead of the present rules (all of them, or none when one is bad)."""
        rules = parse_rules(specs)
        with self._lock:
            self._rules = rules

    def add(self, spec: str) -> None:
        """Add one rule after the others."""
        [rule] = parse_rules([spec])
        with self._lock:
            self._rules = [*self._rules, rule]

    def clear(self) -> None:
        with self._lock:
            self._rules = []

    def match(self, call: Any) -> Rule | None:
        """The first rule that takes ``call`` (counted against its ``times``), or None."""
        if not self._rules:  # the common case: no lock taken
            return None
        with self._lock:
            for rule in self._rules:
                if rule.takes(call, self._draw):
                    rule.used += 1
                    return rule
        return None

    async def apply(self, call: Any, scope: dict[str, Any]) -> tuple[int | None, Any] | None:
        """The answer of the rule that takes ``call``, after its delay; None when the listener answers.

        Sets ``call.fault``. ``delay`` and ``dribble`` give None (the listener's answer, late or
        slow); ``empty``, ``reset`` and ``hang`` give ``(None, None)``: ``respond`` sends nothing.
        A delay ends early when the client goes away or the server stops.
        """
        rule = self.match(call)
        if rule is None:
            return None
        connection = _connection(scope, rule)
        call.fault = rule.spec
        if rule.wait:
            await _pause(connection, rule.wait)
        return rule.answer()


def _connection(scope: dict[str, Any], rule: Rule) -> Any:
    from opcli.listener.http import EXTENSION

    connection = scope.get("extensions", {}).get(EXTENSION)
    if connection is None and rule.action in NO_RESPONSE:
        raise RuntimeError(f"the fault {rule.spec!r} needs opcli's server (serve, ListenerThread, ServerThread)")
    return connection


async def _pause(connection: Any, seconds: float) -> bool:
    """Wait ``seconds``, less when the connection ends; True when it ended first."""
    if connection is None:
        await asyncio.sleep(seconds)
        return False
    return await connection.wait(seconds)


async def respond(spec: str, scope: dict[str, Any], send: Any, status: int | None, body: bytes) -> None:
    """Send the answer of a call that the rule ``spec`` took; the call is journaled already."""
    rule = parse_rule(spec)  # the rule as written says all that is left to do
    connection = _connection(scope, rule)
    if rule.action == "empty":
        await connection.close()
        return
    if rule.action == "reset":
        await connection.reset()
        return
    if rule.action == "hang":
        await connection.wait()
        await connection.close()
        return
    content_type = b"text/html; charset=utf-8" if rule.action == "html" else b"application/json"
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    if rule.action != "dribble":
        await send({"type": "http.response.body", "body": body})
        return
    size = max(1, -(-len(body) // DRIBBLE_PIECES))  # ceiling: at most DRIBBLE_PIECES pieces
    step = float(rule.value) / -(-len(body) // size)  # type: ignore[arg-type]
    ended = False
    for start in range(0, len(body), size):
        if not ended:
            ended = await _pause(connection, step)
        more = start + size < len(body)
        await send({"type": "http.response.body", "body": body[start : start + size], "more_body": more})
