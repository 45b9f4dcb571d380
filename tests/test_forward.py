"""listen --forward SITE: calls checked, sent on byte for byte (token aside), replies passed back unchanged."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from opcli.config import load_config
from opcli.listener import ServerThread, create_app
from opcli.listener.forward import Forwarder, forward_site
from tests.conftest import free_port, lines_of, write_config

TOKEN = "listener-token-123456"
UP_TOKEN = "upstream-token-abcdef"
BOUNDARY = "----opcliForwardTest7MA4YWxkTrZu0gW"
MP = f"multipart/form-data; boundary={BOUNDARY}"


def config_with_upstream(path: Path, upstream: str, listen: str = "") -> Path:
    """Site ``test`` (the listener's, token TOKEN) and site ``up`` at ``upstream`` (token UP_TOKEN)."""
    up = (
        f"  up:\n    panel_url: {upstream}/site/operator-api\n    token: {UP_TOKEN}\n    webhooks:\n"
        f"      send_message: {upstream}/site/send\n      user_info: {upstream}/site/info\n"
        f"      user_media: {upstream}/site/media\n"
    )
    return write_config(path, token=TOKEN, extra_site=up, listen=listen)


@pytest.fixture
def forwarding(tmp_path, stdlib_server, serve):
    """A listener forwarding to the stdlib server (site ``up``): (its URL, its journal, the upstream)."""
    config = load_config(config_with_upstream(tmp_path / "c.yaml", stdlib_server.url), listen=True)
    app = create_app(config, forward=forward_site(config, "up"))
    journal = lines_of(app)
    return serve(app).url, journal, stdlib_server


def part(name: str, value: bytes, filename: str | None = None, ctype: str | None = None) -> bytes:
    disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disp}\r\n" + (f"Content-Type: {ctype}\r\n" if ctype else "")
    return (head + "\r\n").encode() + value + b"\r\n"


def message_body(token: str, file: bytes = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40) -> bytes:
    return b"".join(
        [
            part("action", b"message_sent"),
            part("token", token.encode()),
            part("user_id", b"42"),
            part("contact_id", b"7"),
            part("message", "Grüße — ✓\r\nline two".encode()),
            part("attaches[0][file_url]", b"https://cdn.example.com/a.jpg"),
            part("attaches[0][big]", b"https://cdn.example.com/a_b.jpg"),
            part("attach", file, "pic.png", "image/png"),
            f"--{BOUNDARY}--\r\n".encode(),
        ]
    )


def test_multipart_arrives_upstream_byte_for_byte_but_the_token(forwarding):
    url, journal, upstream = forwarding
    sent = message_body(TOKEN)
    r = httpx.post(f"{url}/operator-api", content=sent, headers={"content-type": MP})
    assert r.status_code == 200 and r.json()["data"]["message_id"] == 777  # the upstream's reply
    [got] = upstream.received
    assert got.path == "/site/operator-api"
    assert got.headers["Content-Type"] == MP
    assert got.body == message_body(UP_TOKEN)  # the same bytes, the token replaced
    assert got.field("token") == UP_TOKEN and got.files[0]["filename"] == "pic.png"
    entry = journal[-1]
    assert entry["forwarded_to"] == f"{upstream.url}/site/operator-api"
    assert entry["upstream_ms"] > 0 and entry["status"] == 200
    assert entry["reply"] == {"status": 1, "message": "", "data": {"message_id": 777}}
    assert "findings" not in entry and "body" not in entry  # no --save-dir: the body was only spooled


def test_urlencoded_arrives_upstream_with_only_the_token_changed(forwarding):
    url, journal, upstream = forwarding
    upstream.reply_json(200, {"media": [{"url": "https://x/1.jpg", "big": "https://x/1b.jpg"}]})
    sent = f"user_id=42&token={TOKEN}&extra=a+b%26c".encode()
    r = httpx.post(
        f"{url}/hooks/user-media", content=sent, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 200 and r.json()["media"][0]["url"] == "https://x/1.jpg"
    assert upstream.received[0].path == "/site/media"
    assert upstream.received[0].body == f"user_id=42&token={UP_TOKEN}&extra=a+b%26c".encode()
    assert journal[-1]["findings"] == []


@pytest.mark.parametrize(
    "status, ctype, body",
    [
        (500, "text/html; charset=UTF-8", b"<html><title>Fatal error</title><b>PHP Fatal error</b></html>"),
        (200, "application/json", b'{"status": 0, "message": "Invalid API token"}'),
        (403, "text/plain", "forbidden \xe9".encode("latin-1")),
        (201, "application/json; charset=utf-8", b'{"status":1,"data":{"message_id":5}}  \n'),
    ],
)
def test_upstream_replies_go_back_unchanged(forwarding, status, ctype, body):
    url, journal, upstream = forwarding
    upstream.respond = lambda received: (status, {"Content-Type": ctype}, body)
    r = httpx.post(f"{url}/hooks/send-message", data={"token": TOKEN, "user_id": "7", "contact_id": "42"})
    assert (r.status_code, r.headers["content-type"], r.content) == (status, ctype, body)
    entry = journal[-1]
    assert entry["status"] == status
    if ctype.startswith("application/json"):
        assert entry["reply"] == json.loads(body)
    else:
        assert entry["reply"] == body.decode("utf-8", "replace")


def test_a_broken_profile_is_passed_on_and_its_findings_journaled(forwarding):
    url, journal, upstream = forwarding
    profile = {"id": "42", "name": "Olga", "gender": "female", "avatar": "", "location": "", "about": "", "custom": []}
    upstream.reply_json(200, profile)
    r = httpx.post(f"{url}/hooks/user-info", data={"token": TOKEN, "user_id": "42"})
    assert r.status_code == 200 and r.json() == profile
    findings = journal[-1]["findings"]
    assert {"level": "violation", "field": "id", "text": 'expected an integer, found string "42"'} in findings
    assert any(f["field"] == "balance" and f["level"] == "violation" for f in findings)


def test_calls_the_listener_rejects_are_not_forwarded(forwarding):
    url, journal, upstream = forwarding
    r = httpx.post(f"{url}/hooks/user-info", data={"token": "wrong", "user_id": "42"})
    assert r.status_code == 401 and upstream.received == []
    assert "forwarded_to" not in journal[-1]


def test_an_unreachable_upstream_gets_502(tmp_path, serve):
    closed = f"http://127.0.0.1:{free_port()}"
    config = load_config(config_with_upstream(tmp_path / "c.yaml", closed), listen=True)
    app = create_app(config, forward=forward_site(config, "up"))
    journal = lines_of(app)
    url = serve(app).url
    r = httpx.post(f"{url}/hooks/user-info", data={"token": TOKEN, "user_id": "42"})
    assert r.status_code == 502 and r.headers["content-type"] == "application/json"
    assert r.json()["status"] == 0 and f"{closed}/site/info" in r.json()["message"]
    assert "refused" in r.json()["message"]
    assert journal[-1]["status"] == 502 and journal[-1]["forwarded_to"] == f"{closed}/site/info"
    assert UP_TOKEN not in json.dumps(journal[-1]) and TOKEN not in json.dumps(journal[-1])


@pytest.mark.parametrize("token", [TOKEN, "another-token-of-the-same-listener"])
def test_forwarding_to_itself_is_a_508_not_a_loop(tmp_path, token):
    config = load_config(config_with_upstream(tmp_path / "c.yaml", "http://127.0.0.1:9"), listen=True)
    app = create_app(config, forward=forward_site(config, "up"))
    journal = lines_of(app)
    with ServerThread(app) as server:  # a site at this very listener (with its token, or another one)
        app.forward = Forwarder(dataclasses.replace(config.site.rebased(server.url), token=token), app.routes.values())
        r = httpx.post(f"{server.url}/hooks/user-info", data={"token": TOKEN, "user_id": "42"})
    assert r.status_code == 508 and "loop" in r.json()["message"]
    assert [e["status"] for e in journal] == [508, 508]  # the call forwarded once, then refused
    assert [e.get("forwarded_to") for e in journal] == [None, f"{server.url}/hooks/user-info"]


def test_forward_site_errors_are_config_errors(cli, tmp_path):
    path = config_with_upstream(tmp_path / "c.yaml", "http://127.0.0.1:9")
    result = cli("-c", path, "listen", "--port", "0", "--forward", "nope")
    assert result.exit_code == 2 and result.stdout == ""
    assert "--forward nope: no such site; sites: test, up" in result.stderr
    path.write_text(path.read_text().replace("      user_media: http://127.0.0.1:9/site/media\n", ""))
    result = cli("-c", path, "listen", "--port", "0", "--forward", "up")
    assert result.exit_code == 2 and "site 'up' has no webhooks.user_media" in result.stderr


def peak_rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])


def test_a_20_mb_file_is_forwarded_with_bounded_memory(tmp_path, stdlib_server, listen_proc):
    path = config_with_upstream(tmp_path / "c.yaml", stdlib_server.url)
    proc = listen_proc("-c", str(path), "listen", "--port", "0", "--forward", "up", "--journal", str(tmp_path / "j"))
    url = proc.url
    small = tmp_path / "small.bin"
    small.write_bytes(b"warm-up")
    big = tmp_path / "big.bin"
    with open(big, "wb") as handle:
        for _ in range(20):
            handle.write(os.urandom(1024 * 1024))
    form = ["-F", f"token={TOKEN}", "-F", "action=message_sent", "-F", "user_id=42", "-F", "contact_id=7"]

    def curl_file(file: Path) -> None:
        done = subprocess.run(
            ["curl", "-sS", "--max-time", "60", *form, "-F", f"attach=@{file}", f"{url}/operator-api"],
            capture_output=True,
            timeout=90,
        )
        assert done.returncode == 0 and json.loads(done.stdout)["data"]["message_id"] == 777, done.stderr

    curl_file(small)  # everything the forwarding path imports and allocates, before measuring
    before = peak_rss_kib(proc.proc.pid)
    curl_file(big)
    grown = peak_rss_kib(proc.proc.pid) - before
    got = stdlib_server.received[-1]
    assert hashlib.sha256(got.files[0]["content"]).digest() == hashlib.sha256(big.read_bytes()).digest()
    assert got.field("token") == UP_TOKEN
    # held whole, the 20 MiB body would grow the peak by 20 MiB at least (more with copies)
    assert grown < 12 * 1024, f"the listener's peak RSS grew by {grown} KiB"


def test_listen_forward_records_a_session_and_shows_the_verdict(tmp_path, stdlib_server, listen_proc):
    path = config_with_upstream(tmp_path / "c.yaml", stdlib_server.url)
    stdlib_server.reply_json(200, {"id": "42", "name": "Olga"})
    rec = tmp_path / "rec"
    args = ["--forward", "up", "--save-dir", str(rec), "--journal", str(rec / "j.jsonl"), "--count", "1"]
    proc = listen_proc("-c", str(path), "listen", "--port", "0", *args)
    r = httpx.post(f"{proc.url}/hooks/user-info", data={"token": TOKEN, "user_id": "42"})
    assert r.json() == {"id": "42", "name": "Olga"}
    assert proc.wait() == 0  # the upstream answered 200: the call was not rejected
    shown = "".join(proc.stdout)
    assert f"forwarded to {stdlib_server.url}/site/info" in shown
    assert 'violation: id: expected an integer, found string "42"' in shown
    [line] = [json.loads(text) for text in (rec / "j.jsonl").read_text().splitlines()[1:]]
    assert line["forwarded_to"] == f"{stdlib_server.url}/site/info" and line["findings"]
    assert Path(line["body"]["saved_as"]).read_bytes() == b"token=&user_id=42"
    assert stdlib_server.received[0].body == f"token={UP_TOKEN}&user_id=42".encode()
    for file in rec.iterdir():
        assert TOKEN.encode() not in file.read_bytes() and UP_TOKEN.encode() not in file.read_bytes()
