"""Rendering: one place decides TTY, colour and which stream a thing goes to.

Data goes to stdout, everything else to stderr. Colour and tables only on a terminal, and
never when ``NO_COLOR`` is set.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from functools import cached_property
from typing import Any


def dumps(obj: Any) -> str:
    """One JSON document on one line, UTF-8 kept readable."""
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "), default=str)


class Output:
    """The streams of one command run."""

    def __init__(self, json_mode: bool = False) -> None:
        self.json_mode = json_mode

    @property
    def tty(self) -> bool:
        return sys.stdout.isatty()

    @staticmethod
    def _console(stderr: bool) -> Any:
        from rich.console import Console

        stream = sys.stderr if stderr else sys.stdout
        color = stream.isatty() and "NO_COLOR" not in os.environ
        return Console(stderr=stderr, highlight=False, soft_wrap=True, no_color=not color,
                       force_terminal=color or None, emoji=False)

    @cached_property
    def out(self) -> Any:
        return self._console(stderr=False)

    @cached_property
    def err(self) -> Any:
        return self._console(stderr=True)

    def json(self, obj: Any) -> None:
        sys.stdout.write(dumps(obj) + "\n")
        sys.stdout.flush()

    def line(self, text: str = "", style: str | None = None) -> None:
        """A line of data on stdout (rich markup is not interpreted)."""
        if self.tty and style:
            self.out.print(text, style=style, markup=False)
        else:
            sys.stdout.write(text + "\n")

    def note(self, text: str, style: str | None = None) -> None:
        """A notice on stderr."""
        self.err.print(text, style=style, markup=False)

    def warn(self, text: str) -> None:
        self.note(f"warning: {text}", style="yellow")

    def error(self, text: str) -> None:
        for line in text.splitlines() or [""]:
            self.err.print(f"opcli: error: {line}", style="bold red", markup=False)

    def table(self, rows: Iterable[tuple[str, Any]], title: str | None = None) -> None:
        """Key/value rows: a rich table on a terminal, ``key: value`` lines otherwise."""
        rows = list(rows)
        if self.tty:
            from rich.table import Table

            table = Table(title=title, show_header=False, title_justify="left", box=None,
                          padding=(0, 2, 0, 0))
            table.add_column(style="bold cyan", no_wrap=True)
            table.add_column(overflow="fold")
            for key, value in rows:
                table.add_row(key, str(value))
            self.out.print(table)
        else:
            if title:
                sys.stdout.write(title + "\n")
            for key, value in rows:
                sys.stdout.write(f"{key}: {value}\n")

    def grid(self, headers: list[str], rows: Iterable[Iterable[Any]], title: str | None = None) -> None:
        """A table with headers: rich on a terminal, tab-separated lines otherwise."""
        rows = [[str(c) for c in r] for r in rows]
        if self.tty:
            from rich.table import Table

            table = Table(*headers, title=title, title_justify="left")
            for row in rows:
                table.add_row(*row)
            self.out.print(table)
        else:
            if title:
                sys.stdout.write(title + "\n")
            sys.stdout.write("\t".join(headers) + "\n")
            for row in rows:
                sys.stdout.write("\t".join(row) + "\n")
