"""``opcli config``: write, validate and show the config."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer

from opcli.cli.common import Json, state
from opcli.errors import UsageError


def init(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="Where to write it.", metavar="PATH")] = Path("opcli.yaml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter config (./opcli.yaml by default).

    \b
    Examples:
      opcli config init
      opcli config init ~/.config/opcli/config.yaml
    """
    from opcli.config import SAMPLE

    if path.is_dir():
        raise UsageError(f"{path} is a directory; give the file to write, e.g. {path / 'opcli.yaml'}")
    if path.exists() and not force:
        raise UsageError(f"{path} exists; use --force to overwrite it")
    try:
        path.write_text(SAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    state(ctx).output().note(f"wrote {path}; check it with: opcli -c {path} config validate")


def _loaded(ctx: typer.Context, json_out: bool) -> tuple[Any, Any, dict[str, Any], tuple[str, int]]:
    """The config, the output, and what both commands say of it (where from, which site, the listener's address)."""
    from opcli.config import BUILTIN, searched
    from opcli.listener.runner import pick_address

    st = state(ctx)
    config = st.load(listen=True)
    out = st.output(json_out)
    if config.path == str(BUILTIN):
        out.note(f"no config file found (searched: {', '.join(searched())}); using the built-in defaults")
    operator = config.listen.operator is not None
    host, port = pick_address(config.site, config.listen.host, config.listen.port, None, None, operator)
    about = {
        "file": config.path,
        "builtin": config.path == str(BUILTIN),
        "sites": config.site_names,
        "site": config.site.name,
        "site_from": config.site_from,
        "listen": f"http://{host}:{port}",
    }
    return config, out, about, (host, port)


def validate(ctx: typer.Context, json_out: Json = False) -> None:
    """Check the config: every problem as FILE:LINE:COL, exit 2 when any.

    --json prints {"file", "builtin", "sites", "site", "site_from", "listen", "ok"} when the config
    is valid; problems go to stderr (stdout stays empty, exit 2).

    \b
    Examples:
      opcli config validate
      opcli -c staging.yaml config validate --json
    """
    _, out, about, _ = _loaded(ctx, json_out)
    if json_out:
        out.document({**about, "ok": True})
        return
    out.line(
        f"{about['file']}: OK (sites: {', '.join(about['sites'])}; selected: {about['site']}, from "
        f"{about['site_from']}; opcli listen serves {about['listen']})"
    )


def show(ctx: typer.Context, json_out: Json = False) -> None:
    """Show the effective config of the selected site, tokens masked.

    --json prints the same as one object: file, site, the site's settings and a summary of listen.

    \b
    Examples:
      opcli config show
      OPCLI_SITE=staging opcli config show --json
    """
    config, out, about, (host, port) = _loaded(ctx, json_out)
    listen = config.listen
    shown = {
        "file": config.path,
        "site": config.site.name,
        "site_from": config.site_from,
        **config.site.masked(),
        "listen": {
            "host": host,
            "port": port,
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
    if json_out:
        out.document(shown)
    else:
        import yaml

        out.line(yaml.safe_dump(shown, sort_keys=False, allow_unicode=True).rstrip())


def schema(ctx: typer.Context) -> None:
    """Print the JSON Schema of the config file.

    Editors with a YAML language server then complete and check opcli.yaml: save the schema and
    put "# yaml-language-server: $schema=opcli.schema.json" on the config's first line.

    \b
    Examples:
      opcli config schema > opcli.schema.json
    """
    import json

    from opcli.config.schema import config_schema

    state(ctx).output().write(json.dumps(config_schema(), indent=2) + "\n")
