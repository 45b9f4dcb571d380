"""``opcli demo``: a listener on a free port, and the real commands run against it."""

from __future__ import annotations

import dataclasses
import shlex
from typing import Any

import typer

from opcli.cli.common import Env, Json, State, state


def run_command(argv: list[str], run_state: State) -> int:
    """Run ``opcli ARGV`` through the same Typer app, in this process; returns its exit code."""
    from opcli.cli import app

    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="opcli", standalone_mode=False, obj=run_state)
    except typer.Exit as exc:  # pragma: no cover - typer returns it in non-standalone mode
        code = exc.exit_code
    return code or 0


def demo(ctx: typer.Context, json_out: Json = False) -> None:
    """Play both sides against a local listener, step by step.

    The steps: send, user-info, user-media, reply, check.

    Starts the listener on a free port and runs the real commands against it, showing each one.
    --json runs each step with --json and prints one document: {"ok", "listener", "steps":
    [{"title", "command", "exit_code", "output", "stderr"}], "calls", "rejected"}.

    \b
    Examples:
      opcli demo
      opcli demo --json
    """
    import io
    import json
    import tempfile
    from pathlib import Path

    from opcli.conformance import TINY_PNG
    from opcli.listener import ListenerThread
    from opcli.protocol import mask_token

    st = state(ctx)
    config = st.load(listen=True)
    out = st.output(json_out)
    show = out.line if not json_out else lambda *args, **kwargs: None  # --json: only the document
    user, bot = config.site.check.get("user", 42), config.site.check.get("bot", 7)
    done: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="opcli-demo-") as tmp, ListenerThread(config) as listener:
        # every step is a real command line, run on a config whose site is this listener
        site_config = dataclasses.replace(config, site=listener.site)
        show(
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
            argv = [str(arg) for arg in argv] + (["--json"] if json_out else [])
            show("")
            show(f"== {title}: opcli {shlex.join(argv)}", style="bold cyan")
            env = st.env
            if json_out:  # each step's output becomes part of the one document
                env = Env(io.StringIO(), io.StringIO(), st.env.stdin, st.env.environ)
            code = run_command(argv, State(env=env, config=site_config, secrets=st.secrets))
            step = {"title": title, "command": f"opcli {shlex.join(argv)}", "exit_code": code}
            if json_out:
                text = env.stdout.getvalue()
                step["output"] = json.loads(text) if text.strip() else None
                step["stderr"] = env.stderr.getvalue()
            done.append(step)
        calls = listener.calls
    failed = [step["title"] for step in done if step["exit_code"]]
    rejected = sum(1 for c in calls if c.rejected)
    if json_out:
        out.document(
            {"ok": not failed, "listener": listener.url, "steps": done, "calls": len(calls), "rejected": rejected}
        )
    show("")
    if failed:
        out.error(f"demo: {len(failed)} of {len(steps)} steps failed: {', '.join(failed)}")
        raise typer.Exit(1)
    show(
        f"Demo finished: all {len(steps)} steps worked. The listener received {len(calls)} calls ({rejected} "
        "rejected on purpose by the token and bad-id checks).",
        style="bold green",
    )
    show("Next: run `opcli listen` in one terminal and the same commands in another.")
