"""``opcli send``: the site's ``message_sent`` to the panel, one message or a batch."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from opcli.cli.common import (
    Attach,
    Bigs,
    DryRun,
    Json,
    Message,
    Photos,
    Timeout,
    Verbose,
    logger,
    photos_of,
    read_message,
    reply_outcome,
    state,
)
from opcli.errors import RemoteError, UsageError


def send(
    ctx: typer.Context,
    user: Annotated[
        int | None,
        typer.Option("--user", metavar="ID", min=0, help="The site user who sends (user_id).", show_default=False),
    ] = None,
    bot: Annotated[
        int | None,
        typer.Option("--bot", metavar="ID", min=0, help="The bot who receives (contact_id).", show_default=False),
    ] = None,
    message: Message = None,
    photo: Photos = None,
    big: Bigs = None,
    attach: Attach = None,
    dry_run: DryRun = False,
    timeout: Timeout = None,
    verbose: Verbose = False,
    json_out: Json = False,
    batch: Annotated[
        str | None,
        typer.Option(
            "--batch",
            metavar="FILE",
            help="Send every message of FILE (JSON Lines or CSV; - reads stdin), concurrently.",
            show_default=False,
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", metavar="N", min=1, max=1000, help="With --batch: requests in flight.")
    ] = 8,
    rate: Annotated[
        float | None,
        typer.Option(
            "--rate", metavar="R", min=0.001, help="With --batch: at most R messages per second.", show_default=False
        ),
    ] = None,
    retries: Annotated[
        int,
        typer.Option(
            "--retries",
            metavar="N",
            min=0,
            max=20,
            help="With --batch: retry connection failures (never a request that was sent) N times, with backoff.",
        ),
    ] = 0,
) -> None:
    """Send a message_sent event to the panel, as the site does (or many, with --batch)."""
    from opcli import client
    from opcli.protocol import parse_id

    photo, big = photo or [], big or []
    if batch is not None:
        given = [
            flag
            for flag, value in (
                ("--user", user),
                ("--bot", bot),
                ("-m", message),
                ("--photo", photo),
                ("--big", big),
                ("--attach", attach),
                ("--dry-run", dry_run),
                ("-v", verbose),
            )
            if value is not None and value is not False and value != []
        ]
        if given:
            raise typer.BadParameter(
                f"--batch takes every message from FILE; drop {', '.join(given)}", param_hint="'--batch'"
            )
        _send_batch(ctx, batch, concurrency, rate, retries, timeout, json_out)
        return
    if user is None or bot is None:
        raise typer.BadParameter("both --user and --bot are required", param_hint="'--user' / '--bot'")
    photos = photos_of(photo, big)
    try:
        user, bot = parse_id(user, "--user"), parse_id(bot, "--bot")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    st = state(ctx)
    text = read_message(message, st.env)
    attach = client.check_file(attach)
    if not text and not photos and attach is None:
        raise UsageError("nothing to send: give -m TEXT, --photo URL or --attach FILE")
    out = st.output(json_out)
    site = st.load().site
    if dry_run:
        out.request(client.message_sent(site, user, bot, text or "", photos, attach))
        return
    reply = client.send_message(site, user, bot, text or "", photos, attach, timeout=timeout, log=logger(out, verbose))
    reply_outcome(out, reply, f"Sent to {reply.url}")


def _send_batch(
    ctx: typer.Context,
    source: str,
    concurrency: int,
    rate: float | None,
    retries: int,
    timeout: float | None,
    json_out: bool,
) -> None:
    from contextlib import nullcontext

    from opcli.batch import count_lines, send_batch

    st = state(ctx)
    out = st.output(json_out)
    site = st.load().site
    progress: Any = nullcontext()
    task = None
    if st.env.stderr_tty:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(
            TextColumn("sending"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=out.err,
            transient=True,
        )
    with progress:
        if st.env.stderr_tty:
            task = progress.add_task("send", total=count_lines(source))

        def on_result(result: dict[str, Any]) -> None:
            if json_out:
                out.json(result)
            elif not result["ok"]:
                out.warn(f"line {result['line']}: {result['error'] or 'HTTP ' + str(result['status'])}")
            if task is not None:
                progress.advance(task)

        summary = send_batch(
            site,
            source,
            concurrency=concurrency,
            rate=rate,
            retries=retries,
            timeout=timeout,
            stdin=st.env.stdin,
            on_result=on_result,
        )
    shown = summary.as_dict()
    if json_out:
        out.json({"summary": shown})
    invalid = f" ({summary.invalid} invalid line{'s' * (summary.invalid != 1)})" if summary.invalid else ""
    out.note(
        f"Sent {summary.sent} of {summary.total} messages in {shown['seconds']} s "
        f"({shown['messages_per_second']} msg/s); {summary.failed} failed{invalid}; latency p50 "
        f"{shown['p50_ms']} ms, p95 {shown['p95_ms']} ms, p99 {shown['p99_ms']} ms"
    )
    if summary.failed:
        raise RemoteError(f"{summary.failed} of {summary.total} messages failed")
