"""``opcli listen``: the site's webhooks and the panel's endpoint, served locally."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from opcli.cli.common import state


def listen(
    ctx: typer.Context,
    host: Annotated[
        str | None,
        typer.Option(
            "--host",
            metavar="HOST",
            help="Address to bind (default: listen.host, the site's loopback URLs, 127.0.0.1).",
            show_default=False,
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", metavar="PORT", min=0, max=65535, help="Port; 0 picks a free one.", show_default=False),
    ] = None,
    count: Annotated[
        int | None,
        typer.Option(
            "--count",
            metavar="N",
            min=1,
            help="Exit after N calls to the endpoints (0 if all were accepted, 1 if any was rejected).",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            metavar="SECONDS",
            min=0.001,
            help="Seconds to run after the ready line; with --count, 124 when they did not all come.",
            show_default=False,
        ),
    ] = None,
    journal: Annotated[
        Path | None,
        typer.Option("--journal", metavar="FILE", help="Append every call as a JSON line to FILE.", show_default=False),
    ] = None,
    save_dir: Annotated[
        Path | None,
        typer.Option(
            "--save-dir",
            metavar="DIR",
            help="Keep uploaded files in DIR (safe generated names).",
            show_default=False,
            file_okay=False,
        ),
    ] = None,
    strict: Annotated[
        bool | None,
        typer.Option(
            "--strict/--no-strict",
            help="Reject with 422 the calls that only earn warnings (unknown fields, ...). Default: listen.strict.",
            show_default=False,
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Write every call as a JSON line on stdout.")] = False,
) -> None:
    """Serve the site's webhooks and the panel's endpoint locally; print every call; a live inspector at /_opcli/."""
    from opcli.listener import serve

    st = state(ctx)
    config = st.load(listen=True)
    out = st.output(json_out)

    def announce(ready: Any) -> None:
        out.note(f"Ready: {ready.url}  (inspector: {ready.inspector})", style="bold")
        if not json_out:
            for kind, endpoint in ready.endpoints.items():
                out.note(f"  {kind:<13} POST {endpoint}")
        st.env.stderr.flush()

    def show(line: Any) -> None:
        if json_out:
            out.json(line.as_json())
        elif line.event == "call":
            out.call(line.as_json())

    outcome = serve(
        config,
        host=host,
        port=port,
        count=count,
        timeout=timeout,
        journal=journal,
        save_dir=save_dir,
        strict=strict,
        show=show,
        announce=announce,
    )
    out.note(f"Stopped ({outcome.reason}): {outcome.counted} calls, {outcome.rejected} rejected")
    raise typer.Exit(outcome.exit_code)
