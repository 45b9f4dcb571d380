"""``opcli check``: the conformance suite for a site's three webhooks, and its JUnit XML.

Each check has a stable slug, calls the site once (as the panel would) and says in one line why
it failed. The suite never stops at the first failure.
"""

from __future__ import annotations

import re
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from opcli.client import Outgoing, Reply, make_client, send, webhook
from opcli.config import Site
from opcli.errors import UnreachableError
from opcli.panel import judge, operator_reply
from opcli.protocol import envelope_failed


@dataclass
class Check:
    """One check's result; ``problems`` lists every violation (``detail`` joins them all).

    ``request`` and ``reply`` are what was sent and answered (``reply`` is None when unreachable).
    """

    name: str
    ok: bool
    detail: str
    ms: float
    unreachable: bool = False
    #: ``check --fuzz``: each kind of failure with its smallest input (``kind``, ``reason``, ``input``, ``curl``)
    failures: list[dict[str, str]] | None = None
    #: a detail of several lines (``check --fuzz``'s failures): ``detail`` joins them, a person sees each on its own
    lines: list[str] | None = None
    problems: list[str] = field(default_factory=list)
    request: Outgoing | None = field(default=None, repr=False)
    reply: Reply | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        shown = {"name": self.name, "ok": self.ok, "detail": self.detail, "ms": round(self.ms, 1)}
        return shown if self.failures is None else {**shown, "failures": self.failures}


@dataclass
class Report:
    site: str
    checks: list[Check]

    @property
    def passed(self) -> int:
        return sum(c.ok for c in self.checks)

    @property
    def failed(self) -> int:
        return len(self.checks) - self.passed

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "failed": self.failed, "checks": [c.as_dict() for c in self.checks]}


def _valid(kind: str, user: int) -> Callable[[Reply], tuple[bool, str | list[str]]]:
    def verdict(reply: Reply) -> tuple[bool, str | list[str]]:
        judged = judge(kind, reply, user)
        if judged.violations:
            return False, [str(v) for v in judged.violations]
        warnings = [f for f in judged.findings if f.level == "warning"]
        return True, f"HTTP {reply.status}, contract-valid" + (f", {len(warnings)} warning(s)" if warnings else "")

    return verdict


def _rejects(reply: Reply) -> tuple[bool, str]:
    if reply.status in (401, 403):
        return True, f"HTTP {reply.status}"
    if envelope_failed(reply.data):
        return True, f"HTTP {reply.status}, status 0"
    if 200 <= reply.status < 300:
        return False, f"accepted it: HTTP {reply.status} without status 0"
    return False, f"HTTP {reply.status}; expected 401/403 or status 0"


def _clean_refusal(reply: Reply) -> tuple[bool, str]:
    if reply.status >= 500:
        return False, f"HTTP {reply.status}: a server error instead of a clean refusal"
    if 400 <= reply.status < 500 or envelope_failed(reply.data):
        return True, f"HTTP {reply.status}" + (", status 0" if envelope_failed(reply.data) else "")
    return False, f"HTTP {reply.status} without status 0: a non-integer user_id was accepted"


def _accepted(reply: Reply) -> tuple[bool, str]:
    failure = reply.failure()
    return (True, f"HTTP {reply.status}") if failure is None else (False, failure)


def plan(site: Site, user: int, bot: int, send_messages: bool, attach: Path) -> list[tuple[str, Outgoing, Any]]:
    """The checks to run: ``(slug, request, verdict)``; ``--send`` adds those that deliver messages."""
    ids = [("user_id", str(user))]
    wrong = "opcli-wrong-token-" + "x" * 8
    checks: list[tuple[str, Outgoing, Any]] = [
        ("user-info-valid", webhook(site, "user_info", ids), _valid("user_info", user)),
        ("user-info-urlencoded", webhook(site, "user_info", ids, multipart=False), _valid("user_info", user)),
        ("user-info-multipart", webhook(site, "user_info", ids, multipart=True), _valid("user_info", user)),
        ("user-info-rejects-wrong-token", webhook(site, "user_info", ids, token=wrong), _rejects),
        ("user-info-rejects-empty-token", webhook(site, "user_info", ids, token=""), _rejects),
        ("user-info-rejects-missing-token", webhook(site, "user_info", ids, omit_token=True), _rejects),
        ("user-info-non-integer-id", webhook(site, "user_info", [("user_id", "abc")]), _clean_refusal),
        ("user-media-valid", webhook(site, "user_media", ids), _valid("user_media", user)),
        ("user-media-rejects-wrong-token", webhook(site, "user_media", ids, token=wrong), _rejects),
    ]
    if send_messages:
        text = operator_reply(site, bot, user, "opcli check: a text message from the operator")
        with_file = operator_reply(site, bot, user, "opcli check: a message with a file", attach)
        bad = operator_reply(site, bot, user, "opcli check: this must be refused")
        bad.fields = [("token", wrong) if name == "token" else (name, value) for name, value in bad.fields]
        checks += [
            ("send-message-text", text, _accepted),
            ("send-message-file", with_file, _accepted),
            ("send-message-rejects-wrong-token", bad, _rejects),
        ]
    return checks


def run_checks(
    site: Site,
    user: int,
    bot: int,
    send_messages: bool = False,
    *,
    http: httpx.Client | None = None,
    timeout: float | None = None,
    on_check: Callable[[Check], None] | None = None,
    fuzz: int = 0,
    fuzz_seed: int | None = None,
) -> Report:
    """Run the suite against ``site``; ``on_check`` sees each check as it ends.

    ``fuzz`` adds that many generated hostile calls per webhook (``opcli.fuzz``), ``fuzz_seed``
    makes them repeatable. Raises UnreachableError when no call reached the site at all.
    """
    if http is None:
        with make_client(site, timeout) as own:
            return run_checks(
                site, user, bot, send_messages, http=own, on_check=on_check, fuzz=fuzz, fuzz_seed=fuzz_seed
            )
    client = http
    checks: list[Check] = []
    timeout = client.timeout.read or site.timeout
    with tempfile.TemporaryDirectory(prefix="opcli-check-") as tmp:
        attach = Path(tmp) / "opcli-check.png"
        attach.write_bytes(TINY_PNG)
        for name, request, verdict in plan(site, user, bot, send_messages, attach):
            started = time.perf_counter()
            try:
                reply = send(client, request)
            except UnreachableError as exc:
                ms = (time.perf_counter() - started) * 1000
                check = Check(name, False, str(exc), ms, unreachable=True, request=request)
            else:
                ok, detail = verdict(reply)
                problems = detail if isinstance(detail, list) else []
                check = Check(
                    name,
                    ok,
                    "; ".join(problems) or str(detail),
                    reply.ms,
                    problems=problems,
                    request=request,
                    reply=reply,
                )
            checks.append(check)
            if on_check:
                on_check(check)
    if all(c.unreachable for c in checks):
        raise UnreachableError(checks[0].detail)
    slowest = max(checks, key=lambda c: c.ms)
    unanswered = [c.name for c in checks if c.unreachable]
    within = not unanswered and slowest.ms <= timeout * 1000
    detail = f"slowest: {slowest.name} {slowest.ms:.0f} ms (timeout {timeout:g}s)"
    if unanswered:  # a reset or a refusal is no slowness: say which calls got no answer
        detail = f"no answer to {', '.join(unanswered)}; {detail}"
    latency = Check("every-call-within-timeout", within, detail, slowest.ms)
    checks.append(latency)
    if on_check:
        on_check(latency)
    if fuzz:
        from opcli.fuzz import fuzz_checks

        for check in fuzz_checks(site, client, user, bot, fuzz, fuzz_seed, send_messages):
            checks.append(check)
            if on_check:
                on_check(check)
    return Report(site.name, checks)


# what XML 1.0 cannot hold (a reason quoting a reply with an ESC in it), escaped as Python writes it
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml(text: str) -> str:
    return _NOT_XML.sub(lambda m: ascii(m.group(0))[1:-1], text)


def junit_xml(report: Report) -> bytes:
    """The report as JUnit XML: one testcase per check, which CI systems display."""
    total = sum(c.ms for c in report.checks) / 1000
    suites = ET.Element(
        "testsuites",
        name="opcli check",
        tests=str(len(report.checks)),
        failures=str(report.failed),
        time=f"{total:.3f}",
    )
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"opcli check {report.site}",
        tests=str(len(report.checks)),
        failures=str(report.failed),
        errors="0",
        skipped="0",
        time=f"{total:.3f}",
    )
    for check in report.checks:
        case = ET.SubElement(
            suite, "testcase", classname=f"opcli.check.{report.site}", name=check.name, time=f"{check.ms / 1000:.3f}"
        )
        if not check.ok:
            ET.SubElement(
                case, "failure", message=_xml(check.detail), type="unreachable" if check.unreachable else "contract"
            ).text = _xml(check.detail)
        else:
            ET.SubElement(case, "system-out").text = _xml(check.detail)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)


# A 1x1 transparent PNG: the file `check --send` and `demo` upload.
TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360000002"
    "0000050001e226059b0000000049454e44ae426082"
)
