"""``opcli load``: load tests on Locust, from one machine to many."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from opcli.cli.common import Bigs, Json, Photos, Timeout, photos_of, state
from opcli.errors import RemoteError, UnreachableError, UsageError

_MIX_HELP = "Calls per task by weight: KIND=W,... (kinds message_sent, send_message, user_info, user_media; - or _)."


def load(
    ctx: typer.Context,
    users: Annotated[
        int | None,
        typer.Option(
            "--users", "-u", metavar="N", min=1, help="Peak number of Locust users (default 1).", show_default=False
        ),
    ] = None,
    spawn_rate: Annotated[
        float | None,
        typer.Option(
            "--spawn-rate",
            "-r",
            metavar="R",
            min=0.001,
            help="Users started per second (default 1).",
            show_default=False,
        ),
    ] = None,
    run_time: Annotated[
        str | None,
        typer.Option(
            "--run-time",
            "-t",
            metavar="T",
            help="Stop after T (90s, 2m, 1h30m); default: until Ctrl-C.",
            show_default=False,
        ),
    ] = None,
    processes: Annotated[
        int | None,
        typer.Option(
            "--processes",
            metavar="N",
            min=-1,
            help="Spread over N processes of this machine (-1: one per core).",
            show_default=False,
        ),
    ] = None,
    mix: Annotated[str, typer.Option("--mix", metavar="KIND=W,...", help=_MIX_HELP)] = "message_sent=1",
    content: Annotated[
        str | None,
        typer.Option(
            "--content",
            metavar="text=W,photos=W,file=W",
            help="What a message_sent carries, by weight (default: text; photos=1 with --photo, file=1 with --attach).",
            show_default=False,
        ),
    ] = None,
    user_ids: Annotated[
        str | None,
        typer.Option(
            "--user-ids", metavar="A-B", help="Draw user ids from A to B (default: check.user).", show_default=False
        ),
    ] = None,
    bot_ids: Annotated[
        str | None,
        typer.Option(
            "--bot-ids", metavar="A-B", help="Draw bot ids from A to B (default: check.bot).", show_default=False
        ),
    ] = None,
    message: Annotated[
        str, typer.Option("-m", "--message", metavar="TEXT", help="The text of every message.")
    ] = "Hello from opcli load",
    photo: Photos = None,
    big: Bigs = None,
    attach: Annotated[
        Path | None,
        typer.Option(
            "--attach", metavar="FILE", help="The file of --content file=W.", show_default=False, dir_okay=False
        ),
    ] = None,
    master: Annotated[bool, typer.Option("--master", help="Be the master other machines' workers join.")] = False,
    expect_workers: Annotated[
        int | None,
        typer.Option(
            "--expect-workers",
            metavar="N",
            min=1,
            help="With --master: start once N workers joined (default 1).",
            show_default=False,
        ),
    ] = None,
    master_bind_host: Annotated[
        str | None,
        typer.Option(
            "--master-bind-host",
            metavar="H",
            help="With --master: the address to listen on (default: all).",
            show_default=False,
        ),
    ] = None,
    worker: Annotated[bool, typer.Option("--worker", help="Be a worker of the master at --master-host.")] = False,
    master_host: Annotated[
        str | None,
        typer.Option(
            "--master-host",
            metavar="H",
            help="With --worker: the master's host (default 127.0.0.1).",
            show_default=False,
        ),
    ] = None,
    master_port: Annotated[
        int | None,
        typer.Option(
            "--master-port", metavar="P", min=1, max=65535, help="The master's port (default 5557).", show_default=False
        ),
    ] = None,
    csv: Annotated[
        str | None,
        typer.Option("--csv", metavar="PREFIX", help="Locust's CSV files: PREFIX_stats.csv, ...", show_default=False),
    ] = None,
    html: Annotated[
        str | None, typer.Option("--html", metavar="FILE", help="Locust's HTML report.", show_default=False)
    ] = None,
    max_fail_ratio: Annotated[
        float,
        typer.Option("--max-fail-ratio", metavar="F", min=0, max=1, help="Exit 1 when failures/requests is above F."),
    ] = 0.0,
    locustfile: Annotated[
        Path | None,
        typer.Option(
            "--locustfile",
            "-f",
            metavar="FILE",
            help="Run your own locustfile (subclasses of opcli.load's users).",
            show_default=False,
            dir_okay=False,
        ),
    ] = None,
    timeout: Timeout = None,
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="Show Locust's own log and running stats on stderr.")
    ] = False,
    json_out: Json = False,
) -> None:
    """Load-test the panel endpoint and webhooks on Locust.

    Runs Locust (pip install 'opcli[load]') in a subprocess, headless, with a locustfile of opcli's:
    users send message_sent to the site's panel endpoint and, playing the panel, call its webhooks,
    in the proportions of --mix; on one machine (--processes N) or many (--master, --worker). Prints
    per kind and in total: requests, failures, req/s, p50/p95/p99 ms (--json: one document). Exit
    1 when the failure ratio is over --max-fail-ratio, 3 when no request reached the site.

    \b
    Examples:
      opcli load --users 50 --spawn-rate 10 --run-time 30s
      opcli -s staging load --users 200 --spawn-rate 20 --run-time 2m --processes 4
      opcli load --mix message_sent=8,user_info=1,user_media=1 --json
      opcli load --master --expect-workers 2    # and on other machines: opcli load --worker --master-host H
    """
    from opcli.load_runner import CONTENTS, LoadPlan, LoadSettings, parse_run_time, parse_weights, run_load
    from opcli.protocol import KINDS, kind_name

    _check_roles(
        master, worker, processes,
        master_only={"--expect-workers": expect_workers, "--master-bind-host": master_bind_host},
        worker_only={"--master-host": master_host},
        not_worker={
            "--users": users, "--spawn-rate": spawn_rate, "--run-time": run_time, "--csv": csv, "--html": html
        },
    )  # fmt: skip
    photos = photos_of(photo or [], big or [])
    default_content = "text=1" + (",photos=1" if photos else "") + (",file=1" if attach else "")
    st = state(ctx)
    config = st.load()
    site = config.site
    weights = parse_weights(mix, KINDS, "--mix", kind_name)  # user-info is user_info
    ours = locustfile is None  # a locustfile of your own draws its ids itself
    settings = LoadSettings(
        mix=weights,
        content=parse_weights(content or default_content, CONTENTS, "--content"),
        user_ids=_ids(user_ids, "--user-ids", site, "user", ours),
        bot_ids=_ids(bot_ids, "--bot-ids", site, "bot", ours and bool({"message_sent", "send_message"} & set(weights))),
        message=message,
        photos=[(p.file_url, p.big) for p in photos],
        attach=str(attach) if attach else None,
        timeout=timeout,
    )
    plan = LoadPlan(
        users=users or 1,
        spawn_rate=spawn_rate or 1.0,
        run_time=parse_run_time(run_time) if run_time is not None else None,
        processes=processes,
        master=master,
        expect_workers=expect_workers or 1,
        master_bind_host=master_bind_host,
        worker=worker,
        master_host=master_host or "127.0.0.1",
        master_port=master_port,
        csv=csv,
        html=html,
        locustfile=locustfile,
        max_fail_ratio=max_fail_ratio,
        verbose=verbose,
    )
    out = st.output(json_out)
    result = run_load(config, plan, settings, log=lambda line: out.note(line))
    summary = result.summary
    if summary is None:  # a worker (its master has the figures), or stopped before Locust ran
        if plan.worker:
            if json_out:
                out.json({"role": "worker", "master": f"{plan.master_host}:{master_port or 5557}"})
            out.note("Worker done: the master has the summary.")
        else:
            out.note("Interrupted before the load test started.")
        if result.interrupted:
            raise typer.Exit(result.interrupted)
        return
    if result.unreachable and not result.interrupted:
        first = summary["errors"][0]["error"] if summary["errors"] else "every request failed"
        raise UnreachableError(f"no request reached the site: {first}")
    show(out, summary)
    if result.interrupted:
        raise typer.Exit(result.interrupted)
    total = summary["total"]
    if not total["requests"]:
        why = "Locust failed: its messages are above" if result.locust_exit > 1 else "give the users more --run-time"
        raise RemoteError(f"no request completed ({why})")
    if not summary["ok"]:
        raise RemoteError(
            f"{total['failures']} of {total['requests']} requests failed: failure ratio {summary['fail_ratio']:g} "
            f"is above --max-fail-ratio {max_fail_ratio:g}"
        )


def _check_roles(
    master: bool,
    worker: bool,
    processes: int | None,
    master_only: dict[str, Any],
    worker_only: dict[str, Any],
    not_worker: dict[str, Any],
) -> None:
    """Options that do not fit the role asked for are usage errors (exit 2), not silently ignored."""
    if master and worker:
        raise typer.BadParameter("choose --master or --worker, not both", param_hint="'--master'")
    if processes == 0:
        raise typer.BadParameter("give -1 (one per core) or a number of processes", param_hint="'--processes'")
    if master and processes is not None:
        raise typer.BadParameter(
            "a --master runs no users itself: give --processes to its workers", param_hint="'--processes'"
        )
    for flags, allowed, role in ((master_only, master, "--master"), (worker_only, worker, "--worker")):
        given = [flag for flag, value in flags.items() if value is not None]
        if given and not allowed:
            raise typer.BadParameter(f"{', '.join(given)} only go with {role}", param_hint=f"'{given[0]}'")
    given = [flag for flag, value in not_worker.items() if value is not None]
    if worker and given:
        raise typer.BadParameter(
            f"a worker takes {', '.join(given)} from its master: give them to the master", param_hint=f"'{given[0]}'"
        )


def _ids(given: str | None, option: str, site: Any, who: str, needed: bool) -> tuple[int, int]:
    """The ids of ``--user-ids``/``--bot-ids``, else the site's ``check`` id (an error when needed and unset)."""
    from opcli.load_runner import parse_ids

    if given is not None:
        return parse_ids(given, option)
    if who in site.check:
        return site.check[who], site.check[who]
    if needed:
        raise UsageError(f"give {option} or set check.{who} for site '{site.name}' in the config")
    return 0, 0  # never drawn


def show(out: Any, summary: dict[str, Any]) -> None:
    """The summary: one JSON document, a table on a terminal, plain lines otherwise; errors on stderr."""
    if out.json_mode:
        out.json(summary)
    else:
        rows = [(kind, figures) for kind, figures in summary["kinds"].items()]
        rows.append(("total", summary["total"]))
        if out.tty:
            _table(out, rows)
        else:
            for name, f in rows:
                out.line(
                    f"{name}: {f['requests']} requests, {f['failures']} failures, {f['requests_per_second']:g} req/s, "
                    f"p50 {_ms(f['p50_ms'])}, p95 {_ms(f['p95_ms'])}, p99 {_ms(f['p99_ms'])}"
                )
    for error in summary["errors"][:10]:
        out.warn(f"{error['kind']}: {error['error']} ({error['count']}x)")
    if len(summary["errors"]) > 10:
        out.note(f"... and {len(summary['errors']) - 10} other errors")
    workers = f" on {summary['workers']} workers" if summary.get("workers") else ""
    how = "interrupted after" if summary["interrupted"] else "ran for"
    out.note(
        f"{summary['users']} users{workers} {how} {summary['seconds']:g} s; failure ratio {summary['fail_ratio']:g}"
    )


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:g} ms"


def _table(out: Any, rows: list[tuple[str, dict[str, Any]]]) -> None:
    from rich.table import Table

    table = Table(box=None, padding=(0, 2, 0, 0), header_style="bold")
    for name in ("kind", "requests", "failures", "req/s", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(name, justify="left" if name == "kind" else "right")
    for name, f in rows:
        table.add_row(
            name,
            str(f["requests"]),
            str(f["failures"]),
            f"{f['requests_per_second']:g}",
            *("-" if f[key] is None else f"{f[key]:g}" for key in ("p50_ms", "p95_ms", "p99_ms")),
            style="bold red" if f["failures"] else "bold" if name == "total" else None,
        )
    out.out.print(table)
