"""Running opcli on a terminal of the test's own: streams whose ``isatty()`` is true, through ``Env``.

pytest's streams are never terminals, so what opcli shows on one (colour, tables, pretty JSON,
hints) is tested by running the real command line, in-process, with these streams instead.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from dataclasses import dataclass

from opcli.cli.common import Env, State
from opcli.cli.demo import run_command

ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def plain_stdout(self) -> str:
        return ANSI.sub("", self.stdout)

    @property
    def plain_stderr(self) -> str:
        return ANSI.sub("", self.stderr)


def run_on(
    *argv: object,
    stdout_tty: bool = True,
    stderr_tty: bool = True,
    stdin: io.StringIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> Run:
    """``opcli ARGV`` with stdout/stderr as terminals (or pipes); ``environ`` is what colour decisions see."""
    env = Env(
        Terminal() if stdout_tty else io.StringIO(),
        Terminal() if stderr_tty else io.StringIO(),
        stdin if stdin is not None else io.StringIO(),
        dict(environ) if environ is not None else {},
    )
    code = run_command([str(a) for a in argv], State(env=env))
    return Run(code, env.stdout.getvalue(), env.stderr.getvalue())
