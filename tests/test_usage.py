"""The command line as a newcomer meets it: one error style, global options anywhere, the help."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import typer

from opcli.cli import app
from tests.conftest import write_config


@pytest.mark.parametrize(
    "argv, line",
    [
        (["send", "--user", "abc", "--bot", "7", "-m", "x"], "--user: 'abc' is not a whole number"),
        (["send", "--user", "-5", "--bot", "7", "-m", "x"], "--user: -5 is out of range (0 to 2^63-1)"),
        (["send", "--user", "1", "--bot", str(2**63), "-m", "x"], f"--bot: {2**63} is out of range (0 to 2^63-1)"),
        (["user-info", "4.5"], "ID: '4.5' is not a whole number"),
        (["send", "--timeout", "soon"], "--timeout: 'soon' is not a number"),
        (["send", "--timeout", "0"], "--timeout: 0 is below the minimum 0.001"),
        (["listen", "--port", "70000"], "--port: 70000 is above the maximum 65535"),
        (["send", "--usr", "5"], "--usr: no such option for opcli send; did you mean --user?"),
        (["sned"], "no such command 'sned'; did you mean 'send'? (see: opcli -h)"),
        (["user-info"], "ID is required (see: opcli user-info -h)"),
        (["reply", "--user", "1", "-m", "x"], "--bot is required (see: opcli reply -h)"),
        (["send", "--user"], "--user needs a value"),
        (["config", "init", "--zzz"], "--zzz: no such option for opcli config init (see: opcli config init -h)"),
        (["send", "--batch", "m.jsonl", "--user", "1"], "--batch takes every message from FILE; drop --user"),
    ],
)
def test_every_usage_error_is_one_line(cli, argv, line):
    result = cli(*argv)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"opcli: error: {line}\n"


def test_help_version_and_no_arguments_keep_working(cli):
    from opcli import __version__

    assert cli("--version").stdout == f"opcli {__version__}\n"
    for argv in (["-h"], ["--help"], ["send", "-h"], ["config", "show", "--help"]):
        result = cli(*argv)
        assert result.exit_code == 0 and result.stdout.startswith("Usage: opcli"), argv
    bare = cli()
    assert bare.exit_code == 2 and "Usage: opcli" in bare.stdout + bare.stderr  # typer's help, as before


def test_shell_completion_still_completes():
    env = {**os.environ, "_OPCLI_COMPLETE": "complete_bash", "COMP_WORDS": "opcli se", "COMP_CWORD": "1"}
    done = subprocess.run([sys.executable, "-m", "opcli"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "send" in done.stdout.split()


# --- global options after the command (item 14) ------------------------------------------------

TWO_SITES = """\
default_site: prod
sites:
  prod: {token: prod-token-123, panel_url: "http://127.0.0.1:9/prod-api"}
  staging: {token: staging-token-1, panel_url: "http://127.0.0.1:9/staging-api"}
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["-s", "staging", "send", "--user", "1", "--bot", "2", "-m", "x", "--dry-run"],
        ["send", "-s", "staging", "--user", "1", "--bot", "2", "-m", "x", "--dry-run"],
        ["send", "--user", "1", "--bot", "2", "-m", "x", "--dry-run", "--site", "staging"],
    ],
)
def test_site_and_config_before_or_after_the_command(cli, isolated, argv):
    (isolated / "two.yaml").write_text(TWO_SITES)
    result = cli(*argv, "-c", isolated / "two.yaml")
    assert result.exit_code == 0, result.stderr
    assert "POST http://127.0.0.1:9/staging-api" in result.stdout


def test_after_the_command_wins_over_before_and_reaches_subcommands(cli, isolated):
    (isolated / "two.yaml").write_text(TWO_SITES)
    result = cli("-s", "prod", "config", "show", "--json", "-s", "staging", "-c", isolated / "two.yaml")
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["site"] == "staging" and shown["site_from"] == "--site"


def test_options_that_mean_something_are_on_every_command(cli, isolated):
    validate = cli("config", "validate", "--json")
    assert validate.exit_code == 0
    assert json.loads(validate.stdout) == {
        "file": json.loads(validate.stdout)["file"],
        "builtin": True,
        "sites": ["local"],
        "site": "local",
        "site_from": "default_site",
        "listen": "http://127.0.0.1:8765",
        "ok": True,
    }
    write_config(isolated / "opcli.yaml", token="short")  # an invalid config: --json leaves stdout empty
    (isolated / "opcli.yaml").write_text((isolated / "opcli.yaml").read_text() + "    tiemout: 3\n")
    bad = cli("config", "validate", "--json")
    assert bad.exit_code == 2 and bad.stdout == "" and "unknown key 'sites.test.tiemout'" in bad.stderr


def test_demo_json_is_one_document_of_the_steps_it_ran(cli):
    result = cli("demo", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is True and doc["calls"] >= 14 and doc["listener"].startswith("http://127.0.0.1:")
    commands = [step["command"] for step in doc["steps"]]
    assert commands[1] == "opcli user-info 42 --json" and commands[4] == "opcli check --send --json"
    assert all(step["exit_code"] == 0 for step in doc["steps"])
    assert doc["steps"][1]["output"]["id"] == 42
    assert doc["steps"][4]["output"]["failed"] == 0
    operator = doc["steps"][-1]  # the listener plays the panel: the message, then its three callbacks
    assert operator["command"].startswith("opcli send ") and operator["output"]["status"] == 1
    assert [c["kind"] for c in operator["callbacks"]] == ["user_info", "user_media", "send_message"]


# --- the help (item 16) ------------------------------------------------------------------------


def all_commands():
    root = typer.main.get_command(app)
    for name, command in root.commands.items():
        subs = getattr(command, "commands", None)
        for sub, subcommand in (subs or {None: command}).items():
            yield " ".join(filter(None, [name, sub])), subcommand


@pytest.mark.parametrize("name", [name for name, _ in all_commands()])
def test_each_command_has_a_summary_examples_and_the_epilog(cli, name):
    result = cli(*name.split(), "--help")
    assert result.exit_code == 0
    help_text = result.stdout
    usage = help_text.splitlines()[0]
    assert not re.search(r"[{}]|\[\[", usage), usage
    assert "Examples:" in help_text and f"opcli {name.split()[0]}" in help_text.split("Examples:")[1]
    assert "OPCLI_TOKEN" in help_text and "Exit codes" in help_text
    assert "README" not in help_text  # an installed opcli has none at hand
    assert "-s, --site NAME" in help_text


def test_the_command_list_is_not_cut_mid_sentence(cli):
    result = cli("--help")
    listing = result.stdout.split("Commands:")[1]
    assert "..." not in listing
    for variable in ("OPCLI_CONFIG", "OPCLI_SITE", "OPCLI_TOKEN", "OPCLI_DEBUG", "NO_COLOR"):
        assert variable in result.stdout
    assert "124" in result.stdout and "130" in result.stdout
