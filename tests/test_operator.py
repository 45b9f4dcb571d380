"""`listen --operator`: the listener plays the panel against a site that is not opcli.

The site here is the standard library's HTTP server: it parses what arrives on its own, records
it, counts its open connections, and can be told to be slow, to hold its answers, or to break
its replies.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from opcli.batch import send_batch
from opcli.client import send_message
from opcli.config import load_config
from opcli.listener import ListenerThread
from tests.conftest import parse_multipart, write_config

TOKEN = "secret-token-123456"
PROFILE = {
    "id": 42,
    "name": "Zoë",
    "gender": "female",
    "avatar": "",
    "balance": "5.00",
    "location": "Oslo",
    "about": "",
    "custom": [],
}


class Site:
    """A dating site's three webhooks on a free loopback port, answered by ``replies[path]``."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.replies: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/hooks/user-info": lambda: (200, "application/json", json.dumps(PROFILE).encode()),
            "/hooks/user-media": lambda: (200, "application/json", b'{"media": []}'),
            "/hooks/send-message": lambda: (200, "application/json", b'{"status": 1, "message": ""}'),
        }
        self.delay = 0.0
        self.hold = threading.Event()  # cleared: every request waits until it is set
        self.hold.set()
        self.arrived = threading.Semaphore(0)  # one release per request received
        self.open = self.most_open = 0
        self.lock = threading.Lock()
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with site.lock:
                    site.open += 1
                    site.most_open = max(site.most_open, site.open)

            def finish(self) -> None:
                with site.lock:
                    site.open -= 1
                super().finish()

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                ctype = self.headers.get("Content-Type", "")
                if ctype.startswith("multipart/form-data"):
                    fields = parse_multipart(ctype, body)[0]
                else:
                    fields = parse_qsl(body.decode(), keep_blank_values=True)
                site.received.append({"path": self.path, "content_type": ctype.split(";")[0], "fields": dict(fields)})
                site.arrived.release()
                site.hold.wait(30)
                time.sleep(site.delay)
                status, content_type, reply = site.replies[self.path.split("?")[0]]()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except OSError:  # the caller gave up (timeout, cancelled)
                    self.close_connection = True

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 64  # a burst of connections is not refused

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def paths(self) -> list[str]:
        return [r["path"] for r in self.received]

    def close(self) -> None:
        self.hold.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def site() -> Iterator[Site]:
    server = Site()
    yield server
    server.close()


def site_config(path: Path, site: Site, extra_site: str = "", listen: str = "") -> Path:
    """A config whose panel_url names the listener (moved where it serves) and whose webhooks are ``site``."""
    return write_config(
        path, panel_url="http://127.0.0.1:9/operator-api", hooks=f"{site.url}/hooks", extra_site=extra_site,
        listen=listen, token=TOKEN,
    )  # fmt: skip


@pytest.fixture
def listener(site: Site, isolated: Path) -> Iterator[ListenerThread]:
    with ListenerThread(load_config(site_config(isolated / "opcli.yaml", site), listen=True)) as running:
        yield running


def callbacks_of(listener: ListenerThread, count: int, after: int = 0) -> list[Any]:
    found, complete = listener.journal.wait_for(event="callback", count=count, after=after, timeout=20)
    assert complete, [c.as_json() for c in found]
    return found


# --- the loop, in a thread -------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_the_loop_calls_the_site_in_order_with_the_right_fields(site, isolated, encoding):
    config = site_config(isolated / "opcli.yaml", site, extra_site=f"    webhook_encoding: {encoding}\n")
    with ListenerThread(load_config(config, listen=True)) as listener:
        listener.operator(reply="{name} ({user} to {bot}): {message}")
        reply = send_message(listener.site, 42, 7, "hi {name}")
        assert reply.ok
        callbacks = callbacks_of(listener, 3)
    expected_type = "multipart/form-data" if encoding == "multipart" else "application/x-www-form-urlencoded"
    assert site.received == [
        {"path": "/hooks/user-info", "content_type": expected_type, "fields": {"token": TOKEN, "user_id": "42"}},
        {"path": "/hooks/user-media", "content_type": expected_type, "fields": {"token": TOKEN, "user_id": "42"}},
        {
            "path": "/hooks/send-message",
            "content_type": expected_type,
            # the direction rule: in the reply, user_id is the bot; {name} from the fetched profile;
            # the message's own braces are not a template
            "fields": {"token": TOKEN, "user_id": "7", "contact_id": "42", "message": "Zoë (42 to 7): hi {name}"},
        },
    ]
    [message] = [c for c in listener.calls if c.kind == "message_sent"]
    assert [(c.trigger, c.kind, c.ok, c.status, c.error) for c in callbacks] == [
        (message.seq, "user_info", True, 200, None),
        (message.seq, "user_media", True, 200, None),
        (message.seq, "send_message", True, 200, None),
    ]
    assert [c.url for c in callbacks] == [f"{site.url}/hooks/user-info", f"{site.url}/hooks/user-media",
                                          f"{site.url}/hooks/send-message"]  # fmt: skip
    assert callbacks[0].fields == {"user_id": "42"} and callbacks[0].reply == PROFILE
    assert callbacks[2].fields == {"user_id": "7", "contact_id": "42", "message": "Zoë (42 to 7): hi {name}"}
    assert all(c.seq > message.seq for c in callbacks)
    assert TOKEN not in json.dumps([c.as_json() for c in callbacks])


def test_fetch_nothing_reply_nothing_and_reset(listener, site):
    listener.operator(fetch=[], reply="{name}/{user}")
    send_message(listener.site, 43, 8, "one")
    [only] = callbacks_of(listener, 1)
    assert site.paths() == ["/hooks/send-message"]
    # nothing fetched: {name} is the user id
    assert only.kind == "send_message" and site.received[0]["fields"]["message"] == "43/43"

    listener.reset()
    listener.operator(fetch=["user-media"], reply=None)  # - or _
    send_message(listener.site, 44, 8, "two")
    [media] = callbacks_of(listener, 1)
    assert media.kind == "user_media" and media.ok and media.fields == {"user_id": "44"}

    listener.reset()  # off again: a message starts nothing
    send_message(listener.site, 45, 8, "three")
    listener.wait_for("message_sent")
    send_message(listener.site, 46, 8, "four")  # answered after the first: its callbacks would have begun
    listener.wait_for("message_sent", count=2)
    assert listener.callbacks == [] and site.paths() == ["/hooks/send-message", "/hooks/user-media"]


def test_a_rejected_message_starts_nothing(listener, site):
    listener.operator()
    bad = dataclasses.replace(listener.site, token="wrong-token-0000000")
    assert send_message(bad, 42, 7, "hi").status == 401
    send_message(listener.site, 42, 7, "hi")
    callbacks = callbacks_of(listener, 3)
    assert {c.trigger for c in callbacks} == {listener.calls[1].seq}
    assert len(site.received) == 3


@pytest.mark.parametrize(
    "reply, field, error",
    [
        ({**PROFILE, "id": "42", "balance": 5}, "balance", "the reply breaks the contract: "),
        ({"status": 0, "message": "no such user"}, "status", "HTTP 200, status 0: no such user"),
    ],
)
def test_a_broken_profile_gives_findings_naming_the_field(listener, site, reply, field, error):
    site.replies["/hooks/user-info"] = lambda: (200, "application/json", json.dumps(reply).encode())
    listener.operator(reply="{name}")
    send_message(listener.site, 42, 7, "hi")
    info, media, sent = callbacks_of(listener, 3)
    assert not info.ok and error in info.error and "\n" not in info.error
    assert any(f["level"] == "violation" and f["field"] == field for f in info.findings)
    if field == "balance":
        assert {f["field"] for f in info.findings if f["level"] == "violation"} == {"id", "balance"}
        assert "(and 1 more)" in info.error
    # the loop goes on: media and the reply are made all the same, {name} taken from the profile's name
    assert media.ok and sent.ok
    assert site.received[2]["fields"]["message"] == ("Zoë" if field == "balance" else "42")


def test_an_html_error_page_and_an_unreachable_site(site, isolated):
    site.replies["/hooks/user-info"] = lambda: (500, "text/html", b"<html><title>Fatal error</title></html>")
    with socket.socket() as closed:  # a port nobody listens on: refused
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
        config = isolated / "opcli.yaml"
        site_config(config, site)
        config.write_text(config.read_text().replace(f"{site.url}/hooks/send-message", f"{dead}/send"))
        with ListenerThread(load_config(config, listen=True)) as listener:
            listener.operator(fetch=["user_info"])
            send_message(listener.site, 42, 7, "hi")
            info, sent = callbacks_of(listener, 2)
    assert not info.ok and info.status == 500 and info.error == "HTTP 500: an HTML page ('Fatal error')"
    assert (
        not sent.ok and sent.status is None and sent.error.startswith(f"cannot reach {dead}/send: connection refused")
    )


def test_the_token_is_masked_wherever_the_site_puts_it(site, isolated):
    echo = json.dumps({"status": 1, "message": f"got token={TOKEN}"}).encode()
    site.replies["/hooks/send-message"] = lambda: (200, "application/json", echo)
    config = site_config(isolated / "opcli.yaml", site)
    config.write_text(config.read_text().replace("/hooks/user-media", f"/hooks/user-media?key={TOKEN}"))
    with ListenerThread(load_config(config, listen=True)) as listener:
        listener.operator(fetch=["user_media"])
        send_message(listener.site, 42, 7, "hi")
        media, sent = callbacks_of(listener, 2)
    assert media.ok and media.url == f"{site.url}/hooks/user-media?key=…3456"
    assert sent.ok and sent.reply == {"status": 1, "message": "got token=…3456"}
    assert TOKEN not in json.dumps([c.as_json() for c in listener.journal.entries()])


def test_concurrency_is_bounded_and_the_listener_keeps_answering(listener, site, isolated):
    listener.operator(fetch=["user_info"], reply=None, timeout=60)  # held calls must not time out meanwhile
    site.hold.clear()
    burst = 200
    batch = isolated / "burst.jsonl"
    batch.write_text('{"user": 42, "bot": 7, "message": "hi"}\n' * burst)
    summary = send_batch(listener.site, str(batch), concurrency=16)
    assert summary.sent == burst  # every message answered while the site holds the callbacks
    for _ in range(10):
        assert site.arrived.acquire(timeout=20)
    # the site holds ten callbacks and no more come, while the listener goes on answering
    info = httpx.post(listener.endpoints["user_info"], data={"token": TOKEN, "user_id": "42"}, timeout=10)
    assert info.status_code == 200
    assert not site.arrived.acquire(timeout=0.3)
    assert site.most_open == 10 and len(site.received) == 10
    site.hold.set()
    callbacks = callbacks_of(listener, burst)
    assert all(c.ok for c in callbacks) and site.most_open <= 10 and len(site.received) == burst


# --- the loop in `opcli listen`, a real process -----------------------------------------------


def test_a_slow_site_times_out_and_the_exit_code_is_1(listen_proc, site, isolated):
    site.delay = 1.5
    config = site_config(isolated / "opcli.yaml", site, listen="listen:\n  operator:\n    fetch: [user-info]\n"
                                                                 "    timeout: 0.3\n")  # fmt: skip
    proc = listen_proc("-c", str(config), "listen", "--port", "0", "--count", "1")
    reply = httpx.post(
        f"{proc.url}/operator-api",
        data={"token": TOKEN, "action": "message_sent", "user_id": "42", "contact_id": "7", "message": "hi"},
    )
    assert reply.status_code == 200
    assert proc.wait() == 1
    out = "".join(proc.stdout)
    # the terminal view: the message, then its callbacks under it
    assert out.index("message_sent") < out.index("after #1: x --- user_info user 42")
    assert "error: cannot reach " + site.url + "/hooks/user-info: no answer within 0.3s (timeout)" in out
    assert "after #1: x --- send_message bot 7 -> user 42" in out  # the loop goes on after a failed call
    assert "Stopped (count): 1 call, 0 rejected; 2 callbacks, 2 failed" in proc.stderr


def test_the_loop_calls_a_site_on_loopback_not_itself(listen_proc, site, isolated):
    # the panel's URL is elsewhere: the listener plays the panel at its own port and calls the
    # site's webhooks where they are (only webhooks at the panel's address are the listener's own)
    panel_url = "https://panel.example.com/start/api"
    config = write_config(
        isolated / "opcli.yaml", panel_url=panel_url, hooks=f"{site.url}/hooks", token=TOKEN,
        listen="listen:\n  operator:\n    fetch: [user_info]\n",
    )  # fmt: skip
    proc = listen_proc("-c", str(config), "listen", "--port", "0", "--count", "1", "--json")
    path = urlsplit(panel_url).path
    fields = {"token": TOKEN, "action": "message_sent", "user_id": "42", "contact_id": "7", "message": "hi"}
    assert httpx.post(f"{proc.url}{path}", data=fields).status_code == 200
    assert proc.wait() == 0, proc.stderr
    callbacks = [line for line in map(json.loads, proc.stdout) if line["event"] == "callback"]
    assert [c["url"] for c in callbacks] == [f"{site.url}/hooks/user-info", f"{site.url}/hooks/send-message"]
    assert len(site.received) == 2


def send_proc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "opcli", "send", "--user", "42", "--bot", "7", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_zero_config_loop_through_real_processes(listen_proc, isolated):
    # no config at all: the built-in site's webhooks name the listener, so it calls itself
    proc = listen_proc("listen", "--operator", "--count", "1", "--json", "--port", "0")
    port = proc.url.rsplit(":", 1)[1]
    sender = isolated / "sender"
    sender.mkdir()
    write_config(sender / "opcli.yaml", panel_url=f"http://127.0.0.1:{port}/operator-api", token="dev-token")
    done = send_proc(sender, "-m", "hi")
    assert done.returncode == 0, done.stderr
    assert proc.wait() == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout]
    assert [(line["event"], line.get("kind")) for line in lines] == [
        ("ready", None),
        ("call", "message_sent"),
        ("call", "user_info"),
        ("callback", "user_info"),
        ("call", "user_media"),
        ("callback", "user_media"),
        ("call", "send_message"),
        ("callback", "send_message"),
    ]
    callbacks = [line for line in lines if line["event"] == "callback"]
    assert all(c["ok"] and c["trigger"] == 1 and c["url"].startswith(proc.url) for c in callbacks)
    assert callbacks[0]["reply"]["name"] == "Olga"
    assert callbacks[2]["fields"] == {"user_id": "7", "contact_id": "42", "message": "Re: hi"}
    assert lines[6]["fields"] == {"user_id": "7", "contact_id": "42", "message": "Re: hi"}
    assert "Stopped (count): 1 call, 0 rejected; 3 callbacks, 0 failed" in proc.stderr


@pytest.mark.parametrize("how", ["SIGTERM", "--timeout"])
def test_pending_callbacks_are_cancelled(listen_proc, site, isolated, how):
    site.hold.clear()
    config = site_config(isolated / "opcli.yaml", site)
    extra = ["--count", "1", "--timeout", "2"] if how == "--timeout" else []
    proc = listen_proc("-c", str(config), "listen", "--operator", "--port", "0", "--json", *extra)
    form = {"token": TOKEN, "action": "message_sent", "user_id": "42", "contact_id": "7", "message": "hi"}
    assert httpx.post(f"{proc.url}/operator-api", data=form).status_code == 200
    assert site.arrived.acquire(timeout=20)  # the user-info call is under way, held by the site
    if how == "SIGTERM":
        proc.proc.send_signal(signal.SIGTERM)
    assert proc.wait() == (143 if how == "SIGTERM" else 124)
    lines = [json.loads(line) for line in proc.stdout]
    callbacks = [(c["kind"], c["ok"], c["status"], c["error"]) for c in lines if c["event"] == "callback"]
    assert callbacks == [
        ("user_info", False, None, "cancelled"),
        ("user_media", False, None, "cancelled"),
        ("send_message", False, None, "cancelled"),
    ]
    assert site.paths() == ["/hooks/user-info"] and "Traceback" not in proc.stderr


def test_operator_settings_are_validated_with_positions(cli, isolated):
    (isolated / "opcli.yaml").write_text(
        "sites:\n  a: {token: t, panel_url: 'http://127.0.0.1:9/p'}\n"
        "listen:\n"
        "  operator:\n"
        "    fetch: [user_info, profile]\n"
        "    reply: 'Hi {nmae}'\n"
        "    delay: -1\n"
        "    timeout: 0\n"
        "    retries: 2\n"
    )
    result = cli("config", "validate")
    assert result.exit_code == 2
    for expected in (
        "opcli.yaml:5:12: listen.operator.fetch: expected user_info or user_media in the list, got 'profile'",
        "opcli.yaml:6:12: listen.operator.reply: unknown placeholder {nmae} (use {message}, {user}, {bot}, {name})",
        "opcli.yaml:7:12: listen.operator.delay: expected a number of seconds, 0 or more, got -1",
        "opcli.yaml:8:14: listen.operator.timeout: expected a number of seconds above 0, got 0",
        "opcli.yaml:9:5: unknown key 'listen.operator.retries' (expected one of: fetch, reply, delay, timeout)",
    ):
        assert expected in result.stderr
    with ListenerThread() as listener, pytest.raises(ValueError, match="operator fetch: expected user_info or"):
        listener.operator(fetch=["user_profile"])


def test_config_show_has_the_operator_settings(site, isolated, cli):
    config = site_config(isolated / "opcli.yaml", site, listen="listen:\n  operator: {fetch: [], reply: null}\n")
    assert load_config(config, listen=True).listen.operator is not None
    shown = json.loads(cli("config", "show", "--json").stdout)
    assert shown["listen"]["operator"] == {"fetch": [], "reply": None, "delay": 0.0, "timeout": 4.0}
