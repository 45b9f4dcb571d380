"""``opcli config``: write, validate and show the config."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from opcli.cli.common import Json, state
from opcli.errors import UsageError


def init(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="Where to write it.", dir_okay=False, metavar="[PATH]")] = Path(
        "opcli.yaml"
    ),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter config."""
    from opcli.config import SAMPLE

    if path.exists() and not force:
        raise UsageError(f"{path} exists; use --force to overwrite it")
    try:
        path.write_text(SAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    state(ctx).output().note(f"wrote {path}; check it with: opcli -c {path} config validate")


def validate(ctx: typer.Context) -> None:
    """Check the config: every problem as FILE:LINE:COL, exit 2 when any."""
    st = state(ctx)
    config = st.load(listen=True)
    st.output().line(f"{config.path}: OK (sites: {', '.join(config.site_names)}; selected: {config.site.name})")


def show(ctx: typer.Context, json_out: Json = False) -> None:
    """Show the effective config of the selected site, tokens masked."""
    st = state(ctx)
    config = st.load(listen=True)
    listen = config.listen
    shown = {
        "file": config.path,
        "site": config.site.name,
        **config.site.masked(),
        "listen": {
            "host": listen.host,
            "port": listen.port,
            "max_body_bytes": listen.max_body_bytes,
            "keep": listen.keep,
            "strict": listen.strict,
            "unknown_user": listen.unknown_user,
            "users": sorted(listen.users),
            "media": sorted(listen.media),
            "faults": list(listen.faults),
            "seed": listen.seed,
            "operator": dataclasses.asdict(listen.operator) if listen.operator else None,
        },
    }
    out = st.output(json_out)
    if json_out:
        out.json(shown)
    else:
        import yaml

        out.line(yaml.safe_dump(shown, sort_keys=False, allow_unicode=True).rstrip())


def schema(ctx: typer.Context) -> None:
    """Print the JSON Schema of the config file (for editors: see the README)."""
    import json

    from opcli.config.schema import config_schema

    state(ctx).output().write(json.dumps(config_schema(), indent=2) + "\n")
