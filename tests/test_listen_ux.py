"""What `opcli listen` tells a person: warnings, unknown paths, the network, escapes, bad paths."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

from tests.conftest import curl
from tests.test_listen_cli import message_form


def test_what_a_site_got_wrong_is_shown_under_the_call(listen_proc, isolated):
    upload = isolated / "a.png"
    upload.write_bytes(b"png")
    proc = listen_proc("listen", "--port", "0", "--count", "2")
    fields = ["token=dev-token", "action=message_sent", "user_id=42", "contact_id=7", "text=hello"]
    form = [arg for field in fields for arg in ("-F", field)]
    form += ["-F", f"file=@{upload}", "-F", "attaches[0][file_url]=ftp://x/1.jpg"]
    assert json.loads(curl(*form, f"{proc.url}/operator-api"))["status"] == 1  # accepted...
    curl(*message_form("hi", "attaches[0][file_url]=https://x/1.jpg"), f"{proc.url}/operator-api")
    assert proc.wait() == 0
    out = "".join(proc.stdout)
    first, second = out.split("\n", 1)[1].split("message_sent")[0], out.split("message_sent", 2)[2]
    # ... but the person at the terminal sees what the panel would have ignored
    for warning in (
        "warning: file part 'file' is not named 'attach'",
        "warning: attaches[0][file_url] is not an http(s) URL",
        "warning: attaches[0] has no big (thumbnail)",
        "warning: unknown field: text",
        "warning: message is missing",
    ):
        assert warning in first
    assert "warning: attaches[0] has no big (thumbnail)" in second and "unknown field" not in second


def test_strict_rejects_what_earns_a_warning(listen_proc):
    proc = listen_proc("listen", "--port", "0", "--count", "1", "--strict", "--json")
    fields = ["token=dev-token", "action=message_sent", "user_id=42", "contact_id=7", "text=hello"]
    reply = curl("-w", " %{http_code}", *[arg for field in fields for arg in ("-F", field)], f"{proc.url}/operator-api")
    assert reply.endswith(" 422") and "--strict: unknown field: text; message is missing" in reply
    assert proc.wait() == 1
    line = json.loads(proc.stdout[1])
    assert line["status"] == 422 and line["warnings"] == ["unknown field: text", "message is missing"]


def test_calls_to_unknown_paths_are_named_in_the_summary(listen_proc):
    proc = listen_proc("listen", "--port", "0", "--count", "1", "--timeout", "1.5")
    curl("-d", "token=dev-token", "-d", "user_id=42", f"{proc.url}/hooks/user_info")
    curl(f"{proc.url}/")  # a health check is no sign of a wrong URL: not counted
    curl(f"{proc.url}/{'x' * 5000}")  # a long path is cut short in the stop line
    for n in range(5):
        curl(f"{proc.url}/elsewhere/{n % 4}")
    assert proc.wait() == 124
    assert (
        "0 calls, 0 rejected; 7 calls to no endpoint "
        f"(POST /hooks/user_info, GET /{'x' * 76}..., GET /elsewhere/0, ...)" in proc.stderr
    )


def test_a_wildcard_address_warns_and_gives_a_usable_url(listen_proc):
    proc = listen_proc("listen", "--host", "0.0.0.0", "--port", "0", "--count", "1", "--timeout", "5")
    port = proc.url.rsplit(":", 1)[1]
    curl("-d", "token=dev-token", "-d", "user_id=42", f"http://127.0.0.1:{port}/hooks/user-info")
    assert proc.wait() == 0
    assert "warning: listening on every interface: the endpoints are open to anyone on the network" in proc.stderr
    assert f"http://127.0.0.1:{port} here" in proc.stderr
    assert f"user_info     POST http://127.0.0.1:{port}/hooks/user-info" in proc.stderr


def test_escape_sequences_from_a_client_are_shown_escaped(listen_proc):
    proc = listen_proc("listen", "--port", "0", "--count", "2")
    curl("-d", "token=dev-token", "-d", "user_id=42", f"{proc.url}/hooks/user-info%1B%5B2K%0D12:00:00%20ok%20200")
    forged = "\x1b[2K\r12:00:00 ok 200 user_info"
    curl(*message_form(f"hi{forged}", f"attaches[0][file_url]=https://x/{forged}"), f"{proc.url}/operator-api")
    curl("-d", "token=dev-token", "-d", f"user_id=42{forged}", f"{proc.url}/hooks/user-info")
    assert proc.wait() == 1
    out = "".join(proc.stdout)
    assert "\x1b" not in out and "\r" not in out
    assert "/hooks/user-info\\x1b[2K\\r12:00:00 ok 200" in out  # the path
    assert "photo: https://x/\\x1b[2K\\r12:00:00" in out  # a photo URL
    assert "user_id: '42\\x1b[2K\\r12:00:00" in out  # an id, in the reason it was refused


# --- unusable paths are usage errors naming the path (issue 16, item 18) ------------------------


def test_an_unusable_journal_path_is_exit_2_naming_it(cli, isolated):
    (isolated / "dir").mkdir()
    for journal, why in ((isolated / "dir", "Is a directory"), (isolated / "no" / "j.jsonl", "No such file")):
        result = cli("listen", "--port", "0", "--timeout", "0.1", "--journal", journal)
        assert result.exit_code == 2
        assert result.stderr.startswith(f"opcli: error: cannot open journal {journal}: {why}")


def test_an_unusable_user_config_dir_is_exit_2_naming_it(isolated, tmp_path):
    # a user config dir opcli cannot look into (as root, a path too long to resolve is one)
    unusable = tmp_path / ("x" * 300)  # longer than a file name may be
    env = {"XDG_CONFIG_HOME": str(unusable), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "opcli", "config", "show"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"opcli: error: {unusable}/opcli/config.yaml: cannot read config (user config): ")
    assert "internal error" not in done.stderr


def test_stdout_to_dev_null_is_not_rendered_but_a_file_or_pipe_is(tmp_path):
    from opcli.cli.listen import _discarded

    with open(os.devnull, "w") as null, open(tmp_path / "out", "w") as file:
        assert _discarded(null) and not _discarded(file)
    read, write = os.pipe()
    with os.fdopen(read) as r, os.fdopen(write, "w") as w:
        assert not _discarded(w) and not _discarded(r)
    assert not _discarded(io.StringIO())


def test_a_burst_past_count_gets_answers_not_dropped_connections(listen_proc, tmp_path):
    import socket
    from urllib.parse import urlencode, urlsplit

    journal = tmp_path / "j.jsonl"
    proc = listen_proc("listen", "--port", "0", "--count", "3", "--timeout", "20", "--journal", str(journal))
    address = urlsplit(proc.url)
    fields = {"token": "dev-token", "action": "message_sent", "user_id": "42", "contact_id": "7", "message": "hi"}
    body = urlencode(fields).encode()
    request = (
        b"POST /operator-api HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    # 30 clients connected at once; three calls reach --count, and the other 27 come right after,
    # while it stops: each must get an answer (503), not a connection closed on it
    clients = [socket.create_connection((address.hostname, address.port), timeout=10) for _ in range(30)]
    time.sleep(0.3)

    def answer(sock: socket.socket) -> int | bytes:
        head = sock.recv(65536)
        return int(head.split()[1]) if head.startswith(b"HTTP/1.1 ") else head

    statuses = []
    for sock in clients[:3]:
        sock.sendall(request)
        statuses.append(answer(sock))
    time.sleep(0.12)  # past uvicorn's 0.1 s tick: without a grace it would be closing them now
    for sock in clients[3:]:
        sock.sendall(request)
    statuses += [answer(sock) for sock in clients[3:]]
    for sock in clients:
        sock.close()
    assert proc.wait() == 0
    assert statuses == [200] * 3 + [503] * 27, statuses
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert sorted(line["status"] for line in lines if line["event"] == "call") == sorted(statuses)
