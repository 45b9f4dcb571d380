"""The panel's side: calling a site's webhooks as the deployed panel does, and judging the replies."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from opcli.client import Log, Outgoing, Reply, deliver, webhook
from opcli.config import Site
from opcli.protocol import Finding, check_reply, kind_name


@dataclass
class Judged:
    """A webhook's reply with the object it carried (unwrapped) and what the contract says of it."""

    reply: Reply
    data: Any = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def violations(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "violation"]

    @property
    def failure(self) -> str | None:
        """Why the panel cannot use this reply (the first violation), or None."""
        found = self.violations
        if not found:
            return None
        if not found[0].field:  # the reply as a whole failed: its status, not JSON, not an object
            return str(found[0])
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        return f"the reply breaks the contract: {found[0]}{more}"


def verdict(kind: str, reply: Reply, user_id: int | None) -> Judged:
    """How the panel takes any reply: user-info and user-media judged against the contract; for
    ``message_sent`` and ``send_message``, a non-2xx or an envelope ``"status": 0`` is the failure.

    ``.failure`` says why the reply failed (None when it did not), ``.findings`` what the contract says.
    """
    if kind in ("user_info", "user_media"):
        return judge(kind, reply, user_id)
    failure = reply.failure()
    return Judged(reply, reply.data, [Finding("violation", "", failure)] if failure else [])


def judge(kind: str, reply: Reply, user_id: int | None) -> Judged:
    """Check a user-info or user-media reply: status, JSON, envelope, then the contract."""
    if not 200 <= reply.status < 300:
        return Judged(reply, reply.data, [Finding("violation", "", reply.failure() or f"HTTP {reply.status}")])
    if not reply.is_json:
        return Judged(reply, None, [Finding("violation", "", f"the reply is {reply.describe_body()}")])
    data, findings = check_reply(kind, reply.data, user_id)
    return Judged(reply, data, findings)


def fetch(
    site: Site,
    kind: str,
    user_id: int,
    *,
    http: httpx.Client | None = None,
    timeout: float | None = None,
    log: Log | None = None,
) -> Judged:
    """Call the site's ``user_info`` or ``user_media`` webhook as the panel does and judge the reply.

    Network trouble raises UnreachableError; what the site answered is in the returned Judged.
    """
    kind = kind_name(kind, ("user_info", "user_media"))  # user-info too; ValueError for another
    request = webhook(site, kind, [("user_id", str(user_id))])
    return judge(kind, deliver(site, request, http=http, timeout=timeout, log=log), user_id)


def operator_reply(site: Site, bot: int, user: int, message: str, attach: Path | None = None) -> Outgoing:
    """The operator's reply to the site's send-message webhook: ``user_id`` = bot, ``contact_id`` = user."""
    return webhook(
        site, "send_message", [("user_id", str(bot)), ("contact_id", str(user)), ("message", message)], attach
    )


def send_reply(
    site: Site,
    bot: int,
    user: int,
    message: str,
    attach: Path | None = None,
    *,
    http: httpx.Client | None = None,
    timeout: float | None = None,
    log: Log | None = None,
) -> Reply:
    """Send an operator's reply from ``bot`` to ``user`` to the site's send-message webhook."""
    return deliver(site, operator_reply(site, bot, user, message, attach), http=http, timeout=timeout, log=log)
