"""``opcli replay``: journaled calls sent again to the selected site, and their replies compared."""

from __future__ import annotations

from typing import Annotated

import typer

from opcli.cli.common import Json, Timeout, state
from opcli.errors import RemoteError


def replay(
    ctx: typer.Context,
    journal: Annotated[str, typer.Argument(metavar="JOURNAL", help="A listener's --journal file; - reads stdin.")],
    seq: Annotated[
        str | None,
        typer.Option("--seq", metavar="LIST", help="Only these calls, by seq: 3,5-9.", show_default=False),
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind", metavar="KIND", help="Only calls of this kind (user_info or user-info, ...).", show_default=False
        ),
    ] = None,
    to: Annotated[
        str | None,
        typer.Option(
            "--to", metavar="URL", help="Send to this base URL + the journaled path instead.", show_default=False
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="FIELD=VALUE",
            help="Change or add a field (repeatable; the body is re-encoded).",
            show_default=False,
        ),
    ] = None,
    expect_same: Annotated[
        bool, typer.Option("--expect-same", help="Fail when a reply differs from the journaled one (status, JSON).")
    ] = False,
    ignore: Annotated[
        list[str] | None,
        typer.Option(
            "--ignore",
            metavar="PATH",
            help="With --expect-same: leave out this dotted path of the reply (custom.0.value; repeatable).",
            show_default=False,
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", metavar="N", min=1, max=100, help="Calls in flight (1 keeps the order).")
    ] = 1,
    timeout: Timeout = None,
    json_out: Json = False,
) -> None:
    """Send journaled calls again and compare the replies.

    Reads the call lines of a journal (opcli listen --journal; - reads stdin) and sends each to
    the selected site's URL for its kind (or --to BASE_URL), with the site's token: the saved
    bytes when the listener ran with --save-dir, else a body rebuilt from the line. --json prints
    JSON Lines {"seq", "kind", "url", "status", "ms", "ok", "same", "diff"} and a summary. Exit 1
    when a call failed or (--expect-same) differed, 3 when the target could not be reached.

    \b
    Examples:
      opcli -s dev replay rec/j.jsonl --expect-same
      opcli replay calls.jsonl --seq 3,5-9 --kind user_info --to http://127.0.0.1:8000
      opcli replay calls.jsonl --set message=hello --json
    """
    from opcli.replay import parse_seqs, parse_set
    from opcli.replay import replay as run

    st = state(ctx)
    out = st.output(json_out)
    site = st.load().site
    summary = run(
        journal,
        site,
        stdin=st.env.stdin,
        seqs=parse_seqs(seq) if seq is not None else None,
        kind=kind,
        base_url=to,
        sets=[parse_set(item) for item in set_ or []],
        expect_same=expect_same,
        ignore=ignore or [],
        concurrency=concurrency,
        timeout=timeout,
        on_result=(lambda result: out.json(result.as_json())) if json_out else out.replay_row,
    )
    if json_out:
        out.json({"summary": summary.as_dict()})
    compared = f": {summary.same} same, {summary.different} different" if expect_same else ""
    out.note(
        f"Replayed {summary.total} calls to {to or f'site {site.name!r}'}{compared}; {summary.failed} failed "
        f"({summary.seconds:.1f} s)"
    )
    if summary.failed:
        raise RemoteError(f"{summary.failed} of {summary.total} replayed calls failed or differed")
