"""`opcli send` against a real server that parses the body with the standard library."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from pathlib import Path

import pytest

from tests.conftest import free_port, write_config


@pytest.fixture
def site(stdlib_server, isolated: Path) -> Path:
    return write_config(isolated / "opcli.yaml", panel_url=f"{stdlib_server.url}/start/api")


def test_text_photos_and_file_arrive_as_sent(cli, stdlib_server, site, isolated):
    payload = isolated / "photo.png"
    payload.write_bytes(bytes(range(256)) * 4099)  # binary, not a multiple of any chunk size
    result = cli(
        "send",
        "--user",
        42,
        "--bot",
        7,
        "-m",
        'Привет, ünïcödé ✓ "quotes"',
        "--photo",
        "https://s.example/p/1.jpg",
        "--big",
        "https://s.example/p/1_200.jpg",
        "--photo",
        "https://s.example/p/2.jpg",
        "--attach",
        payload,
    )
    assert result.exit_code == 0, result.stderr
    assert "message_id 777" in result.stdout
    [got] = stdlib_server.received
    assert got.path == "/start/api"
    assert got.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert got.field("token") == "secret-token-123456"
    assert got.field("action") == "message_sent"
    assert (got.field("user_id"), got.field("contact_id")) == ("42", "7")
    assert got.field("message") == 'Привет, ünïcödé ✓ "quotes"'
    # rebuild PHP bracket notation into photo objects, as the panel's PHP does
    photos: dict[int, dict[str, str]] = {}
    for name, value in got.fields:
        m = re.fullmatch(r"attaches\[(\d+)\]\[(\w+)\]", name)
        if m:
            photos.setdefault(int(m[1]), {})[m[2]] = value
    assert [photos[k] for k in sorted(photos)] == [
        {"file_url": "https://s.example/p/1.jpg", "big": "https://s.example/p/1_200.jpg"},
        {"file_url": "https://s.example/p/2.jpg", "big": "https://s.example/p/2.jpg"},
    ]
    [upload] = got.files
    assert upload["field"] == "attach" and upload["filename"] == "photo.png"
    assert upload["content_type"] == "image/png"
    assert hashlib.sha256(upload["content"]).hexdigest() == hashlib.sha256(payload.read_bytes()).hexdigest()


def test_multipart_even_without_a_file_and_message_always_present(cli, stdlib_server, site):
    result = cli("send", "--user", 1, "--bot", 2, "--photo", "https://s.example/a.jpg")
    assert result.exit_code == 0, result.stderr
    [got] = stdlib_server.received
    assert got.headers["Content-Type"].startswith("multipart/form-data")
    assert got.field("message") == ""
    assert got.files == []


def test_json_attaches_encoding(cli, stdlib_server, isolated):
    write_config(
        isolated / "opcli.yaml", panel_url=f"{stdlib_server.url}/api", extra_site="    attaches_encoding: json\n"
    )
    result = cli("send", "--user", 1, "--bot", 2, "--photo", "https://s.example/a.jpg", "--big", "https://s/b.jpg")
    assert result.exit_code == 0, result.stderr
    [got] = stdlib_server.received
    assert json.loads(got.field("attaches")) == [{"file_url": "https://s.example/a.jpg", "big": "https://s/b.jpg"}]
    assert not any(name.startswith("attaches[") for name, _ in got.fields)


def test_message_from_stdin_strips_one_newline(cli, stdlib_server, site):
    result = cli("send", "--user", 1, "--bot", 2, "-m", "-", input=b"line one\nline two\n\n")
    assert result.exit_code == 0, result.stderr
    assert stdlib_server.received[0].field("message") == "line one\nline two\n"


def test_json_output_is_the_reply_body(cli, stdlib_server, site):
    result = cli("send", "--user", 1, "--bot", 2, "-m", "hi", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"status": 1, "message": "", "data": {"message_id": 777}}


def test_verbose_masks_token_and_elides_file(cli, stdlib_server, site, isolated):
    secret = isolated / "secret.bin"
    secret.write_bytes(b"FILE-CONTENT-MARKER" * 10)
    result = cli("send", "--user", 1, "--bot", 2, "-m", "hi", "--attach", secret, "-v")
    assert result.exit_code == 0
    assert "secret-token-123456" not in result.stderr + result.stdout
    assert "…3456" in result.stderr
    assert "FILE-CONTENT-MARKER" not in result.stderr
    assert "190 bytes" in result.stderr and "< HTTP 200" in result.stderr


def test_dry_run_sends_nothing_and_prints_curl(cli, stdlib_server, site, isolated):
    photo = isolated / "a.jpg"
    photo.write_bytes(b"x" * 1234)
    result = cli(
        "send", "--user", 5, "--bot", 6, "-m", "it's", "--photo", "https://s/1.jpg", "--attach", photo, "--dry-run"
    )
    assert result.exit_code == 0, result.stderr
    assert stdlib_server.received == []
    assert "secret-token-123456" not in result.stdout
    assert "1234 bytes" in result.stdout
    assert '--form-string "token=$OPCLI_TOKEN"' in result.stdout
    assert "--form-string 'attaches[0][file_url]=https://s/1.jpg'" in result.stdout
    assert "-F 'attach=@" in result.stdout


def test_dry_run_curl_command_really_works(cli, stdlib_server, site, isolated, monkeypatch):
    import subprocess

    result = cli("send", "--user", 5, "--bot", 6, "-m", 'it\'s "ok" $HOME', "--photo", "https://s/1.jpg", "--dry-run")
    curl = next(line for line in result.stdout.splitlines() if line.startswith("curl "))
    env = {"OPCLI_TOKEN": "secret-token-123456", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(["bash", "-c", curl], env=env, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    [got] = stdlib_server.received
    assert got.field("token") == "secret-token-123456"
    assert got.field("message") == 'it\'s "ok" $HOME'
    assert got.field("attaches[0][big]") == "https://s/1.jpg"


# --- the exit-code table ------------------------------------------------------------------


def test_refused_connection_is_exit_3(cli, isolated):
    port = free_port()
    write_config(isolated / "opcli.yaml", panel_url=f"http://127.0.0.1:{port}/api")
    result = cli("send", "--user", 1, "--bot", 2, "-m", "hi", "--json")
    assert result.exit_code == 3
    assert result.stdout == ""
    assert result.stderr.strip() == (
        f"opcli: error: cannot reach http://127.0.0.1:{port}/api: connection refused (is `opcli listen` running?)"
    )


def test_timeout_is_exit_3(cli, isolated):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(5)  # accepts connections, never answers
    stop = threading.Event()
    held = []

    def accept() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/api"
        write_config(isolated / "opcli.yaml", panel_url=url)
        result = cli("send", "--user", 1, "--bot", 2, "-m", "hi", "--timeout", "0.5")
        assert result.exit_code == 3
        assert f"cannot reach {url}: no answer within 0.5s (timeout)" in result.stderr
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        sock.close()


def test_401_with_envelope_is_exit_1(cli, stdlib_server, site):
    stdlib_server.reply_json(401, {"status": 0, "message": "Invalid API token"})
    result = cli("send", "--user", 1, "--bot", 2, "-m", "hi")
    assert result.exit_code == 1
    assert "HTTP 401" in result.stderr and "Invalid API token" in result.stderr
    assert "Traceback" not in result.stderr


def test_200_with_status_0_is_exit_1(cli, stdlib_server, site):
    stdlib_server.reply_json(200, {"status": 0, "message": "Invalid API token"})
    result = cli("send", "--user", 1, "--bot", 2, "-m", "hi", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"status": 0, "message": "Invalid API token"}
    assert "status 0: Invalid API token" in result.stderr


def test_500_with_html_is_exit_1(cli, stdlib_server, site):
    stdlib_server.respond = lambda r: (
        500,
        {"Content-Type": "text/html"},
        b"<!DOCTYPE html><html><head><title>Fatal error</title></head></html>",
    )
    result = cli("send", "--user", 1, "--bot", 2, "-m", "hi")
    assert result.exit_code == 1
    assert "HTTP 500" in result.stderr and "Fatal error" in result.stderr


def test_302_is_not_followed_and_is_exit_1(cli, stdlib_server, site):
    stdlib_server.respond = lambda r: (302, {"Location": "/login"}, b"")
    result = cli("send", "--user", 1, "--bot", 2, "-m", "hi")
    assert result.exit_code == 1
    assert len(stdlib_server.received) == 1
    assert "HTTP 302: redirect to /login" in result.stderr


# --- refused before sending ---------------------------------------------------------------


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--user", "abc", "--bot", "2", "-m", "x"], "opcli: error: --user: 'abc' is not a whole number"),
        (["--user", "-1", "--bot", "2", "-m", "x"], "--user"),
        (["--user", "1", "--bot", "2", "--attach", "missing.bin"], "cannot read file missing.bin"),
        (
            ["--user", "1", "--bot", "2", "--photo", "https://a/1", "--big", "https://a/b", "--big", "https://a/c"],
            "2 --big for 1 --photo",
        ),
        (["--user", "1", "--bot", "2"], "nothing to send"),
        (["--user", "1", "--bot", "2", "--photo", "photo.jpg"], "must start with http://"),
        (["--bot", "2", "-m", "x"], "both --user and --bot are required"),
    ],
)
def test_bad_input_is_exit_2_and_sends_nothing(cli, stdlib_server, site, args, expected):
    result = cli("send", *args)
    assert result.exit_code == 2
    assert expected in result.stderr
    assert stdlib_server.received == []
