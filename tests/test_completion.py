"""`opcli completion`: the scripts, and completion working in a real bash."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

OPCLI = Path(sys.executable).parent / "opcli"


@pytest.mark.parametrize(
    "shell, marker",
    [("bash", "complete -o default -F"), ("zsh", "#compdef opcli"), ("fish", "complete --command opcli")],
)
def test_each_shell_gets_its_script(cli, shell, marker):
    result = cli("completion", shell)
    assert result.exit_code == 0 and marker in result.stdout and "_OPCLI_COMPLETE" in result.stdout


def test_an_unknown_shell_is_a_usage_error(cli):
    result = cli("completion", "tcsh")
    assert result.exit_code == 2 and "choose bash, zsh or fish" in result.stderr


def test_bash_completes_commands_and_options():
    script = (
        f'eval "$({OPCLI} completion bash)"\n'
        'complete_words() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _opcli_completion opcli; '
        'printf "%s\\n" "${COMPREPLY[@]}"; }\n'
        "complete_words opcli us\necho ---\ncomplete_words opcli listen --js\n"
    )
    env = {**os.environ, "PATH": f"{OPCLI.parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, env=env)
    commands, options = done.stdout.split("---\n")
    assert commands.split() == ["user-info", "user-media"], done.stderr
    assert options.split() == ["--json"]
