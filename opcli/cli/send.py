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
    id_option,
    logger,
    one_file,
    photos_of,
    read_message,
    reply_outcome,
    state,
)
from opcli.errors import OpcliError, RemoteError, UsageError, raise_on


def send(
    ctx: typer.Context,
    user: Annotated[int | None, id_option("--user", "The site user who sends (user_id).")] = None,
    bot: Annotated[int | None, id_option("--bot", "The bot who receives (contact_id).")] = None,
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
    """Send a message from a user to a bot, as the site does.

    POSTs action=message_sent to the panel's endpoint (panel_url), multipart. --json prints the
    panel's reply body (null when it is not JSON). With --batch FILE, sends every message of a JSON
    Lines or CSV file ({"user", "bot", "message", "photos", "attach"} per line) and prints, with
    --json, one result line per message and a summary line.

    \b
    Examples:
      opcli send --user 42 --bot 7 -m "Hello!"
      opcli send --user 42 --bot 7 -m "Look" --photo https://cdn.example.com/1.jpg
      opcli send --user 42 --bot 7 --attach examples/photo.jpg --dry-run
      echo "Hi from a pipe" | opcli send --user 42 --bot 7 -m -
      opcli send --batch examples/messages.jsonl --json > results.jsonl
    """
    from opcli import client

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
            raise UsageError(f"--batch takes every message from FILE; drop {', '.join(given)}")
        _send_batch(ctx, batch, concurrency, rate, retries, timeout, json_out)
        return
    if user is None or bot is None:
        raise UsageError("both --user and --bot are required (or --batch FILE)")
    photos = photos_of(photo, big)
    st = state(ctx)
    out = st.output(json_out)
    file = one_file(attach)
    text = read_message(message, out)
    if not text and not photos and file is None:
        raise UsageError("nothing to send: give -m TEXT, --photo URL or --attach FILE")
    site = st.load().site
    if dry_run:
        out.request(client.message_sent(site, user, bot, text or "", photos, file))
        return
    reply = client.send_message(site, user, bot, text or "", photos, file, timeout=timeout, log=logger(out, verbose))
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

    from opcli.batch import Summary, count_lines, send_batch

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
            redirect_stdout=False,  # results go to stdout as they are, whatever stderr is
            redirect_stderr=False,
        )

    held: list[dict[str, Any]] | None = []  # result lines held back until the panel answers one (exit 3: none)

    def on_result(result: dict[str, Any]) -> None:
        nonlocal held
        if json_out:
            if held is not None and result["status"] is None:
                held.append(result)
                return
            for line in held or ():
                out.json(line)
            held = None
            out.json(result)
        elif not result["ok"]:
            out.warn(f"line {result['line']}: {result['error'] or 'HTTP ' + str(result['status'])}")
        if task is not None:
            progress.advance(task)

    summary = Summary()
    report = json_out  # the summary's JSON line; the human one goes to stderr whatever happens
    # SIGTERM stops the batch as Ctrl-C does (summary, then exit 143); a second one during the
    # summary kills at once
    import signal

    undo_signals = raise_on(signal.SIGTERM)
    try:
        with progress:
            if st.env.stderr_tty:
                task = progress.add_task("send", total=count_lines(source))
            send_batch(
                site,
                source,
                concurrency=concurrency,
                rate=rate,
                retries=retries,
                timeout=timeout,
                stdin=st.env.stdin,
                on_result=on_result,
                summary=summary,
            )
    except BrokenPipeError:
        report = False
        raise
    except OpcliError as exc:
        if exc.exit_code == 2:  # nothing was sent (a missing file, a bad CSV header): stdout stays empty
            report = None
        elif exc.exit_code == 3:  # nothing reached the panel: stdout stays empty, the summary on stderr
            report, held = False, None
        raise
    finally:  # on every other exit (Ctrl-C, SIGTERM, exit 3, a closed stdout): what was done, and where to resume
        undo_signals()
        if report:
            for line in held or ():
                out.json(line)
        if report is not None:
            _summary(out, summary, report)
    if summary.failed:
        raise RemoteError(f"{summary.failed} of {summary.total} messages failed")


def _summary(out: Any, summary: Any, json_line: bool) -> None:
    shown = summary.as_dict()
    if json_line:
        out.json({"summary": shown})
    invalid = f" ({summary.invalid} invalid line{'s' * (summary.invalid != 1)})" if summary.invalid else ""
    rest = f"; {summary.not_attempted} not attempted" if summary.not_attempted else ""
    if summary.in_flight:  # sent, or being sent, when the run stopped: delivered or not, nobody knows
        lines = ", ".join(map(str, summary.unknown_lines))
        rest += f"; {len(summary.in_flight)} in flight when it stopped, maybe delivered (lines {lines})"
    latency = (
        f"; latency p50 {shown['p50_ms']} ms, p95 {shown['p95_ms']} ms, p99 {shown['p99_ms']} ms"
        if summary.latencies
        else ""
    )
    out.note(
        f"Sent {summary.sent} of {summary.total} messages in {shown['seconds']} s "
        f"({shown['messages_per_second']} msg/s); {summary.failed} failed{invalid}{rest}; "
        f"every line up to {summary.through_line} done{latency}"
    )
