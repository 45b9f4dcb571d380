"""The command line: the Typer app and its commands, each in the module of its group.

A command parses its options, calls one core function and renders what it returns. Heavy
modules (httpx, starlette, uvicorn) are imported inside the commands, so ``opcli --version``
and ``--help`` stay fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from opcli import __version__
from opcli.cli import config, demo, listen, load, panel, replay, send, spec
from opcli.cli.common import State, guard
from opcli.cli.usage import OpcliGroup

app = typer.Typer(
    name="opcli",
    cls=OpcliGroup,  # global options after the command too, one-line usage errors, the help epilog
    help="Test and script integrations with the Operator API (site <-> operator panel).",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(help="Write, validate, show the config; its JSON Schema.", no_args_is_help=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"opcli {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    config_path: Annotated[
        Path | None,
        typer.Option(
            "-c",
            "--config",
            metavar="PATH",
            help="Config file (default: $OPCLI_CONFIG, ./opcli.yaml, the user config dir, built-in).",
            show_default=False,
        ),
    ] = None,
    site: Annotated[
        str | None,
        typer.Option(
            "-s",
            "--site",
            metavar="NAME",
            help="Site of the config to use (default: $OPCLI_SITE, then the config's default_site).",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_version, help="Print the version and exit.")
    ] = False,
) -> None:
    if isinstance(ctx.obj, State):  # given by `opcli demo`, which runs commands on its own listener
        return
    ctx.obj = State(config_path, site)


def completion(
    shell: Annotated[str, typer.Argument(metavar="bash|zsh|fish", help="The shell to complete in.")],
) -> None:
    """Print the shell completion script.

    \b
    Examples:
      eval "$(opcli completion bash)"      # in ~/.bashrc
      eval "$(opcli completion zsh)"       # in ~/.zshrc
      opcli completion fish > ~/.config/fish/completions/opcli.fish
    """
    from typer._completion_shared import get_completion_script

    from opcli.errors import UsageError

    if shell not in ("bash", "zsh", "fish"):
        raise UsageError(f"no completion for {shell!r}: choose bash, zsh or fish")
    typer.echo(get_completion_script(prog_name="opcli", complete_var="_OPCLI_COMPLETE", shell=shell))


for name, fn, target in (
    ("send", send.send, app),
    ("listen", listen.listen, app),
    ("user-info", panel.user_info, app),
    ("user-media", panel.user_media, app),
    ("reply", panel.reply, app),
    ("check", panel.check, app),
    ("demo", demo.demo, app),
    ("replay", replay.replay, app),
    ("spec", spec.spec, app),
    ("load", load.load, app),
    ("completion", completion, app),
    ("init", config.init, config_app),
    ("validate", config.validate, config_app),
    ("show", config.show, config_app),
    ("schema", config.schema, config_app),
):
    target.command(name)(guard(fn))
app.add_typer(config_app, name="config")


def main() -> None:
    """The console script (also ``python -m opcli``: the same name, so that completion works the same)."""
    app(prog_name="opcli")
