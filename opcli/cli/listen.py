"""``opcli listen``: the site's webhooks and the panel's endpoint, served locally."""

from __future__ import annotations

import os
import stat
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
            help="Keep uploaded files and each call's raw body (token removed) in DIR (safe generated names).",
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
    forward: Annotated[
        str | None,
        typer.Option(
            "--forward",
            metavar="SITE",
            help="Send each checked call on to the config's site SITE (its token) and pass its reply back.",
            show_default=False,
        ),
    ] = None,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            "--fault",
            metavar="SPEC",
            help="Make calls misbehave: KIND:ACTION[,OPTION]..., e.g. user_info:delay=5 or "
            "message_sent:status0,times=1. Repeatable; the first rule that matches decides "
            "(these before listen.faults).",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            metavar="N",
            min=0,
            help="Seed the faults' rate, to repeat a run. Default: listen.seed.",
            show_default=False,
        ),
    ] = None,
    operator: Annotated[
        bool,
        typer.Option(
            "--operator",
            help="Act as the panel too: after each accepted message, fetch the user's profile and media "
            "from the site's webhooks and send a reply (settings: listen.operator).",
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Write every call as a JSON line on stdout.")] = False,
) -> None:
    """Stand in for the site and the panel; print every call.

    Serves their endpoints locally, and a live inspector at /_opcli/.

    Serves the panel's Operator API endpoint and the site's three webhooks at the paths of the
    selected site's URLs, answers with canned data, and prints each call (--json: one JSON line per
    call, after a {"event": "ready", ...} line). The inspector (a page for a browser, and an HTTP API
    for tests) is at the URL the ready line names. Exit 0 when every counted call was accepted, 1
    when any was rejected, 124 when --timeout ran out before --count calls came.

    \b
    Examples:
      opcli listen
      opcli listen --port 0 --count 1 --timeout 60 --json > calls.jsonl
      opcli listen --journal calls.jsonl --save-dir uploads/
      opcli listen --operator --fault user_info:delay=5,times=1
    """
    from opcli.listener import serve

    st = state(ctx)
    config = st.load(listen=True)
    upstream = None
    if forward is not None:
        from opcli.listener.forward import forward_site

        upstream = forward_site(config, forward)
        st.secrets.add(upstream.token)  # the upstream's token is redacted like the site's own
    out = st.output(json_out)
    out.autoflush = False  # serve's stdout thread flushes after each batch of lines (out.flush)

    def announce(ready: Any) -> None:
        usable = _usable_url(out, ready.url)
        out.note(f"Ready: {ready.url}  (inspector: {usable}{ready.inspector[len(ready.url) :]})", style="bold")
        if not json_out:
            for kind, endpoint in ready.endpoints.items():
                out.note(f"  {kind:<13} POST {usable}{endpoint[len(ready.url) :]}")
        st.env.stderr.flush()

    def show(line: Any) -> None:
        if json_out:
            out.json(line.as_json())
        elif line.event == "call":
            out.call(line.as_json())
        elif line.event == "callback":
            out.callback(line.as_json())

    outcome = serve(
        config,
        host=host,
        port=port,
        count=count,
        timeout=timeout,
        journal=journal,
        save_dir=save_dir,
        strict=strict,
        forward=upstream,
        faults=fault or [],
        seed=seed,
        operator=operator,
        show=None if _discarded(st.env.stdout) else show,
        flush=out.flush,
        announce=announce,
        show_on_loop=_regular_file(st.env.stdout),
    )
    tally = outcome.tally
    made = f"; {_n(tally.callbacks, 'callback')}, {tally.failed_callbacks} failed" if tally.callbacks else ""
    dropped = f"; {_n(tally.dropped, 'line')} not shown (stdout was not read)" if tally.dropped else ""
    out.note(
        f"Stopped ({outcome.reason}): {_n(outcome.counted, 'call')}, {outcome.rejected} rejected"
        f"{made}{_elsewhere(outcome)}{dropped}"
    )
    raise typer.Exit(outcome.exit_code)


def _elsewhere(outcome: Any) -> str:
    """The calls to no endpoint (a wrong path, a GET), named: they are why --count may never be reached."""
    tally = outcome.tally
    if not tally.unknown:
        return ""
    from opcli.cli.render import shown

    paths = [shown(path) for path in tally.unknown_paths]
    listed = ", ".join(paths[:3]) + (", ..." if len(paths) > 3 else "")
    return f"; {_n(tally.unknown, 'call')} to no endpoint ({listed})"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' * (count != 1)}"


def _regular_file(stream: Any) -> bool:
    """True when ``stream`` is a regular file (``> calls.jsonl``): writing to it never waits on a reader."""
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError, AttributeError):
        return False


def _discarded(stream: Any) -> bool:
    """True when ``stream`` is /dev/null: nobody can read it, so the calls are not rendered for it.

    (Rendering a call costs the listener a fifth of its calls per second; GNU tar skips its work
    for /dev/null the same way.)
    """
    try:
        st, null = os.fstat(stream.fileno()), os.stat(os.devnull)
    except (OSError, ValueError, AttributeError):  # not a file (a test's StringIO), or closed
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev


def _usable_url(out: Any, url: str) -> str:
    """The base URL to show; on a wildcard address, a warning that anyone on the network can call it."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.hostname not in ("0.0.0.0", "::"):
        return url
    import socket

    try:  # the address of the interface that routes outwards (no packet is sent)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))
            address = probe.getsockname()[0]
    except OSError:
        address = socket.gethostname()
    out.warn("listening on every interface: the endpoints are open to anyone on the network")
    out.note(f"  reach it as http://127.0.0.1:{parts.port} here, or http://{address}:{parts.port} from elsewhere")
    return f"http://127.0.0.1:{parts.port}"
