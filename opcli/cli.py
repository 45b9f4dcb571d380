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
from opcli.errors import OpcliError, UsageError

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
        None, "-c", "--config", help="Config file (default: $OPCLI_CONFIG, ./opcli.yaml, user dir, built-in).",
        show_default=False),
    site: str | None = typer.Option(
        None, "-s", "--site", envvar="OPCLI_SITE", help="Site of the config to use (default: default_site).",
        show_default=False),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                 help="Print the version and exit."),
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
            except Exception as exc:  # a bug: say so in one line, traceback only on request
                if os.environ.get("OPCLI_DEBUG") or type(exc).__module__.startswith(("typer", "click")):
                    raise  # typer's own usage errors and exits keep their usual form
                _report(RuntimeError(f"internal error: {type(exc).__name__}: {exc} "
                                     "(set OPCLI_DEBUG=1 for a traceback)"))
                raise typer.Exit(1) from None

        return typer_app.command(name)(guarded)

    return register


# --- shared options ------------------------------------------------------------------------

JSON_OPT = typer.Option(False, "--json", help="Print JSON on stdout (see the README for its shape).")
VERBOSE_OPT = typer.Option(False, "-v", "--verbose", help="Show requests and replies on stderr (token masked).")
TIMEOUT_OPT = typer.Option(None, "--timeout", min=0.001, help="Seconds to wait (default: the site's timeout).",
                           show_default=False)
ATTACH_OPT = typer.Option(None, "--attach", help="A file to upload (streamed).", show_default=False,
                          dir_okay=False)


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


def _render_reply(out: Output, json_mode: bool, reply: Any, what: str) -> None:
    """Print a send/reply result: the reply body with --json, a short line otherwise; exit 1 on failure."""
    failure = reply.failure()
    if json_mode:
        out.json(reply.data if reply.is_json else None)
    elif failure is None:
        data = reply.data.get("data") if isinstance(reply.data, dict) else None
        detail = ""
        if isinstance(data, dict) and "message_id" in data:
            detail = f", message_id {data['message_id']}"
        out.line(f"{what}: HTTP {reply.status}{detail} ({reply.ms:.0f} ms)", style="green")
        if not reply.is_json and reply.body.strip():
            out.warn(f"the reply is {reply.describe_body()}")
    if failure is not None:
        from opcli.errors import RemoteError

        raise RemoteError(f"{reply.url} refused it: {failure}")


def _dry_run(out: Output, json_mode: bool, request: Any) -> None:
    if json_mode:
        out.json({**request.describe(), "curl": request.curl()})
        return
    info = request.describe()
    out.line(f"POST {info['url']}  ({info['encoding']})")
    for name, value in info["fields"]:
        out.line(f"  {name} = {value}")
    if info["file"]:
        f = info["file"]
        out.line(f"  {f['field']} = @{f['path']} ({f['size']} bytes, {f['content_type']})")
    out.line("")
    out.line("# the same with curl (set OPCLI_TOKEN to the site's token):")
    out.line(request.curl())
    out.note("dry run: nothing was sent")


# --- send ----------------------------------------------------------------------------------


@command()
def send(
    ctx: typer.Context,
    user: int | None = typer.Option(None, "--user", min=0, help="The site user who sends (user_id).",
                                       show_default=False),
    bot: int | None = typer.Option(None, "--bot", min=0, help="The bot who receives (contact_id).",
                                      show_default=False),
    message: str | None = typer.Option(None, "-m", "--message", help="Message text; - reads stdin.",
                                          show_default=False),
    photo: list[str] = typer.Option([], "--photo", help="URL of a photo (repeatable).", show_default=False),
    big: list[str] = typer.Option([], "--big", help="Thumbnail URL of the k-th --photo (repeatable).",
                                  show_default=False),
    attach: Path | None = ATTACH_OPT,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the request and a curl command; send nothing."),
    timeout: float | None = TIMEOUT_OPT,
    verbose: bool = VERBOSE_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Send a message_sent event to the panel, as the site does."""
    from opcli import client
    from opcli.output import Output

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
        _dry_run(out, json_out, request)
        return
    with client.make_client(config.site, timeout) as http:
        reply = client.send(http, request, _logger(out, verbose))
    _render_reply(out, json_out, reply, f"Sent to {request.url}")


def _photos(photos: list[str], bigs: list[str]) -> list[Any]:
    if len(bigs) > len(photos):
        raise UsageError(f"{len(bigs)} --big for {len(photos)} --photo: each --big is the thumbnail "
                         "of the --photo in the same position")
    from opcli.protocol import Photo

    for url in photos + bigs:
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"photo URL {url!r} must start with http:// or https:// (the panel fetches it)")
    return [Photo(file_url=url, big=bigs[k] if k < len(bigs) else url) for k, url in enumerate(photos)]


# --- listen ----------------------------------------------------------------------------------


@command()
def listen(
    ctx: typer.Context,
    host: str | None = typer.Option(None, "--host", help="Address to bind (default: listen.host, the site's "
                                       "loopback URLs, 127.0.0.1).", show_default=False),
    port: int | None = typer.Option(None, "--port", min=0, max=65535, help="Port; 0 picks a free one.",
                                       show_default=False),
    count: int | None = typer.Option(None, "--count", min=1, help="Exit after N calls to the endpoints "
                                        "(0 if all were accepted, 1 if any was rejected).", show_default=False),
    timeout: float | None = typer.Option(None, "--timeout", min=0.001, help="Seconds to run after the "
                                            "ready line; with --count, 124 when they did not all come.",
                                            show_default=False),
    journal: Path | None = typer.Option(None, "--journal", help="Append every call as a JSON line to FILE.",
                                           show_default=False, dir_okay=False),
    save_dir: Path | None = typer.Option(None, "--save-dir", help="Keep uploaded files in DIR "
                                            "(safe generated names).", show_default=False, file_okay=False),
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

    outcome = serve(config, host=host, port=port, count=count, timeout=timeout, journal=journal,
                    save_dir=save_dir, json_mode=json_out, human=out.call, announce=announce)
    out.note(f"Stopped ({outcome.reason}): {outcome.counted} calls, {outcome.rejected} rejected")
    raise typer.Exit(outcome.exit_code)


# --- config --------------------------------------------------------------------------------


@command(config_app, "init")
def config_init(
    path: Path = typer.Argument(Path("opcli.yaml"), help="Where to write it.", dir_okay=False),
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
    shown = {"file": config.path, "site": config.site.name, **config.site.masked(),
             "listen": {"host": listen.host, "port": listen.port, "max_body_bytes": listen.max_body_bytes,
                        "unknown_user": listen.unknown_user, "users": sorted(listen.users),
                        "media": sorted(listen.media)}}
    out = Output(json_out)
    if json_out:
        out.json(shown)
    else:
        import yaml

        out.line(yaml.safe_dump(shown, sort_keys=False, allow_unicode=True).rstrip())


def main() -> None:
    """The console script."""
    app()
