"""The README is tested: commands documented, examples that really run, CI runs the Quickstart."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import httpx
import pytest
import typer

from opcli.cli import app
from opcli.config import BUILTIN

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def commands() -> list[tuple[str, object]]:
    group = typer.main.get_command(app)
    found = []
    for name, cmd in group.commands.items():
        subs = getattr(cmd, "commands", None)
        if subs:
            found += [(f"{name} {sub}", subcmd) for sub, subcmd in subs.items()]
        else:
            found.append((name, cmd))
    return found


@pytest.mark.parametrize("name, cmd", commands())
def test_every_command_has_help_and_is_in_the_readme(name, cmd):
    assert (cmd.help or "").strip(), f"opcli {name} has no help text"
    assert f"opcli {name}" in README


def test_quickstart_is_two_lines_and_ci_runs_the_second():
    block = re.search(r"## Quickstart\s+```sh\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert len(block) == 2
    assert "opcli demo" in block[0]
    ci = (ROOT / ".ci" / "run").read_text()
    assert block[1] in ci.splitlines()


def test_readme_examples_run_on_the_builtin_defaults(cli, isolated, monkeypatch, opcli_listener):
    block = re.search(r"## Examples.*?```sh\n(.*?)```", README, re.S).group(1)
    examples = [shlex.split(line)[1:] for line in block.splitlines() if line.startswith("opcli ")]
    assert len(examples) >= 10
    config = isolated / "builtin.yaml"  # the built-in config, but on the plugin's free port
    config.write_text(BUILTIN.read_text().replace("http://127.0.0.1:8765", opcli_listener.url))
    monkeypatch.setenv("OPCLI_CONFIG", str(config))
    monkeypatch.setenv("OPCLI_TOKEN", opcli_listener.token)
    # run as written from the repository root: the example files are the repository's own
    shutil.copytree(ROOT / "examples", isolated / "examples")
    for argv in examples:
        result = cli(*argv)
        assert result.exit_code == 0, f"opcli {' '.join(argv)}: {result.stdout}{result.stderr}"
    assert (isolated / "report.xml").exists()
    used = {arg for argv in examples for arg in argv if arg.startswith("examples/")}
    assert used == {"examples/photo.jpg", "examples/messages.jsonl", "examples/messages.csv"}
    sent = [c for c in opcli_listener.calls if c.kind == "message_sent"]
    assert any(f["filename"] == "photo.jpg" for c in sent for f in c.files)
    assert {c.kind for c in opcli_listener.calls} == {"message_sent", "user_info", "user_media", "send_message"}


def test_the_documented_journal_line_has_the_real_keys(opcli_listener):
    documented = json.loads(re.search(r'```json\n(\{"event": "call".*?)```', README, re.S).group(1))
    httpx.post(opcli_listener.endpoints["user_info"], data={"token": opcli_listener.token, "user_id": "42"})
    [call] = opcli_listener.wait_for("user_info")
    assert list(call.as_json()) == list(documented)


def test_the_readme_says_how_to_activate_the_venv():
    assert ". .venv/bin/activate" in README


def test_the_library_example_runs_as_written(capsys):
    block = re.search(r"## The Python library.*?```python\n(.*?)```", README, re.S).group(1)
    exec(compile(block, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert printed.startswith("cannot reach http://127.0.0.1:") and "/hooks/user-info" in printed
