"""What every command shares: the streams, the config, the options, and the one catch site.

``guard`` is the only place where an ``OpcliError`` becomes ``opcli: error: ...`` on stderr and
an exit code; commands raise, they never print errors or exit themselves.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from opcli.errors import OpcliError, RemoteError, Signalled, UsageError

if TYPE_CHECKING:
    from opcli.cli.render import Output
    from opcli.config import Config


@dataclass
class Env:
    """The streams of a run and what they are connected to; tests pass a terminal of their own."""

    stdout: TextIO
    stderr: TextIO
    stdin: TextIO
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)

    @classmethod
    def current(cls) -> Env:
        """The process's streams as they are now (CliRunner swaps them before each run)."""
        return cls(sys.stdout, sys.stderr, sys.stdin)

    @staticmethod
    def is_tty(stream: Any) -> bool:
        try:
            return bool(stream.isatty())
        except (AttributeError, ValueError):  # no isatty, or a closed stream
            return False

    @property
    def stdout_tty(self) -> bool:
        return self.is_tty(self.stdout)

    @property
    def stderr_tty(self) -> bool:
        return self.is_tty(self.stderr)

    def color(self, stream: Any) -> bool:
        """Colour only on a terminal, and never with ``NO_COLOR`` set."""
        return self.is_tty(stream) and "NO_COLOR" not in self.environ


@dataclass
class State:
    """What the global options chose: the config file and site, the streams, the secrets to redact."""

    config_path: Path | None = None
    site: str | None = None
    env: Env = field(default_factory=Env.current)
    config: Config | None = None  # given instead of a file: `opcli demo` runs commands on its own listener
    secrets: set[str] = field(default_factory=set)  # token values: redacted in everything printed or written

    def load(self, listen: bool = False) -> Config:
        if self.config is None:
            from opcli.config import load_config

            config = load_config(self.config_path, self.site, listen=listen)
        else:
            config = self.config
        self.secrets.add(config.site.token)
        return config

    def output(self, json_mode: bool = False, known_secrets: bool = False) -> Output:
        """Where the command writes; ``known_secrets``: first learn the token, if no config was loaded yet.

        (An error in the command's options comes before it loads its config: it may quote the token.)
        """
        from opcli.cli.render import Output

        if known_secrets and not self.secrets:
            self.secrets.update(self._tokens())
        return Output(self.env, json_mode, self.secrets)

    def _tokens(self) -> set[str]:
        """``$OPCLI_TOKEN``, and the token of the site the command would use (else of the default site)."""
        from opcli.config import load_config

        tokens = {self.env.environ.get("OPCLI_TOKEN") or ""}
        for site in dict.fromkeys([self.site, None]):
            try:
                config = self.config if self.config is not None else load_config(self.config_path, site)
            except Exception:  # noqa: BLE001 - a config that does not load tells its own error, token-free
                continue
            tokens.add(config.site.token)
            break
        return tokens - {""}


def guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The one catch site: OpcliError -> ``opcli: error: ...`` and its exit code, never a traceback."""

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OpcliError as exc:
            if os.environ.get("OPCLI_DEBUG"):
                raise
            report(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except Signalled as exc:  # SIGTERM, where a command turned it into an exception
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except BrokenPipeError:  # stdout's reader went away (| head): stop quietly, as Unix tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(141) from None
        except Exception as exc:  # a bug: say so in one line, traceback only on request
            if os.environ.get("OPCLI_DEBUG") or type(exc).__module__.startswith(("typer", "click")):
                raise  # typer's own usage errors and exits keep their usual form
            report(f"internal error: {type(exc).__name__}: {exc} (set OPCLI_DEBUG=1 for a traceback)")
            raise typer.Exit(1) from None

    return guarded


def report(text: str, ctx: typer.Context | None = None) -> None:
    """``opcli: error: TEXT`` on stderr, with the running command's token redacted (``ctx``: the command's)."""
    from typer._click.globals import get_current_context

    ctx = ctx or get_current_context(silent=True)
    (state(ctx) if ctx is not None else State()).output(known_secrets=True).error(text)


def state(ctx: typer.Context) -> State:
    """The run's State (the root callback sets it; a bare command gets the defaults)."""
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State()
    return root.obj


# --- shared options ------------------------------------------------------------------------


def _id(value: Any) -> int:
    """The ``parser`` of id options: the protocol's one id rule (0 to 2^63-1)."""
    from opcli.protocol import id_of

    return id_of(value)


def id_option(name: str, help: str) -> Any:
    """An id option (``--user``, ``--bot``): checked by the protocol's id rule, as ``send --batch`` does."""
    return typer.Option(name, metavar="ID", parser=_id, help=help, show_default=False)


def id_argument(help: str) -> Any:
    """An id argument (``user-info ID``), checked by the protocol's id rule."""
    return typer.Argument(metavar="ID", parser=_id, help=help, show_default=False)


Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (shape: see above).")]
Verbose = Annotated[bool, typer.Option("-v", "--verbose", help="Show requests and replies on stderr (token masked).")]
Timeout = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        metavar="SECONDS",
        min=0.001,
        help="Seconds to wait (default: the site's timeout).",
        show_default=False,
    ),
]
Attach = Annotated[
    list[Path] | None,
    typer.Option("--attach", metavar="FILE", help="A file to upload (streamed); one per message.", show_default=False),
]
Message = Annotated[
    str | None,
    typer.Option("-m", "--message", metavar="TEXT", help="Message text; - reads stdin.", show_default=False),
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the request and a curl command; send nothing.")]
Photos = Annotated[
    list[str] | None,
    typer.Option("--photo", metavar="URL", help="URL of a photo (repeatable).", show_default=False),
]
Bigs = Annotated[
    list[str] | None,
    typer.Option("--big", metavar="URL", help="Thumbnail URL of the k-th --photo (repeatable).", show_default=False),
]


# --- what several commands do --------------------------------------------------------------


def one_file(paths: list[Path] | None) -> Path | None:
    """The ``--attach`` file, checked before anything is sent; a repeated ``--attach`` is refused."""
    from opcli.client import check_file

    if paths and len(paths) > 1:
        raise UsageError(f"--attach given {len(paths)} times: a message carries one file")
    return check_file(paths[0] if paths else None)


def read_message(text: str | None, out: Output) -> str | None:
    """``-m -`` reads stdin as UTF-8 and strips one trailing newline (with a hint when stdin is a terminal)."""
    if text != "-":
        return text
    stdin = out.env.stdin
    if out.env.is_tty(stdin):
        out.note("Type the message, then press Ctrl-D on a new line (Ctrl-C to cancel).", style="dim")
    data = stdin.buffer.read() if hasattr(stdin, "buffer") else stdin.read().encode("utf-8")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"the message on stdin is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    return text[:-1] if text.endswith("\n") else text


def photos_of(photo: list[str], big: list[str]) -> list[Any]:
    """The photos of ``--photo``/``--big``: the k-th ``--big`` is the thumbnail of the k-th ``--photo``."""
    import itertools

    from opcli.protocol import make_photos

    if len(big) > len(photo):
        raise UsageError(
            f"{len(big)} --big for {len(photo)} --photo: each --big is the thumbnail "
            "of the --photo in the same position"
        )
    try:
        return make_photos(itertools.zip_longest(photo, big))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def logger(out: Output, verbose: bool) -> Callable[[str], None] | None:
    """What ``-v`` writes to: dim lines on stderr, token redacted."""
    return out.verbose if verbose else None


def reply_outcome(out: Output, reply: Any, what: str) -> None:
    """Show a send/reply result; a failure is exit 1."""
    out.reply(reply, what)
    failure = reply.failure()
    if failure is not None:
        raise RemoteError(f"{reply.url} refused it: {failure}")


def judged_outcome(out: Output, kind: str, judged: Any) -> None:
    """Show a user-info/user-media reply and what the contract says of it; violations are exit 1.

    A non-2xx or non-JSON reply shows no profile: the error says what came instead (with --json,
    stdout still holds what the site sent).
    """
    reply = judged.reply
    if not 200 <= reply.status < 300 or not reply.is_json:
        if out.json_mode:
            out.webhook_reply(kind, judged.data)
        raise RemoteError(f"{reply.url} refused it: {judged.failure}")
    out.webhook_reply(kind, judged.data)
    out.findings(judged.findings)
    if judged.violations:
        n = len(judged.violations)
        raise RemoteError(f"{judged.reply.url}: the reply breaks the contract ({n} violation{'s' * (n != 1)})")
