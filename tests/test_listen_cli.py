"""`opcli listen` for real: a subprocess on a free port, driven by curl and by `opcli send`."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from opcli.config import BUILTIN
from tests.conftest import curl, form_request, half_closed


def message_form(message: str, *extra: str) -> list[str]:
    """curl's -F arguments of a message_sent call from user 42 to bot 7 on the built-in token."""
    fields = ["token=dev-token", "action=message_sent", "user_id=42", "contact_id=7", f"message={message}", *extra]
    return [arg for field in fields for arg in ("-F", field)]


def test_curl_multipart_and_urlencoded(listen_proc, isolated):
    upload = isolated / "résumé.pdf"
    upload.write_bytes(bytes(range(256)) * 3000)
    saved, journal = isolated / "saved", isolated / "calls.jsonl"
    proc = listen_proc(
        "listen", "--port", "0", "--count", "2", "--json", "--journal", str(journal), "--save-dir", str(saved)
    )
    reply = json.loads(curl(*message_form("Привет ✓", f"attach=@{upload}"), f"{proc.url}/operator-api"))
    assert reply["status"] == 1 and reply["data"]["message_id"]
    info = json.loads(
        curl("--data-urlencode", "token=dev-token", "--data-urlencode", "user_id=42", f"{proc.url}/hooks/user-info")
    )
    assert info["id"] == 42 and info["name"] == "Olga"
    assert proc.wait() == 0
    lines = proc.stdout
    assert lines == journal.read_text().splitlines(keepends=True)
    ready, sent, asked = (json.loads(line) for line in lines)
    assert ready == {
        "event": "ready",
        "url": proc.url,
        "endpoints": {
            "message_sent": f"{proc.url}/operator-api",
            "send_message": f"{proc.url}/hooks/send-message",
            "user_info": f"{proc.url}/hooks/user-info",
            "user_media": f"{proc.url}/hooks/user-media",
        },
        "inspector": f"{proc.url}/_opcli/",
    }
    assert sent["kind"] == "message_sent" and sent["seq"] == 1 and sent["status"] == 200
    assert sent["fields"]["message"] == "Привет ✓"
    [f] = sent["files"]
    assert f["filename"] == "résumé.pdf" and f["size"] == upload.stat().st_size
    assert f["sha256"] == hashlib.sha256(upload.read_bytes()).hexdigest()
    assert hashlib.sha256(Path(f["saved_as"]).read_bytes()).hexdigest() == f["sha256"]
    assert asked["kind"] == "user_info" and asked["content_type"] == "application/x-www-form-urlencoded"
    assert asked["reply"]["name"] == "Olga"
    assert "dev-token" not in "".join(lines) + proc.stderr


def test_a_rejected_call_makes_exit_1(listen_proc):
    proc = listen_proc("listen", "--port", "0", "--count", "1", "--json")
    out = json.loads(curl("-d", "token=wrong", "-d", "user_id=1", f"{proc.url}/hooks/user-media"))
    assert out == {"status": 0, "message": "invalid token"}
    assert proc.wait() == 1
    entry = json.loads(proc.stdout[1])
    assert entry["status"] == 401 and entry["token_ok"] is False


def test_unknown_calls_are_journaled_but_not_counted(listen_proc):
    proc = listen_proc("listen", "--port", "0", "--count", "1", "--json")
    curl(f"{proc.url}/")
    curl("-d", "x=1", f"{proc.url}/nope")
    curl(f"{proc.url}/hooks/user-info")  # GET on an endpoint: 405, unknown
    curl("-d", "token=dev-token", "-d", "user_id=43", f"{proc.url}/hooks/user-info")
    assert proc.wait() == 0
    entries = [json.loads(line) for line in proc.stdout[1:]]
    assert [(e["kind"], e["status"]) for e in entries] == [
        ("unknown", 200),
        ("unknown", 404),
        ("unknown", 405),
        ("user_info", 200),
    ]


def test_timeout_before_count_is_124(listen_proc):
    proc = listen_proc("listen", "--port", "0", "--count", "1", "--timeout", "0.5", "--json")
    assert proc.wait() == 124
    assert len(proc.stdout) == 1  # only the ready line


def test_timeout_without_count_is_0(listen_proc):
    proc = listen_proc("listen", "--port", "0", "--timeout", "0.5")
    curl("-d", "token=dev-token", "-d", "user_id=42", f"{proc.url}/hooks/user-media")
    assert proc.wait() == 0
    assert "user_media" in "".join(proc.stdout)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_stop_cleanly_and_keep_the_journal(listen_proc, isolated, signum, code):
    journal = isolated / "j.jsonl"
    proc = listen_proc("listen", "--port", "0", "--journal", str(journal))
    curl("-d", "token=dev-token", "-d", "user_id=42", f"{proc.url}/hooks/user-info")
    deadline = time.monotonic() + 10
    while len(journal.read_text().splitlines()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.proc.send_signal(signum)
    assert proc.wait() == code
    assert "Traceback" not in proc.stderr
    kinds = [json.loads(line)["event"] for line in journal.read_text().splitlines()]
    assert kinds == ["ready", "call"]


def test_port_in_use_is_exit_2(isolated):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "opcli", "listen", "--port", str(port)], capture_output=True, text=True, timeout=30
        )
    assert done.returncode == 2
    assert f"opcli: error: cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_human_output(listen_proc):
    proc = listen_proc("listen", "--port", "0", "--count", "2")
    curl(*message_form("hello there", "attaches[0][file_url]=https://x/1.jpg"), f"{proc.url}/operator-api")
    curl("-d", "token=nope", "-d", "user_id=5", f"{proc.url}/hooks/user-info")
    assert proc.wait() == 1
    out = "".join(proc.stdout)
    assert "message_sent" in out and "user 42 -> bot 7" in out and '"hello there"' in out
    assert "photo: https://x/1.jpg" in out
    assert "401 user_info" in out and "rejected: invalid token" in out
    assert "Stopped (count): 2 calls, 1 rejected" in proc.stderr


def test_send_reaches_listen_on_the_builtin_defaults(listen_proc, isolated, cli):
    # the built-in config, on a free port instead of 8765 (tests never bind a fixed port)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    (isolated / "opcli.yaml").write_text(BUILTIN.read_text().replace(":8765/", f":{port}/"))
    journal = isolated / "j.jsonl"
    proc = listen_proc("listen", "--count", "1", "--json", "--journal", str(journal), cwd=isolated)
    assert proc.url == f"http://127.0.0.1:{port}"
    upload = isolated / "pic.jpg"
    upload.write_bytes(b"\xff\xd8\xff" + bytes(70000))
    result = cli(
        "send",
        "--user",
        42,
        "--bot",
        7,
        "-m",
        "Hello, Olga 👋",
        "--photo",
        "https://x/1.jpg",
        "--big",
        "https://x/1_200.jpg",
        "--photo",
        "https://x/2.jpg",
        "--attach",
        upload,
    )
    assert result.exit_code == 0, result.stderr
    assert proc.wait() == 0
    entry = json.loads(journal.read_text().splitlines()[1])
    assert entry["fields"] == {
        "action": "message_sent",
        "user_id": "42",
        "contact_id": "7",
        "message": "Hello, Olga 👋",
    }
    assert entry["attaches"] == [
        {"file_url": "https://x/1.jpg", "big": "https://x/1_200.jpg"},
        {"file_url": "https://x/2.jpg", "big": "https://x/2.jpg"},
    ]
    assert entry["files"][0]["sha256"] == hashlib.sha256(upload.read_bytes()).hexdigest()
    assert f"message_id {entry['reply']['data']['message_id']}" in result.stdout


def test_a_closed_stdout_stops_the_listener_cleanly(isolated):
    """`opcli listen --json | head -2`: the listener stops when its reader goes away, journal kept."""
    journal, err = isolated / "j.jsonl", isolated / "err"
    pipeline = subprocess.Popen(
        f"{sys.executable} -m opcli listen --port 0 --json --journal {journal} 2>{err} | head -2 >/dev/null",
        shell=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (journal.exists() and journal.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        url = json.loads(journal.read_text().splitlines()[0])["url"]
        for _ in range(6):  # head takes the ready line and one call; a later write finds the pipe closed
            subprocess.run(
                ["curl", "-s", "-d", "token=dev-token", "-d", "user_id=42", f"{url}/hooks/user-info"],
                capture_output=True,
                timeout=30,
            )
        assert pipeline.wait(30) == 0
    finally:
        if pipeline.poll() is None:
            os.killpg(pipeline.pid, signal.SIGKILL)
            pipeline.wait(10)
    text = err.read_text()
    assert "Traceback" not in text and "BrokenPipe" not in text
    assert "Stopped (stdout closed)" in text
    calls = [json.loads(line) for line in journal.read_text().splitlines()[1:]]
    # answered until the closed pipe was noticed; then refused while it stops
    statuses = [c["status"] for c in calls]
    assert statuses[:2] == [200, 200] and set(statuses[2:]) <= {200, 503}, statuses
    assert statuses == sorted(statuses)


def test_a_stdout_nobody_reads_never_stalls_the_listener(isolated):
    """`opcli listen --json | (sleep)`: calls are still answered and journaled; stdout lines wait or drop."""
    import httpx

    journal = isolated / "j.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "opcli", "listen", "--port", "0", "--json", "--journal", str(journal)],
        stdout=subprocess.PIPE,  # never read until the end: the pipe fills after ~150 lines
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not (journal.exists() and journal.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        url = json.loads(journal.read_text().splitlines()[0])["url"]
        with httpx.Client(timeout=10) as client:
            statuses = [
                client.post(f"{url}/hooks/user-info", data={"token": "dev-token", "user_id": str(i)}).status_code
                for i in range(600)
            ]
        assert statuses == [200] * 600
        assert len(journal.read_text().splitlines()) == 601
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143
    assert len(out.splitlines()) == 601  # every line reached stdout once it was read
    assert b"Traceback" not in err


def _listener_writing_to(stdout: Any, *args: str) -> tuple[subprocess.Popen, str]:
    """``opcli listen --port 0 --json`` with its stdout on ``stdout``; returns it and its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "opcli", "listen", "--port", "0", "--json", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stderr:
        if line.startswith("Ready: "):
            return proc, line.split()[1]
    proc.kill()
    raise AssertionError("the listener never got ready")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(10)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@pytest.mark.parametrize("stdout", ["file", "pipe"])  # written on the loop; by a thread of its own
def test_a_call_is_on_stdout_flushed_before_its_reply_is_sent(tmp_path, stdout):
    import httpx

    out = tmp_path / "out.jsonl"
    with out.open("w") as sink:
        proc, url = _listener_writing_to(sink if stdout == "file" else subprocess.PIPE)
    if stdout == "pipe":
        os.set_blocking(proc.stdout.fileno(), False)  # (our end: a read takes what is there, at once)
    got = b""

    def last_line() -> dict:
        nonlocal got
        if stdout == "file":
            return json.loads(out.read_text().splitlines()[-1])
        got += os.read(proc.stdout.fileno(), 1 << 20)
        return json.loads(got.splitlines()[-1])

    try:
        with httpx.Client() as client:
            for n in range(1, 41):
                r = client.post(f"{url}/hooks/user-info", data={"token": "dev-token", "user_id": str(n)})
                assert r.status_code == 200
                last = last_line()  # read the moment the reply came
                assert (last["seq"], last["fields"]["user_id"]) == (n, str(n))
    finally:
        _stop(proc)


def test_a_stdout_nobody_reads_holds_a_reply_up_for_a_while_only(tmp_path):
    import httpx

    proc, url = _listener_writing_to(subprocess.PIPE)  # its stdout is never read: the pipe fills up
    try:
        with httpx.Client(timeout=10) as client:
            slowest = 0.0
            for n in range(400):  # ~600-byte lines: the 64 KiB pipe is full after about a hundred
                started = time.monotonic()
                r = client.post(f"{url}/hooks/user-info", data={"token": "dev-token", "user_id": str(n)})
                slowest = max(slowest, time.monotonic() - started)
                assert r.status_code == 200
        assert slowest >= 0.5  # a reply waited for the stalled stdout (STALL_SECONDS); then none did
        assert proc.poll() is None
    finally:
        _stop(proc)


def test_a_half_closing_client_gets_its_answer_while_stdout_shows_the_line(tmp_path):
    """`nc -N` against `listen --json | reader`: the reply waits for stdout's flush, the close waits for the reply."""
    import threading

    proc, url = _listener_writing_to(subprocess.PIPE)
    reader = threading.Thread(target=proc.stdout.read, daemon=True)  # reads until the listener ends
    reader.start()
    try:
        request = form_request(b"token=dev-token&user_id=42")
        for _ in range(20):
            response = half_closed(url, request)
            assert response.startswith(b"HTTP/1.1 200 "), response
    finally:
        proc.terminate()
        reader.join(10)  # (its read ends with the listener: then the pipe may be closed)
        _stop(proc)


def test_a_malformed_request_is_on_stdout_before_its_400_too():
    """The HTTP layer's own refusals (malformed HTTP) wait for stdout's flush as the app's answers do."""
    proc, url = _listener_writing_to(subprocess.PIPE)
    os.set_blocking(proc.stdout.fileno(), False)
    try:
        got = b""
        for n in range(1, 11):
            response = half_closed(url, b"GARBAGE / HTTP/1.1\r\n\r\n")
            assert response.startswith(b"HTTP/1.1 400 "), response
            got += os.read(proc.stdout.fileno(), 1 << 20)  # read the moment the answer came
            last = json.loads(got.splitlines()[-1])
            assert (last["seq"], last["status"]) == (n, 400)
    finally:
        _stop(proc)
