"""`send --batch` as scripts use it: stdout whatever stderr is, `| head`, Ctrl-C, typos, encodings.

Also: `send` and `send --batch` give the same answer for the same input (one validator).
"""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests import test_batch
from tests.conftest import free_port, write_config

panel = test_batch.panel  # a fixture: the listener's app as the panel, ./opcli.yaml pointing at it


def messages(path: Path, count: int, **extra) -> Path:
    path.write_text(
        "".join(json.dumps({"user": i, "bot": 7, "message": f"m{i}", **extra}) + "\n" for i in range(count))
    )
    return path


def opcli(*argv: object, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "opcli", *map(str, argv)], **kwargs)


# --- item 1: the results reach stdout when stderr is a terminal ----------------------------------


def test_results_go_to_stdout_when_stderr_is_a_terminal(panel, isolated):
    batch = messages(isolated / "m.jsonl", 300)
    master, slave = pty.openpty()
    terminal_output = bytearray()

    def drain() -> None:  # the terminal's screen: read it so that the progress bar never blocks
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            terminal_output.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    with open(isolated / "out.jsonl", "wb") as out:
        proc = opcli("send", "--batch", batch, "--json", stdout=out, stderr=slave, env={**os.environ, "TERM": "xterm"})
        os.close(slave)
        assert proc.wait(60) == 0
    reader.join(10)
    os.close(master)
    lines = (isolated / "out.jsonl").read_text().splitlines()
    assert len(lines) == 301 and json.loads(lines[-1])["summary"]["sent"] == 300
    assert all(json.loads(line)["ok"] for line in lines[:-1])
    assert b'"line"' not in terminal_output  # no result reached the screen
    assert b"Sent 300 of 300 messages" in terminal_output


# --- item 2: `| head -1` ends it promptly -------------------------------------------------------


def test_a_reader_that_goes_away_ends_the_batch_with_141(panel, isolated):
    batch = messages(isolated / "m.jsonl", 3000)
    proc = opcli("send", "--batch", batch, "--json", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    assert json.loads(first)["ok"]
    proc.stdout.close()  # as `head -1` does
    try:
        code = proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the batch did not stop when its reader went away") from None
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert code == 141, stderr
    assert "Traceback" not in stderr and "Sent " in stderr
    assert " of 3000 messages" in stderr and " not attempted" in stderr  # the whole file, not what was read
    assert len(panel) < 3000  # it stopped, rather than sending everything into the void


# --- item 9: a summary on every exit, with where to resume ---------------------------------------


@pytest.mark.parametrize(
    ("signum", "code", "source"),
    [(signal.SIGINT, 130, "file"), (signal.SIGTERM, 143, "file"), (signal.SIGTERM, 143, "stdin")],
    ids=["ctrl-c", "sigterm", "sigterm-stdin"],
)
def test_ctrl_c_and_sigterm_print_the_summary_and_where_to_resume(stdlib_server, isolated, signum, code, source):
    def slow(received):
        time.sleep(0.1)
        return 200, {"Content-Type": "application/json"}, b'{"status": 1, "data": {"message_id": 1}}'

    stdlib_server.respond = slow
    write_config(isolated / "opcli.yaml", panel_url=f"{stdlib_server.url}/api")
    batch = messages(isolated / "m.jsonl", 200)
    (isolated / "m.jsonl").write_text(batch.read_text() + "\n{not json}\n")  # a bad line never read: not attempted
    with open(batch, "rb") as stdin:
        proc = opcli(
            "send",
            "--batch",
            batch if source == "file" else "-",
            "--json",
            "--concurrency",
            1,
            stdin=stdin if source == "stdin" else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        results = [json.loads(proc.stdout.readline()) for _ in range(3)]
        proc.send_signal(signum)
        rest, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    summary = json.loads(rest.splitlines()[-1])["summary"]
    done = len(results) + len(rest.splitlines()) - 1
    assert summary["sent"] == done and summary["through_line"] == done
    if source == "file":  # the whole file: what was never read counts as not attempted
        assert summary["total"] == 201 and summary["invalid"] == 0
    else:  # stdin: only what was read (the rest may never come)
        assert done < summary["total"] < 201
    # the one message being sent when it stopped may have been delivered: it is named, not counted as not sent
    assert len(summary["in_flight"]) <= 1 and all(line > done for line in summary["in_flight"])
    assert summary["not_attempted"] + len(summary["in_flight"]) == summary["total"] - done > 0
    assert f"Sent {done} of {summary['total']} messages" in stderr
    assert f"{summary['not_attempted']} not attempted" in stderr and f"every line up to {done} done" in stderr
    assert "Traceback" not in stderr


def test_exit_3_prints_the_summary(cli, isolated):
    write_config(isolated / "opcli.yaml", panel_url=f"http://127.0.0.1:{free_port()}/api")
    result = cli("send", "--batch", messages(isolated / "m.jsonl", 3))
    assert result.exit_code == 3
    assert "Sent 0 of 3 messages" in result.stderr and "3 failed" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("opcli: error: no message reached the panel")


def test_the_summary_has_no_python_reprs(cli, isolated, panel):
    (isolated / "m.jsonl").write_text('{"user": "x", "bot": 1, "message": "m"}\n')
    result = cli("send", "--batch", isolated / "m.jsonl")
    assert result.exit_code == 1
    assert "None" not in result.stderr and "p50" not in result.stderr  # no latency to show: none said


# --- item 6: an unknown key makes its line invalid -------------------------------------------


def test_a_misspelled_key_makes_the_line_invalid(cli, panel, isolated):
    (isolated / "m.jsonl").write_text(
        "".join(
            json.dumps(record) + "\n"
            for record in (
                {"user": 1, "bot": 2, "message": "a", "photo": [{"file_url": "https://x/1.jpg"}]},
                {"user": 1, "bot": 2, "message": "b", "atach": "f.png"},
                {"user": 1, "bot": 2, "text": "c"},
                {"user": 1, "bot": 2, "message": "d"},
            )
        )
    )
    result = cli("send", "--batch", isolated / "m.jsonl", "--json")
    assert result.exit_code == 1
    errors = [json.loads(line)["error"] for line in result.stdout.splitlines()[:-1]]
    assert errors[:3] == [
        "unknown key 'photo' (did you mean 'photos'?)",
        "unknown key 'atach' (did you mean 'attach'?)",
        "unknown key 'text' (valid: user, bot, message, photos, attach)",
    ]
    assert [e["fields"]["message"] for e in panel] == ["d"]


def test_a_misspelled_csv_column_stops_before_sending(cli, panel, isolated):
    (isolated / "m.csv").write_text("user,bot,message,photo\n1,2,hi,[]\n")
    result = cli("send", "--batch", isolated / "m.csv")
    assert result.exit_code == 2
    assert "unknown column 'photo' (did you mean 'photos'?)" in result.stderr
    assert panel == []


# --- item 18: a byte-order mark, a line that is not UTF-8 -----------------------------------


def test_csv_with_a_byte_order_mark_works(cli, panel, isolated):
    (isolated / "m.csv").write_bytes("user,bot,message\n42,7,Привет\n".encode("utf-8-sig"))
    result = cli("send", "--batch", isolated / "m.csv")
    assert result.exit_code == 0, result.stderr
    assert [e["fields"]["message"] for e in panel] == ["Привет"]


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_a_line_that_is_not_utf8_is_reported_and_skipped(cli, panel, isolated, suffix):
    lines = (
        [
            b'{"user": 1, "bot": 2, "message": "ok"}',
            b'{"user": 1, "bot": 2, "message": "caf\xe9"}',
            b'{"user": 3, "bot": 2, "message": "ok"}',
        ]
        if suffix == "jsonl"
        else [b"user,bot,message", b"1,2,ok", b"1,2,caf\xe9", b"3,2,ok"]
    )
    (isolated / f"m.{suffix}").write_bytes(b"\n".join(lines) + b"\n")
    result = cli("send", "--batch", isolated / f"m.{suffix}", "--json")
    assert result.exit_code == 1
    out = [json.loads(line) for line in result.stdout.splitlines()]
    bad = [r for r in out[:-1] if not r["ok"]]
    assert [(r["line"], r["error"]) for r in bad] == [
        (
            len(lines) - 1,
            "not UTF-8 (invalid continuation byte at byte 38)"
            if suffix == "jsonl"
            else "not UTF-8 (invalid continuation byte at byte 8)",
        )
    ]
    assert out[-1]["summary"]["sent"] == 2 and len(panel) == 2


# --- item 7: send and send --batch answer alike, before anything is sent ------------------------


@pytest.mark.parametrize(
    "flags, record, reason",
    [
        (
            ["--photo", "ftp://x/1.jpg"],
            {"photos": [{"file_url": "ftp://x/1.jpg"}]},
            'photo URL "ftp://x/1.jpg" must start',
        ),
        (["--photo", "photo.jpg"], {"photos": [{"file_url": "photo.jpg"}]}, 'photo URL "photo.jpg" must start'),
        (
            ["--user", "99999999999999999999999999"],
            {"user": 99999999999999999999999999},
            "user: 99999999999999999999999999 is out of range",
        ),
        (["--user", str(2**63)], {"user": str(2**63)}, f"user: {2**63} is out of range (0 to 2^63-1)"),
        (["--user", "-1"], {"user": -1}, "user: -1 is out of range"),
        (["--bot", "abc"], {"bot": "abc"}, "bot: 'abc' is not a whole number"),
        (
            ["--attach", "missing.bin"],
            {"attach": "missing.bin"},
            "cannot read file missing.bin: No such file or directory",
        ),
        (["--attach", "."], {"attach": "."}, "cannot read file .: Is a directory"),
    ],
)
def test_send_and_batch_refuse_the_same_input_the_same_way(cli, stdlib_server, isolated, flags, record, reason):
    write_config(isolated / "opcli.yaml", panel_url=f"{stdlib_server.url}/api")
    base = {"--user": "1", "--bot": "2", "-m": "hi"}
    for flag, value in zip(flags[::2], flags[1::2], strict=True):
        base[flag] = value
    single = cli("send", *[part for pair in base.items() for part in pair])
    (isolated / "m.jsonl").write_text(json.dumps({"user": 1, "bot": 2, "message": "hi", **record}) + "\n")
    batch = cli("send", "--batch", isolated / "m.jsonl", "--json")
    assert single.exit_code == 2 and single.stdout == ""
    assert single.stderr.startswith("opcli: error: ") and reason.split(": ", 1)[-1] in single.stderr
    assert batch.exit_code == 1
    assert reason in json.loads(batch.stdout.splitlines()[0])["error"]
    assert stdlib_server.received == []


def test_the_largest_id_is_accepted_by_both(cli, stdlib_server, isolated):
    write_config(isolated / "opcli.yaml", panel_url=f"{stdlib_server.url}/api")
    largest = str(2**63 - 1)
    assert cli("send", "--user", largest, "--bot", 0, "-m", "hi").exit_code == 0
    (isolated / "m.jsonl").write_text(json.dumps({"user": 2**63 - 1, "bot": 0, "message": "hi"}) + "\n")
    assert cli("send", "--batch", isolated / "m.jsonl").exit_code == 0
    assert [r.field("user_id") for r in stdlib_server.received] == [largest, largest]


def test_exit_2_leaves_stdout_empty_even_with_json(cli, isolated):
    (isolated / "b.csv").write_text("user,bot,mesage\n1,2,x\n")
    for source in (isolated / "b.csv", isolated / "missing.jsonl"):
        result = cli("send", "--batch", source, "--json")
        assert result.exit_code == 2 and result.stdout == "", result.stdout
        assert result.stderr.startswith("opcli: error: ") and "Sent " not in result.stderr


def test_a_signal_raised_in_the_middle_of_an_asyncio_socket_write_stops_the_run_without_a_traceback(caplog):
    """SIGTERM's handler raises Signalled wherever the main thread is: inside a transport's send()
    (what send --batch does most), asyncio must let it through as it lets Ctrl-C through -- not log a
    "Fatal write error" traceback and go on."""
    import asyncio
    import logging
    import socket

    from opcli.errors import Signalled

    class SignalledMidSend(socket.socket):
        def send(self, data, *args):  # noqa: ANN001, ANN002
            raise Signalled(signal.SIGTERM)

    async def write_once() -> None:
        ours, theirs = socket.socketpair()
        sock = SignalledMidSend(ours.family, ours.type, fileno=ours.detach())
        transport = None
        try:
            transport, _ = await asyncio.get_running_loop().create_connection(asyncio.Protocol, sock=sock)
            transport.write(b"a request")
            await asyncio.sleep(0.05)
        finally:
            if transport is not None:
                transport.abort()
            sock.close()
            theirs.close()

    with caplog.at_level(logging.DEBUG, logger="asyncio"), pytest.raises(Signalled) as raised:
        asyncio.run(write_once())
    assert raised.value.exit_code == 143
    assert not [r for r in caplog.records if "Fatal" in r.getMessage()]
