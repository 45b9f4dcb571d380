"""The panel's side: ``user-info``, ``user-media``, ``reply`` and ``check``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from opcli.cli.common import (
    Attach,
    DryRun,
    Json,
    Message,
    Timeout,
    Verbose,
    judged_outcome,
    logger,
    read_message,
    reply_outcome,
    state,
)
from opcli.errors import RemoteError, UsageError


def _fetch(ctx: typer.Context, kind: str, user_id: int, timeout: float | None, verbose: bool, json_out: bool) -> None:
    from opcli.panel import fetch

    st = state(ctx)
    out = st.output(json_out)
    judged = fetch(st.load().site, kind, user_id, timeout=timeout, log=logger(out, verbose))
    judged_outcome(out, kind, judged)


def user_info(
    ctx: typer.Context,
    user_id: Annotated[int, typer.Argument(min=0, metavar="ID", help="The user whose profile the operator opens.")],
    timeout: Timeout = None,
    verbose: Verbose = False,
    json_out: Json = False,
) -> None:
    """Call the site's user-info webhook as the panel does and check the reply."""
    _fetch(ctx, "user_info", user_id, timeout, verbose, json_out)


def user_media(
    ctx: typer.Context,
    user_id: Annotated[
        int, typer.Argument(min=0, metavar="ID", help="The user whose private media the operator opens.")
    ],
    timeout: Timeout = None,
    verbose: Verbose = False,
    json_out: Json = False,
) -> None:
    """Call the site's user-media webhook as the panel does and check the reply."""
    _fetch(ctx, "user_media", user_id, timeout, verbose, json_out)


def reply(
    ctx: typer.Context,
    bot: Annotated[
        int, typer.Option("--bot", metavar="ID", min=0, help="The bot who replies (user_id).", show_default=False)
    ],
    user: Annotated[
        int,
        typer.Option(
            "--user", metavar="ID", min=0, help="The site user who receives it (contact_id).", show_default=False
        ),
    ],
    message: Message = None,
    attach: Attach = None,
    dry_run: DryRun = False,
    timeout: Timeout = None,
    verbose: Verbose = False,
    json_out: Json = False,
) -> None:
    """Send an operator's reply to the site's send-message webhook, as the panel does."""
    from opcli import client
    from opcli.panel import operator_reply, send_reply

    st = state(ctx)
    text = read_message(message, st.env)
    attach = client.check_file(attach)
    if not text and attach is None:
        raise UsageError("nothing to send: give -m TEXT or --attach FILE")
    out = st.output(json_out)
    site = st.load().site
    if dry_run:
        out.request(operator_reply(site, bot, user, text or "", attach))
        return
    answer = send_reply(site, bot, user, text or "", attach, timeout=timeout, log=logger(out, verbose))
    reply_outcome(out, answer, f"Delivered to {answer.url}")


def check(
    ctx: typer.Context,
    user: Annotated[
        int | None,
        typer.Option(
            "--user", metavar="ID", min=0, help="A user the site knows (default: check.user).", show_default=False
        ),
    ] = None,
    bot: Annotated[
        int | None,
        typer.Option("--bot", metavar="ID", min=0, help="A bot for --send (default: check.bot).", show_default=False),
    ] = None,
    send_messages: Annotated[
        bool, typer.Option("--send", help="Also check send-message: delivers real messages.")
    ] = False,
    junit: Annotated[
        Path | None,
        typer.Option(
            "--junit", metavar="FILE", help="Write a JUnit XML report to FILE.", dir_okay=False, show_default=False
        ),
    ] = None,
    fuzz: Annotated[
        int,
        typer.Option(
            "--fuzz",
            metavar="N",
            min=0,
            help="Add N generated hostile calls per webhook (Hypothesis), each failure shown as curl.",
            show_default=False,
        ),
    ] = 0,
    fuzz_seed: Annotated[
        int | None,
        typer.Option("--fuzz-seed", metavar="S", help="Make --fuzz repeatable.", show_default=False),
    ] = None,
    timeout: Timeout = None,
    json_out: Json = False,
) -> None:
    """Run the conformance suite against the site's three webhooks."""
    st = state(ctx)
    site = st.load().site
    user = user if user is not None else site.check.get("user")
    bot = bot if bot is not None else site.check.get("bot")
    if user is None or (send_messages and bot is None):
        missing = "--user" if user is None else "--bot"
        raise UsageError(f"give {missing} or set check.{missing[2:]} for site '{site.name}' in the config")
    if fuzz_seed is not None and not fuzz:
        raise UsageError("--fuzz-seed needs --fuzz N")
    run_check(st.output(json_out), site, user, bot or 0, send_messages, timeout, junit, fuzz, fuzz_seed)


def run_check(
    out: Any,
    site: Any,
    user: int,
    bot: int,
    send_messages: bool,
    timeout: float | None,
    junit: Path | None = None,
    fuzz: int = 0,
    fuzz_seed: int | None = None,
) -> None:
    """Run the suite, show it (rows as they finish, or the JSON report), write JUnit; failures are exit 1."""
    from opcli.conformance import junit_xml, run_checks

    report = run_checks(
        site,
        user,
        bot,
        send_messages,
        timeout=timeout,
        on_check=None if out.json_mode else out.check_row,
        fuzz=fuzz,
        fuzz_seed=fuzz_seed,
    )
    if out.json_mode:
        out.json(report.as_dict())
    else:
        out.note(f"{report.passed} checks passed, {report.failed} failed", style="bold")
    if junit is not None:
        try:
            junit.write_bytes(junit_xml(report))
        except OSError as exc:
            raise UsageError(f"cannot write {junit}: {exc.strerror}") from None
    if report.failed:
        raise RemoteError(f"{report.failed} of {len(report.checks)} checks failed against site '{site.name}'")
