"""`opcli send --batch`: JSON Lines and CSV, bad lines, concurrency, rate, retries, exit codes."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time

import pytest

from opcli.config import load_config
from opcli.listener import ServerThread, create_app
from tests.conftest import CallLines, free_port, lines_of, write_config


@pytest.fixture
def panel(isolated, opcli_listener):
    """The plugin's listener, the config pointing at it; the test's journal lines."""
    write_config(
        isolated / "opcli.yaml", panel_url=opcli_listener.endpoints["message_sent"], token=opcli_listener.token
    )
    return CallLines(opcli_listener)


def test_jsonl_batch_with_photos_and_files(cli, panel, isolated):
    upload = isolated / "a.bin"
    upload.write_bytes(bytes(range(256)) * 500)
    lines = [
        json.dumps(
            {
                "user": 100 + i,
                "bot": 7,
                "message": f"сообщение {i}",
                "photos": [{"file_url": f"https://x/{i}.jpg", "big": f"https://x/{i}_b.jpg"}] if i % 2 else [],
                "attach": str(upload) if i % 5 == 0 else None,
            }
        )
        for i in range(40)
    ]
    batch = isolated / "messages.jsonl"
    batch.write_text("\n".join(lines) + "\n")
    result = cli("send", "--batch", batch, "--json", "--concurrency", 4)
    assert result.exit_code == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    results, summary = out[:-1], out[-1]["summary"]
    assert sorted(r["line"] for r in results) == list(range(1, 41))
    assert all(r["ok"] and r["status"] == 200 and r["error"] is None for r in results)
    assert all(r["reply"]["data"]["message_id"] for r in results)
    assert summary["total"] == summary["sent"] == 40 and summary["failed"] == 0
    assert summary["p50_ms"] <= summary["p95_ms"] <= summary["p99_ms"]
    assert "Sent 40 of 40 messages" in result.stderr
    assert len(panel) == 40
    entries = {int(e["fields"]["user_id"]): e for e in panel}
    assert len(entries) == 40
    assert entries[103]["fields"]["message"] == "сообщение 3"
    assert entries[103]["attaches"] == [{"file_url": "https://x/3.jpg", "big": "https://x/3_b.jpg"}]
    assert entries[110]["files"][0]["sha256"] == hashlib.sha256(upload.read_bytes()).hexdigest()
    assert entries[101]["files"] == []


def test_csv_batch_from_stdin(cli, panel):
    csv_text = (
        "user,bot,message,photos,attach\n"
        '1,7,"Hello, with a comma",,\n'
        '2,7,,"[{""file_url"": ""https://x/p.jpg""}]",\n'
        '3,7,"multi\nline",,\n'
    )
    result = cli("send", "--batch", "-", input=csv_text.encode())
    assert result.exit_code == 0, result.stderr
    assert len(panel) == 3
    entries = {e["fields"]["user_id"]: e for e in panel}
    assert entries["1"]["fields"]["message"] == "Hello, with a comma"
    assert entries["2"]["attaches"] == [{"file_url": "https://x/p.jpg", "big": "https://x/p.jpg"}]
    assert entries["3"]["fields"]["message"] == "multi\nline"


def test_bad_lines_are_reported_and_skipped(cli, panel, isolated):
    batch = isolated / "mixed.jsonl"
    batch.write_text(
        "\n".join(
            [
                json.dumps({"user": 1, "bot": 2, "message": "ok one"}),
                "{not json",
                json.dumps({"user": "abc", "bot": 2, "message": "x"}),
                json.dumps([1, 2]),
                json.dumps({"user": 1, "bot": 2}),
                json.dumps({"user": 1, "bot": 2, "attach": "missing.png"}),
                json.dumps({"user": 1, "bot": 2, "photos": "nope"}),
                "",
                json.dumps({"user": 5, "bot": 2, "message": "ok two"}),
            ]
        )
        + "\n"
    )
    result = cli("send", "--batch", batch, "--json")
    assert result.exit_code == 1
    out = [json.loads(line) for line in result.stdout.splitlines()]
    by_line = {r["line"]: r for r in out[:-1]}
    assert by_line[1]["ok"] and by_line[9]["ok"]
    assert by_line[2]["error"].startswith("not valid JSON")
    assert by_line[3]["error"] == "user: 'abc' is not a whole number"
    assert by_line[4]["error"] == "expected a JSON object"
    assert by_line[5]["error"] == "nothing to send (no message, photos or attach)"
    assert by_line[6]["error"].startswith("cannot read file missing.png")
    assert by_line[7]["error"].startswith("photos is not a JSON array")
    assert out[-1]["summary"] == {**out[-1]["summary"], "total": 8, "sent": 2, "failed": 6, "invalid": 6}
    assert "opcli: error: 6 of 8 messages failed" in result.stderr
    assert len(panel) == 2


def test_panel_failures_are_per_message_and_exit_1(cli, stdlib_server, isolated):
    write_config(isolated / "opcli.yaml", panel_url=f"{stdlib_server.url}/api")
    stdlib_server.respond = lambda r: (
        (200, {}, b'{"status": 0, "message": "Invalid API token"}')
        if r.field("user_id") == "2"
        else (200, {}, b'{"status": 1}')
    )
    batch = isolated / "b.jsonl"
    batch.write_text("".join(json.dumps({"user": u, "bot": 9, "message": "m"}) + "\n" for u in (1, 2, 3)))
    result = cli("send", "--batch", batch, "--json")
    assert result.exit_code == 1
    by_line = {r["line"]: r for r in map(json.loads, result.stdout.splitlines()[:-1])}
    assert by_line[2] == {
        "line": 2,
        "ok": False,
        "status": 200,
        "reply": {"status": 0, "message": "Invalid API token"},
        "error": "HTTP 200, status 0: Invalid API token",
        "ms": by_line[2]["ms"],
    }
    assert by_line[1]["ok"] and by_line[3]["ok"]


def test_concurrency_bounds_requests_in_flight(cli, stdlib_server, isolated):
    write_config(isolated / "opcli.yaml", panel_url=f"{stdlib_server.url}/api")
    lock, state = threading.Lock(), {"now": 0, "max": 0}

    def slow(received):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return 200, {}, b'{"status": 1}'

    stdlib_server.respond = slow
    batch = isolated / "b.jsonl"
    batch.write_text("".join(json.dumps({"user": i, "bot": 9, "message": "m"}) + "\n" for i in range(24)))
    result = cli("send", "--batch", batch, "--concurrency", 3)
    assert result.exit_code == 0, result.stderr
    assert len(stdlib_server.received) == 24
    assert state["max"] == 3


def test_rate_limits_messages_per_second(cli, panel, isolated):
    batch = isolated / "b.jsonl"
    batch.write_text("".join(json.dumps({"user": i, "bot": 9, "message": "m"}) + "\n" for i in range(6)))
    result = cli("send", "--batch", batch, "--rate", 20, "--json")
    assert result.exit_code == 0
    summary = json.loads(result.stdout.splitlines()[-1])["summary"]
    # 6 starts at 20/s cannot take less than 5 intervals of 50 ms (a lower bound: slowness only adds)
    assert summary["seconds"] >= 0.25


def test_unreachable_panel_is_exit_3(cli, isolated):
    port = free_port()
    write_config(isolated / "opcli.yaml", panel_url=f"http://127.0.0.1:{port}/api")
    batch = isolated / "b.jsonl"
    batch.write_text(json.dumps({"user": 1, "bot": 2, "message": "m"}) + "\n")
    result = cli("send", "--batch", batch)
    assert result.exit_code == 3
    assert (
        f"no message reached the panel: cannot reach http://127.0.0.1:{port}/api: connection refused" in result.stderr
    )
    assert f"line 1: cannot reach http://127.0.0.1:{port}/api: connection refused" in result.stderr


def test_a_panel_that_is_down_stops_the_batch_with_stdout_empty(cli, isolated):
    port = free_port()
    write_config(isolated / "opcli.yaml", panel_url=f"http://127.0.0.1:{port}/api")
    batch = isolated / "b.jsonl"
    batch.write_text("".join(json.dumps({"user": 1, "bot": 2, "message": f"m{k}"}) + "\n" for k in range(500)))
    result = cli("send", "--batch", batch, "--json", "--concurrency", 2)
    assert result.exit_code == 3 and result.stdout == ""  # cli.md: with --json, stdout stays empty on exit 3
    assert "no message reached the panel" in result.stderr and "not attempted" in result.stderr
    assert "Sent 0 of 500 messages" in result.stderr


def test_retries_reach_a_panel_that_comes_up_late(cli, isolated):
    port = free_port()
    write_config(isolated / "opcli.yaml", panel_url=f"http://127.0.0.1:{port}/operator-api")
    batch = isolated / "b.jsonl"
    batch.write_text(json.dumps({"user": 1, "bot": 2, "message": "m"}) + "\n")
    app = create_app(load_config(isolated / "opcli.yaml", listen=True))
    started: list[ServerThread] = []

    def late() -> None:
        time.sleep(0.3)
        started.append(ServerThread(app, port=port).start())

    thread = threading.Thread(target=late)
    thread.start()
    try:
        result = cli("send", "--batch", batch, "--retries", 6)
    finally:
        thread.join()
        for server in started:
            server.stop()
    assert result.exit_code == 0, result.stderr


def test_retries_never_send_a_message_twice(cli, isolated):
    """A connection dropped after the request went out is not retried."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    seen: list[bytes] = []

    def drop() -> None:
        sock.settimeout(5)
        try:
            while True:
                conn, _ = sock.accept()
                request = b""
                while not request.endswith(b"--\r\n"):  # the closing boundary: the whole request is in
                    request += conn.recv(65536)
                seen.append(request)
                conn.close()  # answer nothing
        except OSError:
            pass

    thread = threading.Thread(target=drop, daemon=True)
    thread.start()
    write_config(isolated / "opcli.yaml", panel_url=f"http://127.0.0.1:{sock.getsockname()[1]}/api")
    batch = isolated / "b.jsonl"
    batch.write_text(json.dumps({"user": 1, "bot": 2, "message": "once"}) + "\n")
    try:
        result = cli("send", "--batch", batch, "--retries", 5, "--json")
    finally:
        sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() at once (close alone does not)
        sock.close()
        thread.join(10)
    assert result.exit_code == 3
    assert len(seen) == 1 and b"once" in seen[0]
    assert "connection dropped" in result.stderr


@pytest.mark.parametrize("extra", [["--user", "1"], ["-m", "x"], ["--attach", "f"], ["--photo", "https://x/1"]])
def test_batch_excludes_single_message_options(cli, isolated, extra):
    (isolated / "b.jsonl").write_text("")
    result = cli("send", "--batch", isolated / "b.jsonl", *extra)
    assert result.exit_code == 2
    assert "--batch takes every message from FILE" in result.stderr


def test_missing_batch_file_is_exit_2(cli, isolated):
    result = cli("send", "--batch", isolated / "nope.jsonl")
    assert result.exit_code == 2 and "cannot read batch file" in result.stderr


@pytest.fixture
def tls_panel(isolated):
    """`opcli listen`'s app over https, with a certificate from a test CA; yields (journal, CA file)."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    pem, ca_file = isolated / "server.pem", isolated / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    ca.cert_pem.write_to_path(str(ca_file))
    write_config(isolated / "opcli.yaml")
    app = create_app(load_config(isolated / "opcli.yaml", listen=True))
    journal = lines_of(app)
    with ServerThread(app, ssl_certfile=str(pem), ssl_keyfile=str(pem)) as server:
        assert server.url.startswith("https://")
        yield server.url, journal, ca_file


@pytest.mark.parametrize("batch", [False, True])
def test_https_panel_with_a_ca_bundle(cli, tls_panel, isolated, batch):
    url, journal, ca_file = tls_panel
    write_config(isolated / "opcli.yaml", panel_url=f"{url}/operator-api", extra_site=f"    verify: {ca_file}\n")
    upload = isolated / "f.bin"
    upload.write_bytes(b"tls-payload" * 1000)
    if batch:
        (isolated / "b.jsonl").write_text(
            "".join(
                json.dumps({"user": i, "bot": 2, "message": "over TLS", "attach": str(upload)}) + "\n" for i in range(5)
            )
        )
        result = cli("send", "--batch", isolated / "b.jsonl", "--concurrency", 2)
    else:
        result = cli("send", "--user", 1, "--bot", 2, "-m", "over TLS", "--attach", upload)
    assert result.exit_code == 0, result.stderr
    entries = journal
    assert len(entries) == (5 if batch else 1)
    assert all(e["fields"]["message"] == "over TLS" for e in entries)
    assert all(e["files"][0]["sha256"] == hashlib.sha256(upload.read_bytes()).hexdigest() for e in entries)


@pytest.mark.parametrize("batch", [False, True])
def test_https_panel_with_an_unknown_ca_is_exit_3(cli, tls_panel, isolated, batch):
    url, journal, _ = tls_panel
    write_config(isolated / "opcli.yaml", panel_url=f"{url}/operator-api")
    (isolated / "b.jsonl").write_text(json.dumps({"user": 1, "bot": 2, "message": "m"}) + "\n")
    args = ["--batch", isolated / "b.jsonl"] if batch else ["--user", 1, "--bot", 2, "-m", "m"]
    result = cli("send", *args)
    assert result.exit_code == 3
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr
    assert journal == []
