"""The command line: parse options, call one core function, render what it returns.

Heavy modules (httpx, starlette, uvicorn, pydantic) are imported inside the commands, so
``opcli --version`` and ``--help`` stay fast.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from opcli import __version__
from opcli.errors import OpcliError, RemoteError, UsageError

if TYPE_CHECKING:
    from opcli.config import Config
    from opcli.output import Output

app = typer.Typer(
    name="opcli",
    help="Test and script integrations with the Operator API (site <-> operator panel).",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(help="Write, validate and show the config.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@dataclass
class State:
    config_path: Path | None
    site: str | None

    def load(self, listen: bool = False) -> Config:
        from opcli.config import load_config

        return load_config(self.config_path, self.site, listen=listen)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"opcli {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None,
        "-c",
        "--config",
        metavar="PATH",
        help="Config file (default: $OPCLI_CONFIG, ./opcli.yaml, user dir, built-in).",
        show_default=False,
    ),
    site: str | None = typer.Option(
        None,
        "-s",
        "--site",
        metavar="NAME",
        envvar="OPCLI_SITE",
        help="Site of the config to use (default: default_site).",
        show_default=False,
    ),
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_version, help="Print the version and exit."
    ),
) -> None:
    ctx.obj = State(config, site)


def _report(exc: BaseException) -> None:
    from opcli.output import Output

    Output().error(str(exc))


def command(typer_app: typer.Typer = app, name: str | None = None) -> Any:
    """Register a command whose OpcliError becomes ``opcli: error: ...`` and its exit code."""

    def register(fn: Any) -> Any:
        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except OpcliError as exc:
                if os.environ.get("OPCLI_DEBUG"):
                    raise
                _report(exc)
                raise typer.Exit(exc.exit_code) from None
            except KeyboardInterrupt:
                raise typer.Exit(130) from None
            except BrokenPipeError:  # stdout's reader went away (| head): stop quietly, as Unix tools do
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise typer.Exit(141) from None
            except Exception as exc:  # a bug: say so in one line, traceback only on request
                if os.environ.get("OPCLI_DEBUG") or type(exc).__module__.startswith(("typer", "click")):
                    raise  # typer's own usage errors and exits keep their usual form
                _report(
                    RuntimeError(f"internal error: {type(exc).__name__}: {exc} (set OPCLI_DEBUG=1 for a traceback)")
                )
                raise typer.Exit(1) from None

        return typer_app.command(name)(guarded)

    return register


# --- shared options ------------------------------------------------------------------------

JSON_OPT = typer.Option(False, "--json", help="Print JSON on stdout (see the README for its shape).")
VERBOSE_OPT = typer.Option(False, "-v", "--verbose", help="Show requests and replies on stderr (token masked).")
TIMEOUT_OPT = typer.Option(
    None,
    "--timeout",
    metavar="SECONDS",
    min=0.001,
    help="Seconds to wait (default: the site's timeout).",
    show_default=False,
)
ATTACH_OPT = typer.Option(
    None, "--attach", metavar="FILE", help="A file to upload (streamed).", show_default=False, dir_okay=False
)


def _message(text: str | None) -> str | None:
    """``-m -`` reads stdin as UTF-8 and strips one trailing newline."""
    if text != "-":
        return text
    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"the message on stdin is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    return text[:-1] if text.endswith("\n") else text


def _logger(out: Output, verbose: bool) -> Any:
    return (lambda line: out.err.print(line, markup=False, style="dim")) if verbose else None


def _reply_outcome(out: Output, reply: Any, what: str) -> None:
    """Show a send/reply result; a failure is exit 1."""
    out.reply(reply, what)
    failure = reply.failure()
    if failure is not None:
        raise RemoteError(f"{reply.url} refused it: {failure}")


def _judged_outcome(out: Output, kind: str, judged: Any) -> None:
    """Show a user-info/user-media reply and what the contract says of it; violations are exit 1."""
    out.webhook_reply(kind, judged.data)
    out.findings(judged.findings)
    if judged.violations:
        n = len(judged.violations)
        raise RemoteError(f"{judged.reply.url}: the reply breaks the contract ({n} violation{'s' * (n != 1)})")


# --- send ----------------------------------------------------------------------------------


@command()
def send(
    ctx: typer.Context,
    user: int | None = typer.Option(
        None, "--user", metavar="ID", min=0, help="The site user who sends (user_id).", show_default=False
    ),
    bot: int | None = typer.Option(
        None, "--bot", metavar="ID", min=0, help="The bot who receives (contact_id).", show_default=False
    ),
    message: str | None = typer.Option(
        None, "-m", "--message", metavar="TEXT", help="Message text; - reads stdin.", show_default=False
    ),
    photo: list[str] = typer.Option(
        [], "--photo", metavar="URL", help="URL of a photo (repeatable).", show_default=False
    ),
    big: list[str] = typer.Option(
        [], "--big", metavar="URL", help="Thumbnail URL of the k-th --photo (repeatable).", show_default=False
    ),
    attach: Path | None = ATTACH_OPT,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the request and a curl command; send nothing."),
    timeout: float | None = TIMEOUT_OPT,
    verbose: bool = VERBOSE_OPT,
    json_out: bool = JSON_OPT,
    batch: str | None = typer.Option(
        None,
        "--batch",
        help="Send every message of FILE (JSON Lines or CSV; - reads stdin), concurrently.",
        show_default=False,
        metavar="FILE",
    ),
    concurrency: int = typer.Option(
        8, "--concurrency", metavar="N", min=1, max=1000, help="With --batch: requests in flight."
    ),
    rate: float | None = typer.Option(
        None, "--rate", metavar="R", min=0.001, help="With --batch: at most R messages per second.", show_default=False
    ),
    retries: int = typer.Option(
        0,
        "--retries",
        metavar="N",
        min=0,
        max=20,
        help="With --batch: retry connection failures (never a request that was sent) N times, with backoff.",
    ),
) -> None:
    """Send a message_sent event to the panel, as the site does (or many, with --batch)."""
    from opcli import client
    from opcli.output import Output

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
            if value
        ]
        if given:
            raise typer.BadParameter(
                f"--batch takes every message from FILE; drop {', '.join(given)}", param_hint="'--batch'"
            )
        _send_batch(ctx, batch, concurrency, rate, retries, timeout, json_out)
        return
    if user is None or bot is None:
        raise typer.BadParameter("both --user and --bot are required", param_hint="'--user' / '--bot'")
    text = _message(message)
    photos = _photos(photo, big)
    attach = client.check_file(attach)
    if not text and not photos and attach is None:
        raise UsageError("nothing to send: give -m TEXT, --photo URL or --attach FILE")
    out = Output(json_out)
    config = ctx.obj.load()
    request = client.message_sent(config.site, user, bot, text or "", photos, attach)
    if dry_run:
        out.request(request)
        return
    with client.make_client(config.site, timeout) as http:
        reply = client.send(http, request, _logger(out, verbose))
    _reply_outcome(out, reply, f"Sent to {request.url}")


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

    from opcli.batch import send_batch
    from opcli.output import Output

    out = Output(json_out)
    site = ctx.obj.load().site
    progress = nullcontext()
    if sys.stderr.isatty():
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
        task = progress.add_task("send", total=_count_lines(source)) if sys.stderr.isatty() else None

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
            stdin=sys.stdin,
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


def _count_lines(source: str) -> int | None:
    """The number of input lines, for the progress bar (None for stdin)."""
    if source == "-":
        return None
    try:
        with open(source, "rb") as stream:
            lines = sum(1 for line in stream if line.strip())
    except OSError:
        return None
    return lines - 1 if source.lower().endswith(".csv") else lines


def _photos(photos: list[str], bigs: list[str]) -> list[Any]:
    if len(bigs) > len(photos):
        raise UsageError(
            f"{len(bigs)} --big for {len(photos)} --photo: each --big is the thumbnail "
            "of the --photo in the same position"
        )
    from opcli.protocol import Photo

    for url in photos + bigs:
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"photo URL {url!r} must start with http:// or https:// (the panel fetches it)")
    return [Photo(file_url=url, big=bigs[k] if k < len(bigs) else url) for k, url in enumerate(photos)]


# --- listen ----------------------------------------------------------------------------------


@command()
def listen(
    ctx: typer.Context,
    host: str | None = typer.Option(
        None,
        "--host",
        metavar="HOST",
        help="Address to bind (default: listen.host, the site's loopback URLs, 127.0.0.1).",
        show_default=False,
    ),
    port: int | None = typer.Option(
        None, "--port", metavar="PORT", min=0, max=65535, help="Port; 0 picks a free one.", show_default=False
    ),
    count: int | None = typer.Option(
        None,
        "--count",
        metavar="N",
        min=1,
        help="Exit after N calls to the endpoints (0 if all were accepted, 1 if any was rejected).",
        show_default=False,
    ),
    timeout: float | None = typer.Option(
        None,
        "--timeout",
        metavar="SECONDS",
        min=0.001,
        help="Seconds to run after the ready line; with --count, 124 when they did not all come.",
        show_default=False,
    ),
    journal: Path | None = typer.Option(
        None,
        "--journal",
        metavar="FILE",
        help="Append every call as a JSON line to FILE.",
        show_default=False,
        dir_okay=False,
    ),
    save_dir: Path | None = typer.Option(
        None,
        "--save-dir",
        metavar="DIR",
        help="Keep uploaded files in DIR (safe generated names).",
        show_default=False,
        file_okay=False,
    ),
    json_out: bool = typer.Option(False, "--json", help="Write every call as a JSON line on stdout."),
) -> None:
    """Serve the site's webhooks and the panel's endpoint locally; print every call."""
    from opcli.listener import serve
    from opcli.output import Output

    config = ctx.obj.load(listen=True)
    out = Output(json_out)

    def announce(url: str, endpoints: dict[str, str]) -> None:
        out.note(f"Ready: {url}", style="bold")
        if not json_out:
            for kind, endpoint in endpoints.items():
                out.note(f"  {kind:<13} POST {endpoint}")
        sys.stderr.flush()

    outcome = serve(
        config,
        host=host,
        port=port,
        count=count,
        timeout=timeout,
        journal=journal,
        save_dir=save_dir,
        json_mode=json_out,
        human=out.call,
        announce=announce,
    )
    out.note(f"Stopped ({outcome.reason}): {outcome.counted} calls, {outcome.rejected} rejected")
    raise typer.Exit(outcome.exit_code)


# --- the panel's side: user-info, user-media, reply, check -----------------------------------


def _fetch(ctx: typer.Context, kind: str, user_id: int, timeout: float | None, verbose: bool, json_out: bool) -> None:
    from opcli import client
    from opcli.output import Output
    from opcli.panel import fetch

    out = Output(json_out)
    site = ctx.obj.load().site
    with client.make_client(site, timeout) as http:
        judged = fetch(http, site, kind, user_id, _logger(out, verbose))
    _judged_outcome(out, kind, judged)


@command(name="user-info")
def user_info(
    ctx: typer.Context,
    user_id: int = typer.Argument(..., min=0, metavar="ID", help="The user whose profile the operator opens."),
    timeout: float | None = TIMEOUT_OPT,
    verbose: bool = VERBOSE_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Call the site's user-info webhook as the panel does and check the reply."""
    _fetch(ctx, "user_info", user_id, timeout, verbose, json_out)


@command(name="user-media")
def user_media(
    ctx: typer.Context,
    user_id: int = typer.Argument(..., min=0, metavar="ID", help="The user whose private media the operator opens."),
    timeout: float | None = TIMEOUT_OPT,
    verbose: bool = VERBOSE_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Call the site's user-media webhook as the panel does and check the reply."""
    _fetch(ctx, "user_media", user_id, timeout, verbose, json_out)


@command()
def reply(
    ctx: typer.Context,
    bot: int = typer.Option(
        ..., "--bot", metavar="ID", min=0, help="The bot who replies (user_id).", show_default=False
    ),
    user: int = typer.Option(
        ..., "--user", metavar="ID", min=0, help="The site user who receives it (contact_id).", show_default=False
    ),
    message: str | None = typer.Option(
        None, "-m", "--message", metavar="TEXT", help="Message text; - reads stdin.", show_default=False
    ),
    attach: Path | None = ATTACH_OPT,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the request and a curl command; send nothing."),
    timeout: float | None = TIMEOUT_OPT,
    verbose: bool = VERBOSE_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Send an operator's reply to the site's send-message webhook, as the panel does."""
    from opcli import client
    from opcli.output import Output
    from opcli.panel import operator_reply

    text = _message(message)
    attach = client.check_file(attach)
    if not text and attach is None:
        raise UsageError("nothing to send: give -m TEXT or --attach FILE")
    out = Output(json_out)
    site = ctx.obj.load().site
    request = operator_reply(site, bot, user, text or "", attach)
    if dry_run:
        out.request(request)
        return
    with client.make_client(site, timeout) as http:
        answer = client.send(http, request, _logger(out, verbose))
    _reply_outcome(out, answer, f"Delivered to {request.url}")


@command()
def check(
    ctx: typer.Context,
    user: int | None = typer.Option(
        None, "--user", metavar="ID", min=0, help="A user the site knows (default: check.user).", show_default=False
    ),
    bot: int | None = typer.Option(
        None, "--bot", metavar="ID", min=0, help="A bot for --send (default: check.bot).", show_default=False
    ),
    send_messages: bool = typer.Option(False, "--send", help="Also check send-message: delivers real messages."),
    junit: Path | None = typer.Option(
        None, "--junit", metavar="FILE", help="Write a JUnit XML report to FILE.", dir_okay=False, show_default=False
    ),
    timeout: float | None = TIMEOUT_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Run the conformance suite against the site's three webhooks."""
    from opcli.output import Output

    out = Output(json_out)
    site = ctx.obj.load().site
    user = user if user is not None else site.check.get("user")
    bot = bot if bot is not None else site.check.get("bot")
    if user is None or (send_messages and bot is None):
        missing = "--user" if user is None else "--bot"
        raise UsageError(f"give {missing} or set check.{missing[2:]} for site '{site.name}' in the config")
    _run_check(out, site, user, bot or 0, send_messages, timeout, junit)


def _run_check(
    out: Output, site: Any, user: int, bot: int, send_messages: bool, timeout: float | None, junit: Path | None = None
) -> None:
    """Run the suite, show it (rows as they finish, or the JSON report), write JUnit; failures are exit 1."""
    from opcli import client
    from opcli.conformance import junit_xml, run_checks

    with client.make_client(site, timeout) as http:
        report = run_checks(http, site, user, bot, send_messages, on_check=None if out.json_mode else out.check_row)
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


# --- demo --------------------------------------------------------------------------------


@command()
def demo(ctx: typer.Context) -> None:
    """Start a listener on a free port and run send, user-info, user-media, reply and check against it."""
    import dataclasses
    import shlex
    import tempfile

    from opcli import client
    from opcli.conformance import TINY_PNG
    from opcli.listener import InThread, create_app, routes_of
    from opcli.output import Output
    from opcli.panel import fetch, operator_reply
    from opcli.protocol import mask_token

    config = ctx.obj.load(listen=True)
    out = Output()
    calls: list[dict[str, Any]] = []
    user, bot = config.site.check.get("user", 42), config.site.check.get("bot", 7)
    failed: list[str] = []

    def step(title: str, command_line: str, run: Any) -> None:
        out.line("")
        out.line(f"== {title}: opcli {command_line}", style="bold cyan")
        try:
            run()
        except OpcliError as exc:
            out.error(str(exc))
            failed.append(title)

    with (
        tempfile.TemporaryDirectory(prefix="opcli-demo-") as tmp,
        InThread(create_app(config, on_call=calls.append)) as server,
    ):
        paths = {kind: path for path, kind in routes_of(config.site).items()}
        site = dataclasses.replace(
            config.site,
            panel_url=server.url + paths.get("message_sent", "/"),
            webhooks={k: server.url + p for k, p in paths.items() if k != "message_sent"},
        )
        out.line(f"Listener ready: {server.url} (site '{site.name}', token {mask_token(site.token)})", style="bold")
        photo = Path(tmp) / "hello.png"
        photo.write_bytes(TINY_PNG)
        text, photo_url, answer = "Hello from opcli demo!", "https://cdn.example.com/demo/1.jpg", "Hi! How are you?"
        message = client.message_sent(site, user, bot, text, _photos([photo_url], []), photo)
        with client.make_client(site) as http:
            step(
                "the site sends a message to the panel",
                f"send --user {user} --bot {bot} -m {shlex.quote(text)} --photo {photo_url} --attach {photo}",
                lambda: _reply_outcome(out, client.send(http, message), f"Sent to {message.url}"),
            )
            for kind in ("user_info", "user_media"):
                step(
                    f"the panel opens the user's {'profile' if kind == 'user_info' else 'private media'}",
                    f"{kind.replace('_', '-')} {user}",
                    lambda kind=kind: _judged_outcome(out, kind, fetch(http, site, kind, user)),
                )
            reply = operator_reply(site, bot, user, answer)
            step(
                "an operator replies",
                f"reply --bot {bot} --user {user} -m {shlex.quote(answer)}",
                lambda: _reply_outcome(out, client.send(http, reply), f"Delivered to {reply.url}"),
            )
        step("the conformance suite", "check --send", lambda: _run_check(out, site, user, bot, True, None))
    out.line("")
    if failed:
        out.error(f"demo: {len(failed)} of 5 steps failed: {', '.join(failed)}")
        raise typer.Exit(1)
    rejected = sum(1 for c in calls if c["status"] >= 400)
    out.line(
        f"Demo finished: all 5 steps worked. The listener received {len(calls)} calls ({rejected} rejected on "
        "purpose by the token and bad-id checks).",
        style="bold green",
    )
    out.line("Next: run `opcli listen` in one terminal and the same commands in another.")


# --- config --------------------------------------------------------------------------------


@command(config_app, "init")
def config_init(
    path: Path = typer.Argument(Path("opcli.yaml"), help="Where to write it.", dir_okay=False, metavar="[PATH]"),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a commented starter config."""
    from opcli.config import SAMPLE

    if path.exists() and not force:
        raise UsageError(f"{path} exists; use --force to overwrite it")
    try:
        path.write_text(SAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    from opcli.output import Output

    Output().note(f"wrote {path}; check it with: opcli -c {path} config validate")


@command(config_app, "validate")
def config_validate(ctx: typer.Context) -> None:
    """Check the config: every problem as FILE:LINE:COL, exit 2 when any."""
    from opcli.output import Output

    config = ctx.obj.load(listen=True)
    Output().line(f"{config.path}: OK (sites: {', '.join(config.site_names)}; selected: {config.site.name})")


@command(config_app, "show")
def config_show(ctx: typer.Context, json_out: bool = JSON_OPT) -> None:
    """Show the effective config of the selected site, tokens masked."""
    from opcli.output import Output

    config = ctx.obj.load(listen=True)
    listen = config.listen
    shown = {
        "file": config.path,
        "site": config.site.name,
        **config.site.masked(),
        "listen": {
            "host": listen.host,
            "port": listen.port,
            "max_body_bytes": listen.max_body_bytes,
            "unknown_user": listen.unknown_user,
            "users": sorted(listen.users),
            "media": sorted(listen.media),
        },
    }
    out = Output(json_out)
    if json_out:
        out.json(shown)
    else:
        import yaml

        out.line(yaml.safe_dump(shown, sort_keys=False, allow_unicode=True).rstrip())


def main() -> None:
    """The console script."""
    app()
