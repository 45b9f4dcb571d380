"""The command line's own rules, applied to every command however it was registered.

``OpcliGroup`` is the class of the root Typer app. When typer builds the command tree it:

- gives every command the global options ``-c/--config`` and ``-s/--site`` too, so that
  ``opcli send -s staging ...`` means ``opcli -s staging send ...``;
- gives every command the short help epilog (environment variables, exit codes), unless it
  has one of its own, and usage lines without typer's ``{ARG}`` braces;
- turns every usage error (click's four-line block) into one line on stderr,
  ``opcli: error: --user: 'abc' is not a whole number``, exit 2;
- registers the shells of ``opcli completion`` when a shell asks for completions.

A command registered later (``app.command(...)`` or ``add_typer``) gets all of this with no code
of its own.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from typer import Abort
from typer._click import exceptions as errors
from typer.core import TyperGroup

from opcli.cli.common import report, state

GLOBAL_OPTIONS = ("config_path", "site")  # the root callback's parameters, which are State's attributes too

EPILOG = """\
\b
Environment:
  OPCLI_CONFIG  the config file when -c is not given
  OPCLI_SITE    the site when -s is not given
  OPCLI_TOKEN   the token of the built-in site (default: dev-token)
  OPCLI_DEBUG   1: a traceback instead of the one-line error
  NO_COLOR      no colour (colour and tables appear only on a terminal)

\b
Exit codes:
  0    success
  1    the other side answered with a failure, or a check failed
  2    usage or config error (with --json, stdout stays empty)
  3    the other side could not be reached
  124  listen --timeout ran out before --count calls came
  130  Ctrl-C (143: SIGTERM; 141: stdout's reader went away)
"""

COMMAND_EPILOG = """\
\b
-c/--config and -s/--site work after the command too.
Environment: OPCLI_CONFIG, OPCLI_SITE, OPCLI_TOKEN, OPCLI_DEBUG, NO_COLOR.
Exit codes: 0 ok, 1 failure reply, 2 usage or config error, 3 unreachable,
130 Ctrl-C. More in: opcli -h
"""


class OpcliGroup(TyperGroup):
    """The root group: global options on every command, one-line usage errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["epilog"] = kwargs.get("epilog") or EPILOG
        super().__init__(*args, **kwargs)
        globals_ = [p for p in self.params if p.name in GLOBAL_OPTIONS]
        for command in self.commands.values():
            _adopt(command, globals_)

    def _main_shell_completion(self, ctx_args: Any, prog_name: str, complete_var: str | None = None) -> None:
        # typer registers its shells only with add_completion=True; `opcli completion` prints the
        # script itself, so register them here, when the shell asks (cheap otherwise)
        if complete_var is None:
            complete_var = f"_{prog_name}_COMPLETE".replace("-", "_").upper()
        if os.environ.get(complete_var):
            from typer._completion_classes import completion_init

            completion_init()
        super()._main_shell_completion(ctx_args, prog_name, complete_var)

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:  # `opcli demo` runs commands in-process and wants the exceptions
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except errors.NoArgsIsHelpError as exc:
            exc.show()  # `opcli` alone: the help, as typer shows it
            sys.exit(exc.exit_code)
        except errors.ClickException as exc:
            report(describe(exc), getattr(exc, "ctx", None))
            sys.exit(exc.exit_code)
        except Abort:
            report("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _adopt(command: Any, globals_: list[Any]) -> None:
    """Give a command (each command of a group) the global options, the epilog, clean usage."""
    if isinstance(command, TyperGroup):
        for sub in command.commands.values():
            _adopt(sub, globals_)
        return
    taken = {opt for param in command.params for opt in getattr(param, "opts", ())}
    for param in globals_:
        if taken.isdisjoint(param.opts):
            command.params.append(_local_copy(param))
    if command.epilog is None:
        command.epilog = COMMAND_EPILOG
    command.collect_usage_pieces = functools.partial(_usage_pieces, command)


def _local_copy(param: Any) -> Any:
    """The root option as a command's own: it sets the run's State instead of a parameter."""
    local = copy.copy(param)
    local.expose_value = False
    local.envvar = None
    local.is_eager = False
    attribute = param.name

    def store(ctx: Any, _param: Any, value: Any) -> Any:
        if value is not None and not ctx.resilient_parsing:
            setattr(state(ctx), attribute, value)
        return value

    local.callback = store
    return local


def _usage_pieces(command: Any, ctx: Any) -> list[str]:
    """The usage line's pieces without typer's braces: ``ID``, not ``{ID}``."""
    pieces = type(command).collect_usage_pieces(command, ctx)
    return [re.sub(r"^\{(.*)\}((?:\.\.\.)?)$", r"\1\2", piece) for piece in pieces]


# --- one line per usage error -------------------------------------------------------------

_PYDANTIC_REASONS = {
    "int_parsing": "is not a whole number",
    "int_from_float": "is not a whole number",
    "int_type": "is not a whole number",
    "float_parsing": "is not a number",
    "float_type": "is not a number",
    "bool_parsing": "is not true or false",
}


def _name(param: Any) -> str:
    """How the user knows a parameter: its longest option (``--user``) or an argument's metavar."""
    if param is None:
        return ""
    if getattr(param, "param_type_name", "") == "option":
        return max(param.opts, key=len)
    return param.metavar or (param.name or "").upper()


def _value(value: Any) -> str:
    """A value the user gave: quoted unless it reads as a number."""
    if isinstance(value, str) and not re.fullmatch(r"[-+]?[0-9]*\.?[0-9]+", value):
        return f"'{value}'"
    return str(value)


def _reason(exc: Any) -> str:
    """Why a value was refused, in opcli's words (typer checks values with pydantic)."""
    errors = getattr(exc.__cause__, "errors", None)
    if not callable(errors) or not errors():
        return exc.message.rstrip(".")
    error = errors()[0]
    kind, value, limits = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "value_error" and "error" in limits:  # our own parser said why (ids)
        return str(limits["error"])
    if kind in _PYDANTIC_REASONS:
        return f"{_value(value)} {_PYDANTIC_REASONS[kind]}"
    for key, words in (("ge", "below the minimum"), ("gt", "not above"), ("le", "above the maximum")):
        if key in limits:
            return f"{_value(value)} is {words} {limits[key]}"
    if "lt" in limits:
        return f"{_value(value)} is not below {limits['lt']}"
    return str(error.get("msg", exc.message)).rstrip(".")


def describe(exc: Any) -> str:
    """A click usage error as one line: what is wrong, naming the option and the bad value."""
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "opcli"
    see = f" (see: {command} -h)"
    if isinstance(exc, errors.MissingParameter):
        what = _name(exc.param) or (exc.param_hint or "a value").strip("'")
        return f"{what} is required{see}"
    if isinstance(exc, errors.NoSuchOption):
        near = f"; did you mean {' or '.join(exc.possibilities)}?" if exc.possibilities else ""
        return f"{exc.option_name}: no such option for {command}{near}{see if not near else ''}"
    if isinstance(exc, errors.BadParameter):
        name = _name(exc.param)
        if not name and isinstance(exc.param_hint, str):
            name = exc.param_hint.strip("'")
        reason = _reason(exc)
        return f"{name}: {reason}" if name else reason
    if isinstance(exc, errors.BadOptionUsage) and "requires an argument" in exc.message:
        return f"{exc.option_name} needs a value"
    message = exc.format_message().rstrip(".")
    if message.startswith("No such command"):
        return message[0].lower() + message[1:].replace(". Did you mean", "; did you mean") + see
    return message[:1].lower() + message[1:]
