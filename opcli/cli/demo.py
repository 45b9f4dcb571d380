"""``opcli demo``: a listener on a free port, and the real commands run against it."""

from __future__ import annotations

import dataclasses
import shlex
from typing import Any

import typer

from opcli.cli.common import Env, Json, State, state

OPERATOR_STEP = "the listener plays the panel (listen --operator)"


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

    The steps: send, user-info, user-media, reply, check, and the operator loop.

    Starts the listener on a free port and runs the real commands against it, showing each one;
    then turns the listener's operator loop on (listen --operator), sends one more message and
    shows the callbacks it makes. --json runs each step with --json and prints one document:
    {"ok", "listener", "steps": [{"title", "command", "exit_code", "output", "stderr"}], "calls",
    "rejected"} (the operator step adds "callbacks").

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

        def step(title: str, argv: list[Any]) -> dict[str, Any]:
            argv = [str(arg) for arg in argv] + (["--json"] if json_out else [])
            show("")
            show(f"== {title}: opcli {shlex.join(argv)}", style="bold cyan")
            env = st.env
            if json_out:  # each step's output becomes part of the one document
                env = Env(io.StringIO(), io.StringIO(), st.env.stdin, st.env.environ)
            code = run_command(argv, State(env=env, config=site_config, secrets=st.secrets))
            result = {"title": title, "command": f"opcli {shlex.join(argv)}", "exit_code": code}
            if json_out:
                text = env.stdout.getvalue()
                result["output"] = json.loads(text) if text.strip() else None
                result["stderr"] = env.stderr.getvalue()
            done.append(result)
            return result

        show(
            f"Listener ready: {listener.url} (site '{listener.site.name}', token {mask_token(listener.token)})",
            style="bold",
        )
        photo = Path(tmp) / "hello.png"
        photo.write_bytes(TINY_PNG)
        step(
            "the site sends a message to the panel",
            ["send", "--user", user, "--bot", bot, "-m", "Hello from opcli demo!",
             "--photo", "https://cdn.example.com/demo/1.jpg", "--attach", photo],
        )  # fmt: skip
        step("the panel opens the user's profile", ["user-info", user])
        step("the panel opens the user's private media", ["user-media", user])
        step("an operator replies", ["reply", "--bot", bot, "--user", user, "-m", "Hi! How are you?"])
        step("the conformance suite", ["check", "--send"])
        operator_loop(listener, step, out, json_out, user, bot)
        calls = listener.calls
    failed = [result["title"] for result in done if result["exit_code"]]
    rejected = sum(1 for c in calls if c.rejected)
    if json_out:
        out.document(
            {"ok": not failed, "listener": listener.url, "steps": done, "calls": len(calls), "rejected": rejected}
        )
    show("")
    if failed:
        out.error(f"demo: {len(failed)} of {len(done)} steps failed: {', '.join(failed)}")
        raise typer.Exit(1)
    show(
        f"Demo finished: all {len(done)} steps worked. The listener received {len(calls)} calls ({rejected} "
        "rejected on purpose by the token and bad-id checks).",
        style="bold green",
    )
    show("Next: run `opcli listen` in one terminal and the same commands in another.")


def operator_loop(listener: Any, step: Any, out: Any, json_out: bool, user: int, bot: int) -> None:
    """``listen --operator`` on the demo's listener: one message, then the three callbacks it makes."""
    listener.operator(site=listener.site)
    after = listener.journal.seq
    result = step(OPERATOR_STEP, ["send", "--user", user, "--bot", bot, "-m", "Anyone there?"])
    callbacks, complete = listener.journal.wait_for(event="callback", count=3, after=after, timeout=15)
    listener.operator_off()
    if json_out:
        result["callbacks"] = [c.as_json() for c in callbacks]
    else:
        message = listener.journal.get(after + 1)
        if message is not None:  # as `opcli listen` shows it: the message, its callbacks under it
            out.call(message.as_json())
        for callback in callbacks:
            out.callback(callback.as_json())
    if not (complete and all(c.ok for c in callbacks)):
        result["exit_code"] = result["exit_code"] or 1
