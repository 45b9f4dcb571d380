"""What opcli shows on a terminal and in a pipe: colour, tables, pretty JSON, escapes, hints.

Every test runs the real command line through an ``Env`` whose streams say they are (or are
not) terminals; see tests/terminal.py.
"""

from __future__ import annotations

import io
import json

import pytest

from opcli.cli.common import Env
from opcli.cli.render import Output
from opcli.config import BUILTIN, load_config
from opcli.listener import create_app
from tests.conftest import lines_of, write_config
from tests.terminal import ANSI, Terminal, run_on

LISTEN_SECTION = "listen:" + BUILTIN.read_text().split("\nlisten:", 1)[1]


@pytest.fixture
def listener(serve, isolated):
    """The listener under uvicorn, ./opcli.yaml pointing at it; yields its journal."""
    write_config(isolated / "opcli.yaml", listen=LISTEN_SECTION)
    app = create_app(load_config(isolated / "opcli.yaml", listen=True))
    journal = lines_of(app)
    server = serve(app)
    write_config(isolated / "opcli.yaml", panel_url=f"{server.url}/operator-api", listen=LISTEN_SECTION)
    return journal


# --- colour and tables: on a terminal only, never with NO_COLOR (issue 8) ---------------------


def test_a_terminal_gets_a_coloured_table(listener):
    run = run_on("user-info", 42)
    assert run.code == 0, run.stderr
    assert ANSI.search(run.stdout), "no colour on a terminal"
    assert "id: 42" not in run.plain_stdout  # a table, not key: value lines
    rows = [line.split() for line in run.plain_stdout.splitlines()]
    assert ["id", "42"] in rows and ["name", "Olga"] in rows


def test_a_pipe_gets_plain_lines(listener):
    run = run_on("user-info", 42, stdout_tty=False, stderr_tty=False)
    assert run.code == 0, run.stderr
    assert not ANSI.search(run.stdout + run.stderr)
    assert "id: 42\n" in run.stdout and "name: Olga\n" in run.stdout


def test_no_color_keeps_the_table_without_colour(listener):
    run = run_on("user-info", 42, environ={"NO_COLOR": "1"})
    assert run.code == 0, run.stderr
    assert not ANSI.search(run.stdout + run.stderr)
    assert "id: 42" not in run.stdout and ["id", "42"] in [line.split() for line in run.stdout.splitlines()]


def test_errors_are_red_on_a_terminal_and_plain_in_a_pipe(isolated):
    write_config(isolated / "opcli.yaml", panel_url="http://127.0.0.1:9/api")
    on_tty = run_on("send", "--user", 1, "--bot", 2, "--attach", "missing.bin")
    piped = run_on("send", "--user", 1, "--bot", 2, "--attach", "missing.bin", stderr_tty=False)
    assert on_tty.code == piped.code == 2
    assert ANSI.search(on_tty.stderr) and ANSI.sub("", on_tty.stderr) == piped.stderr
    assert piped.stderr == "opcli: error: cannot read file missing.bin: No such file or directory\n"


# --- JSON: pretty and coloured on a terminal, compact in a pipe; streams always one per line --


def test_json_is_pretty_on_a_terminal_and_compact_in_a_pipe(listener):
    on_tty = run_on("user-info", 42, "--json")
    piped = run_on("user-info", 42, "--json", stdout_tty=False)
    assert on_tty.code == piped.code == 0
    assert ANSI.search(on_tty.stdout), "JSON on a terminal is coloured"
    assert on_tty.plain_stdout.count("\n") > 5 and '\n  "name": "Olga",\n' in on_tty.plain_stdout
    assert json.loads(on_tty.plain_stdout) == json.loads(piped.stdout)
    assert piped.stdout.count("\n") == 1 and not ANSI.search(piped.stdout)


def test_the_batch_stream_stays_one_object_per_line_on_a_terminal(listener, isolated):
    (isolated / "m.jsonl").write_text(
        "".join(json.dumps({"user": i, "bot": 7, "message": "m"}) + "\n" for i in range(3))
    )
    run = run_on("send", "--batch", isolated / "m.jsonl", "--json")
    assert run.code == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 4 and all(json.loads(line) for line in lines)
    assert not ANSI.search(run.stdout)


def test_verbose_json_bodies_are_pretty_on_a_terminal(listener):
    on_tty = run_on("user-info", 42, "-v", stdout_tty=False)
    piped = run_on("user-info", 42, "-v", stdout_tty=False, stderr_tty=False)
    assert '<   "name": "Olga",' in on_tty.plain_stderr
    assert '< {"id":42,"name":"Olga"' in piped.stderr  # the body as the listener sent it


# --- hints that only make sense on a terminal --------------------------------------------------


def test_message_from_a_terminal_stdin_gets_a_hint(listener):
    class TerminalStdin(io.StringIO):
        def isatty(self) -> bool:
            return True

    typed = run_on("send", "--user", 1, "--bot", 2, "-m", "-", stdin=TerminalStdin("typed\n"))
    piped = run_on("send", "--user", 1, "--bot", 2, "-m", "-", stdin=io.StringIO("piped\n"))
    assert typed.code == piped.code == 0
    assert "Ctrl-D" in typed.stderr and "Ctrl-D" not in piped.stderr
    assert [e["fields"]["message"] for e in listener] == ["typed", "piped"]


# --- received data never reaches the terminal as control characters (issue 16, item 16) -------


def call(**changes):
    entry = {
        "event": "call",
        "seq": 1,
        "time": "2026-11-24T15:30:00.123Z",
        "kind": "message_sent",
        "method": "POST",
        "path": "/operator-api",
        "fields": {"user_id": "42", "contact_id": "7", "message": "hi"},
        "attaches": [],
        "files": [],
        "status": 200,
        "reply": {"status": 1, "data": {"message_id": 1001}},
        "warnings": [],
    }
    return {**entry, **changes}


@pytest.mark.parametrize("tty", [True, False])
def test_escape_sequences_in_a_call_are_shown_escaped(tty):
    stdout = Terminal() if tty else io.StringIO()
    out = Output(Env(stdout, io.StringIO(), io.StringIO(), {}))
    forged = "\x1b[2K\r12:00:00 ok 200 message_sent"
    out.call(
        call(
            path=f"/operator-api{forged}",
            fields={"user_id": f"42{forged}", "contact_id": "7\u202e", "message": f"hi\n{forged}"},
            attaches=[{"file_url": "https://x/1.jpg\x1b]8;;evil\x07", "big": "https://x/b\x9b31m"}],
            files=[{"field": "attach", "filename": f"a{forged}.png", "size": 3, "sha256": "ab" * 32, "saved_as": None}],
        )
    )
    text = ANSI.sub("", stdout.getvalue()) if tty else stdout.getvalue()
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text and "\x9b" not in text
    assert "\u202e" not in text
    assert "\\x1b[2K\\r12:00:00 ok 200" in text and "\\u202e" in text and "\\x9b31m" in text
    # one call, one block: no line of it starts like a forged call line
    assert sum(1 for line in text.splitlines() if " ok 200 " in line[:16]) == 1


def test_received_values_in_a_table_are_escaped(listener):
    from opcli.cli.render import Output as Out

    stdout = Terminal()
    Out(Env(stdout, io.StringIO(), io.StringIO(), {})).webhook_reply(
        "user_info", {"id": 42, "name": "\x1b[31mEve", "location": None, "about": "a\nb"}
    )
    text = ANSI.sub("", stdout.getvalue())
    assert "\\x1b[31mEve" in text and "a\\nb" in text
    assert "None" not in text and ["location", "null"] in [line.split() for line in text.splitlines()]


def test_health_checks_are_dimmed_and_calls_stand_out():
    stdout = Terminal()
    out = Output(Env(stdout, io.StringIO(), io.StringIO(), {}))
    out.call(call(kind="unknown", method="GET", path="/", fields={}, reply={"opcli": "x"}))
    out.call(call())
    health, message = stdout.getvalue().split("\n", 1)
    assert health.startswith("\x1b[2m")  # dim
    assert message.startswith("\x1b[1;32m")  # bold green


# --- no Python reprs in human output (item 15) --------------------------------------------------


def test_no_python_reprs_in_a_call_block():
    stdout = io.StringIO()
    Output(Env(stdout, io.StringIO(), io.StringIO(), {})).call(
        call(
            fields={"user_id": ["42", "43"], "contact_id": "7", "message": ["a", "b"]},
            attaches=[{"big": "https://x/b"}],
            kind="message_sent",
            reply={"status": 1, "data": {}},
        )
    )
    text = stdout.getvalue()
    assert "None" not in text and "['" not in text
    assert "user 43 -> bot 7" in text  # the last value of a repeated field, as PHP reads it
    assert 'message: ["a", "b"]' in text and "photo: -  (big: https://x/b)" in text


def test_received_keys_in_findings_and_check_rows_are_escaped():
    from opcli.conformance import Check
    from opcli.protocol import Finding

    stdout, stderr = io.StringIO(), io.StringIO()
    out = Output(Env(stdout, stderr, io.StringIO(), {}))
    out.findings([Finding("warning", "vip\x1b[2K\nnotice: all good", "unknown field (the panel ignores it)")])
    out.check_row(Check("user-info-valid", False, "x\nPASS  user-info-valid", 1.0, problems=["x\nPASS  ok"]))
    assert stderr.getvalue() == "warning: vip\\x1b[2K\\nnotice: all good: unknown field (the panel ignores it)\n"
    assert stdout.getvalue().count("\n") == 1 and "x\\nPASS" in stdout.getvalue()
