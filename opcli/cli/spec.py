"""``opcli spec``: the protocol as an OpenAPI 3.1 document."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from opcli.cli.common import state
from opcli.errors import UsageError


class Side(str, Enum):
    panel = "panel"
    site = "site"


class Format(str, Enum):
    yaml = "yaml"
    json = "json"


def spec(
    ctx: typer.Context,
    side: Annotated[
        Side | None,
        typer.Option(
            "--side",
            help="Only the panel's endpoint, or only the site's three webhooks (default: both).",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        Format | None,
        typer.Option(
            "--format",
            help="Output format (default: json for -o *.json, else yaml).",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", metavar="FILE", help="Write to FILE (-: stdout).", dir_okay=False),
    ] = None,
) -> None:
    """Write the protocol as an OpenAPI 3.1 document.

    Generated from the contract models opcli checks replies with: --side panel (the panel's
    Operator API endpoint), --side site (the three webhooks, for Schemathesis or Prism), or both
    (the default). YAML unless --format json or an -o name ending in .json.

    \b
    Examples:
      opcli spec -o operator-api.yaml
      opcli -s staging spec --side site --format json > site.json
    """
    from opcli.spec import build_spec, render

    st = state(ctx)
    site = st.load().site
    side_name = side.value if side else None
    fmt_name = fmt.value if fmt else "json" if output is not None and output.suffix.lower() == ".json" else "yaml"
    out = st.output()
    text = out.redact(render(build_spec(site, side_name), fmt_name))  # no token, in a URL or anywhere
    if output is None or str(output) == "-":
        out.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None
    sides = {"panel": "the panel's endpoint", "site": "the site's webhooks"}.get(side_name or "", "both sides")
    out.note(f"wrote {output}: OpenAPI 3.1, {sides}, at the URLs of site '{site.name}'")
