"""``opcli demo``: a listener on a free port, and the real commands run against it."""

from __future__ import annotations

import dataclasses
import shlex
from typing import Any

import typer

from opcli.cli.common import State, state


def run_command(argv: list[str], run_state: State) -> int:
    """Run ``opcli ARGV`` through the same Typer app, in this process; returns its exit code."""
    from opcli.cli import app

    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="opcli", standalone_mode=False, obj=run_state)
    except typer.Exit as exc:  # pragma: no cover - typer returns it in non-standalone mode
        code = exc.exit_code
    return code or 0


def demo(ctx: typer.Context) -> None:
    """Start a listener on a free port and run send, user-info, user-media, reply and check against it."""
    import tempfile
    from pathlib import Path

    from opcli.conformance import TINY_PNG
    from opcli.listener import ListenerThread
    from opcli.protocol import mask_token

    st = state(ctx)
    config = st.load(listen=True)
    out = st.output()
    user, bot = config.site.check.get("user", 42), config.site.check.get("bot", 7)
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="opcli-demo-") as tmp, ListenerThread(config) as listener:
        # every step is a real command line, run on a config whose site is this listener
        local = State(env=st.env, config=dataclasses.replace(config, site=listener.site))
        out.line(
            f"Listener ready: {listener.url} (site '{listener.site.name}', token {mask_token(listener.token)})",
            style="bold",
        )
        photo = Path(tmp) / "hello.png"
        photo.write_bytes(TINY_PNG)
        steps: list[tuple[str, list[Any]]] = [
            (
                "the site sends a message to the panel",
                ["send", "--user", user, "--bot", bot, "-m", "Hello from opcli demo!",
                 "--photo", "https://cdn.example.com/demo/1.jpg", "--attach", photo],
            ),
            ("the panel opens the user's profile", ["user-info", user]),
            ("the panel opens the user's private media", ["user-media", user]),
            ("an operator replies", ["reply", "--bot", bot, "--user", user, "-m", "Hi! How are you?"]),
            ("the conformance suite", ["check", "--send"]),
        ]  # fmt: skip
        for title, argv in steps:
            argv = [str(arg) for arg in argv]
            out.line("")
            out.line(f"== {title}: opcli {shlex.join(argv)}", style="bold cyan")
            if run_command(argv, local):
                failed.append(title)
        if not operator_loop(listener, local, out, user, bot):
            failed.append(OPERATOR_STEP)
        calls = listener.calls
    out.line("")
    total = len(steps) + 1
    if failed:
        out.error(f"demo: {len(failed)} of {total} steps failed: {', '.join(failed)}")
        raise typer.Exit(1)
    rejected = sum(1 for c in calls if c.rejected)
    out.line(
        f"Demo finished: all {total} steps worked. The listener received {len(calls)} calls ({rejected} "
        "rejected on purpose by the token and bad-id checks).",
        style="bold green",
    )
    out.line("Next: run `opcli listen` in one terminal and the same commands in another.")


OPERATOR_STEP = "the listener plays the panel"


def operator_loop(listener: Any, run_state: State, out: Any, user: int, bot: int) -> bool:
    """``listen --operator`` on the demo's listener: one message, then the three callbacks it makes."""
    argv = ["send", "--user", str(user), "--bot", str(bot), "-m", "Anyone there?"]
    out.line("")
    out.line(f"== {OPERATOR_STEP} (listen --operator): opcli {shlex.join(argv)}", style="bold cyan")
    listener.operator(site=listener.site)
    after = listener.journal.seq
    sent = run_command(argv, run_state) == 0
    callbacks, complete = listener.journal.wait_for(event="callback", count=3, after=after, timeout=15)
    listener.operator_off()
    message = listener.journal.get(after + 1)
    if message is not None:  # as `opcli listen` shows it: the message, its callbacks under it
        out.call(message.as_json())
    for callback in callbacks:
        out.callback(callback.as_json())
    return sent and complete and all(c.ok for c in callbacks)
