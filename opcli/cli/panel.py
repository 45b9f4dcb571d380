"""The panel's side: ``user-info``, ``user-media``, ``reply`` and ``check``."""

from __future__ import annotations

import os
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
    id_argument,
    id_option,
    judged_outcome,
    logger,
    one_file,
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
    user_id: Annotated[int, id_argument("The user whose profile the operator opens.")],
    timeout: Timeout = None,
    verbose: Verbose = False,
    json_out: Json = False,
) -> None:
    """Open a user's profile as the panel does; check it.

    POSTs token and user_id to the site's user-info webhook and checks the reply against the
    contract; violations go to stderr and make exit 1. --json prints the profile object
    (unwrapped from a {"status", "data"} envelope).

    \b
    Examples:
      opcli user-info 42
      opcli user-info 42 --json
      opcli -s staging user-info 1001 -v
    """
    _fetch(ctx, "user_info", user_id, timeout, verbose, json_out)


def user_media(
    ctx: typer.Context,
    user_id: Annotated[int, id_argument("The user whose private media the operator opens.")],
    timeout: Timeout = None,
    verbose: Verbose = False,
    json_out: Json = False,
) -> None:
    """Open a user's private media as the panel does; check it.

    POSTs token and user_id to the site's user-media webhook and checks the reply against the
    contract. --json prints {"media": [{"url", "big"}, ...]}.

    \b
    Examples:
      opcli user-media 42
      opcli user-media 42 --json
    """
    _fetch(ctx, "user_media", user_id, timeout, verbose, json_out)


def reply(
    ctx: typer.Context,
    bot: Annotated[int, id_option("--bot", "The bot who replies (user_id).")],
    user: Annotated[int, id_option("--user", "The site user who receives it (contact_id).")],
    message: Message = None,
    attach: Attach = None,
    dry_run: DryRun = False,
    timeout: Timeout = None,
    verbose: Verbose = False,
    json_out: Json = False,
) -> None:
    """Send an operator's reply to a user, as the panel does.

    POSTs to the site's send-message webhook: user_id is the bot, contact_id the user. --json
    prints the site's reply body (null when it is not JSON).

    \b
    Examples:
      opcli reply --bot 7 --user 42 -m "Hi! How are you?"
      opcli reply --bot 7 --user 42 -m "For you" --attach examples/photo.jpg
    """
    from opcli.panel import operator_reply, send_reply

    st = state(ctx)
    out = st.output(json_out)
    file = one_file(attach)
    text = read_message(message, out)
    if not text and file is None:
        raise UsageError("nothing to send: give -m TEXT or --attach FILE")
    site = st.load().site
    if dry_run:
        out.request(operator_reply(site, bot, user, text or "", file))
        return
    answer = send_reply(site, bot, user, text or "", file, timeout=timeout, log=logger(out, verbose))
    reply_outcome(out, answer, f"Delivered to {answer.url}")


def check(
    ctx: typer.Context,
    user: Annotated[int | None, id_option("--user", "A user the site knows (default: check.user).")] = None,
    bot: Annotated[int | None, id_option("--bot", "A bot for --send (default: check.bot).")] = None,
    send_messages: Annotated[
        bool, typer.Option("--send", help="Also check send-message: delivers real messages.")
    ] = False,
    junit: Annotated[
        Path | None,
        typer.Option("--junit", metavar="FILE", help="Write a JUnit XML report to FILE.", show_default=False),
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
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="Show the request and reply of each failing check on stderr.")
    ] = False,
    json_out: Json = False,
) -> None:
    """Run the conformance suite against the site's webhooks.

    One row per check (pass/fail, latency, why). --json prints {"passed", "failed", "checks":
    [{"name", "ok", "detail", "ms"}]}, with every violation in detail. Exit 1 when a check
    fails, 3 when the site could not be reached (the JUnit report is written then too).

    \b
    Examples:
      opcli check
      opcli check --send --junit report.xml
      opcli -s staging check --user 1001 -v
    """
    st = state(ctx)
    site = st.load().site
    user = user if user is not None else site.check.get("user")
    bot = bot if bot is not None else site.check.get("bot")
    if user is None or (send_messages and bot is None):
        missing = "--user" if user is None else "--bot"
        raise UsageError(f"give {missing} or set check.{missing[2:]} for site '{site.name}' in the config")
    if fuzz_seed is not None and not fuzz:
        raise UsageError("--fuzz-seed needs --fuzz N")
    run_check(st.output(json_out), site, user, bot or 0, send_messages, timeout, junit, verbose, fuzz, fuzz_seed)


def run_check(
    out: Any,
    site: Any,
    user: int,
    bot: int,
    send_messages: bool,
    timeout: float | None,
    junit: Path | None = None,
    verbose: bool = False,
    fuzz: int = 0,
    fuzz_seed: int | None = None,
) -> None:
    """Run the suite, show it (rows as they finish, or the JSON report), write JUnit; failures are exit 1.

    The JUnit path is checked before anything is sent, and written also when the site is unreachable.
    """
    from opcli.client import log_reply, log_request
    from opcli.conformance import Report, junit_xml, run_checks
    from opcli.errors import UnreachableError

    if junit is not None:
        existed = junit.exists()
        try:
            with open(junit, "ab"):
                pass
        except OSError as exc:
            raise UsageError(f"cannot write --junit {junit}: {exc.strerror or exc}") from None
        if not existed:  # (an empty file left by a run stopped now is no report: CI would choke on it)
            junit.resolve().unlink(missing_ok=True)  # (a symlink stays: its target is what was made)
    done: list[Any] = []

    def on_check(check: Any) -> None:
        done.append(check)
        if not out.json_mode:
            out.check_row(check, verbose)
        if verbose and not check.ok and check.request is not None:
            log_request(out.verbose, check.request, check.request.build())
            if check.reply is not None:
                log_reply(out.verbose, check.reply)

    try:
        report = run_checks(
            site, user, bot, send_messages, timeout=timeout, on_check=on_check, fuzz=fuzz, fuzz_seed=fuzz_seed
        )
    except UnreachableError:
        if junit is not None:  # CI still gets its report: every check failed as unreachable
            _write(out, junit, junit_xml(Report(site.name, done)))
        raise
    if out.json_mode:
        out.document(report.as_dict())
    else:
        out.note(f"{report.passed} checks passed, {report.failed} failed", style="bold")
    if junit is not None:
        _write(out, junit, junit_xml(report))
    if report.failed:
        raise RemoteError(f"{report.failed} of {len(report.checks)} checks failed against site '{site.name}'")


def _write(out: Any, path: Path, data: bytes) -> None:
    """Write the report; a file whole or not at all (a run stopped meanwhile leaves the last one as it was).

    A pipe or a device (``--junit /dev/stdout``) is written to as it is; a symlink's target is replaced.
    """
    text = out.redact(data.decode("utf-8"))
    target = path.resolve()
    part = target.with_name(f".{target.name}.part")
    try:
        if (target.exists() and not target.is_file()) or str(path.absolute()).startswith(("/dev/", "/proc/")):
            with open(path, "a", encoding="utf-8") as stream:  # (/dev/stdout may stand for a file: kept, appended)
                stream.write(text)
            return
        part.write_text(text, encoding="utf-8")
        os.replace(part, target)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
