"""``/_opcli/``: the HTTP API through a real listener on a free port, with real HTTP clients."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from typing import Any

import httpx
import pytest

from opcli.config import load_config
from opcli.listener import ListenerThread
from opcli.listener.asgi import is_loopback
from opcli.listener.inspector import Inspector
from tests.conftest import INSPECTED_TOKEN, curl

TOKEN = INSPECTED_TOKEN


def post(inspected: ListenerThread, kind: str, **fields: str) -> httpx.Response:
    fields.setdefault("token", TOKEN)
    if kind == "message_sent":
        fields.setdefault("action", "message_sent")
    return httpx.post(inspected.endpoints[kind], data=fields, timeout=10)


def api(inspected: ListenerThread, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, inspected.inspector + path, timeout=20, **kwargs)


class Events:
    """An open ``/_opcli/events`` stream read in a thread: ``next()`` gives each frame as a dict."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.frames: queue.Queue[dict[str, str] | None] = queue.Queue()
        self.client = httpx.Client(timeout=httpx.Timeout(10, read=None))
        self.opened = threading.Event()
        self.status = 0
        self.socket: socket.socket | None = None
        self.thread = threading.Thread(target=self._read, args=(url, headers or {}), daemon=True)
        self.thread.start()
        assert self.opened.wait(10), "the event stream did not open"

    def _read(self, url: str, headers: dict[str, str]) -> None:
        try:
            with self.client.stream("GET", url, headers=headers) as response:
                self.socket = response.extensions["network_stream"].get_extra_info("socket")
                self.status = response.status_code
                self.content_type = response.headers.get("content-type", "")
                self.opened.set()
                frame: dict[str, str] = {}
                for line in response.iter_lines():
                    if not line:
                        if frame and "data" in frame:
                            self.frames.put(frame)
                        frame = {}
                    elif not line.startswith(":"):
                        key, _, value = line.partition(":")
                        frame[key] = value.removeprefix(" ")
        except httpx.HTTPError:
            pass  # closed by close()
        finally:
            self.opened.set()
            self.frames.put(None)

    def next(self, timeout: float = 10) -> dict[str, str] | None:
        return self.frames.get(timeout=timeout)

    def close(self) -> None:
        """Hang up, as a browser tab that is closed does."""
        if self.thread.is_alive():
            with contextlib.suppress(OSError):
                self.socket.shutdown(socket.SHUT_RDWR)  # wakes the reading thread; close() alone may not
        self.thread.join(10)
        assert not self.thread.is_alive()
        self.client.close()


def test_calls_lists_the_kept_lines_and_one_line_by_seq(inspected):
    post(inspected, "message_sent", user_id="42", contact_id="7", message="hello")
    post(inspected, "user_info", user_id="42")
    post(inspected, "user_info", user_id="43", token="wrong")
    lines = api(inspected, "GET", "calls").json()["calls"]
    assert [(c["seq"], c["kind"], c["status"]) for c in lines] == [
        (1, "message_sent", 200),
        (2, "user_info", 200),
        (3, "user_info", 401),
    ]
    assert lines == [c.as_json() for c in inspected.calls]
    only = api(inspected, "GET", "calls", params={"kind": "user-info", "after": "2"}).json()["calls"]
    assert [c["seq"] for c in only] == [3]
    assert api(inspected, "GET", "calls/1").json() == lines[0]
    missing = api(inspected, "GET", "calls/99")
    assert missing.status_code == 404 and missing.json()["status"] == 0 and "#99" in missing.json()["message"]
    # /_opcli/ requests are never journaled
    assert [c.path for c in inspected.calls] == ["/operator-api", "/hooks/user-info", "/hooks/user-info"]


@pytest.mark.parametrize(
    "path, params, message",
    [
        ("calls", {"kind": "bogus"}, "kind must be one of"),
        ("calls", {"after": "-1"}, "after must be an integer >= 0"),
        ("calls", {"kinds": "user_info"}, "unknown parameter 'kinds'"),
        ("calls/abc", {}, "seq must be an integer >= 1"),
        ("wait", {}, "count is missing"),
        ("wait", {"count": "two"}, "count must be an integer"),
        ("wait", {"count": "1", "timeout": "nan"}, "timeout must be a number of seconds > 0"),
        ("events", {"after": "x"}, "after must be an integer"),
    ],
)
def test_bad_query_values_are_a_json_400(inspected, path, params, message):
    response = api(inspected, "GET", path, params=params)
    assert response.status_code == 400
    assert response.json()["status"] == 0 and message in response.json()["message"]


def test_unknown_path_and_method(inspected):
    missing = api(inspected, "GET", "nothing")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/json"
    wrong = api(inspected, "POST", "calls")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, DELETE"
    assert inspected.calls == []


def test_wait_returns_as_the_nth_call_lands(inspected):
    post(inspected, "user_info", user_id="1")  # before the wait, but after=1 leaves it out
    with httpx.Client(timeout=30) as client:
        result: list[httpx.Response] = []
        waiter = threading.Thread(
            target=lambda: result.append(
                client.get(inspected.inspector + "wait", params={"count": 3, "kind": "user_info", "after": 1})
            )
        )
        waiter.start()
        post(inspected, "user_info", user_id="2")
        post(inspected, "message_sent", user_id="2", contact_id="7")
        post(inspected, "user_info", user_id="3")
        waiter.join(0.3)
        assert waiter.is_alive() and not result, "wait answered before the 3rd user_info call"
        post(inspected, "user_info", user_id="4")
        post(inspected, "user_info", user_id="5")
        waiter.join(20)
    assert result[0].status_code == 200
    got = result[0].json()["calls"]
    assert [(c["seq"], c["fields"]["user_id"]) for c in got] == [(2, "2"), (4, "3"), (5, "4")]


def test_wait_answers_at_once_when_enough_came(inspected):
    for user in ("1", "2"):
        post(inspected, "user_media", user_id=user)
    response = api(inspected, "GET", "wait", params={"count": 2, "kind": "user_media", "timeout": 30})
    assert response.status_code == 200 and [c["seq"] for c in response.json()["calls"]] == [1, 2]


def test_wait_times_out_with_408_and_what_came(inspected):
    post(inspected, "user_info", user_id="42")
    response = api(inspected, "GET", "wait", params={"count": 3, "kind": "user_info", "timeout": 0.3})
    assert response.status_code == 408
    body = response.json()
    assert body["status"] == 0 and body["message"] == "waited 0.3s for 3 user_info calls; 1 came"
    assert [c["fields"]["user_id"] for c in body["calls"]] == ["42"]


def test_many_waiters_and_streams_at_once(inspected):
    inspector = inspected.app.mounts["/_opcli/"]
    streams = [Events(inspected.inspector + "events") for _ in range(4)]

    async def wait_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            waits = [
                asyncio.create_task(client.get(inspected.inspector + "wait", params={"count": 2, "timeout": 30}))
                for _ in range(40)
            ]
            while len(inspector.followers) < 44:
                await asyncio.sleep(0.01)
            await asyncio.to_thread(post, inspected, "user_info", user_id="1")
            await asyncio.to_thread(post, inspected, "user_media", user_id="1")
            return await asyncio.gather(*waits)

    try:
        responses = asyncio.run(wait_all())
        assert [r.status_code for r in responses] == [200] * 40
        assert all([c["seq"] for c in r.json()["calls"]] == [1, 2] for r in responses)
        for stream in streams:
            assert [stream.next()["id"], stream.next()["id"]] == ["1", "2"]
    finally:
        for stream in streams:
            stream.close()


def test_events_deliver_each_line_as_it_is_written_and_resume(inspected):
    post(inspected, "user_info", user_id="1")
    stream = Events(inspected.inspector + "events")
    try:
        assert stream.status == 200 and stream.content_type.startswith("text/event-stream")
        first = stream.next()
        assert first["id"] == "1" and first["event"] == "call" and json.loads(first["data"])["seq"] == 1
        post(inspected, "message_sent", user_id="2", contact_id="7", message="live")
        live = stream.next(timeout=5)  # pushed as it is written: well before the 15 s keep-alive
        assert live["id"] == "2" and json.loads(live["data"]) == inspected.calls[1].as_json()
    finally:
        stream.close()
    post(inspected, "user_info", user_id="3")
    # a reconnecting browser sends Last-Event-ID: it wins over ?after=
    resumed = Events(inspected.inspector + "events?after=0", headers={"Last-Event-ID": "2"})
    after = Events(inspected.inspector + "events?after=1")
    # a page that followed an earlier run of the listener (seq 99 was never written here) starts afresh
    restarted = Events(inspected.inspector + "events", headers={"Last-Event-ID": "99"})
    try:
        assert resumed.next()["id"] == "3"
        assert [after.next()["id"], after.next()["id"]] == ["2", "3"]
        assert [restarted.next()["event"], restarted.next()["id"]] == ["clear", "1"]
    finally:
        for stream in (resumed, after, restarted):
            stream.close()


def test_a_client_that_goes_away_mid_stream_is_forgotten(inspected):
    inspector = inspected.app.mounts["/_opcli/"]
    stream = Events(inspected.inspector + "events")
    deadline = time.monotonic() + 10
    while not inspector.followers and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(inspector.followers) == 1
    stream.close()
    post(inspected, "user_info", user_id="1")  # a write to the dead stream also tells it is gone
    while inspector.followers and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not inspector.followers
    assert post(inspected, "user_info", user_id="2").status_code == 200


def test_a_stream_that_falls_behind_is_closed_and_resumes(inspected):
    inspector = inspected.app.mounts["/_opcli/"]
    stream = Events(inspected.inspector + "events")
    try:
        (follower,) = inspector.followers
        follower.backlog = 0  # as if the client had fallen STREAM_BACKLOG lines behind
        post(inspected, "user_info", user_id="1")  # the journal does not wait for it: the stream ends
        assert stream.next() is None and follower.ended == "too far behind"
    finally:
        stream.close()
    resumed = Events(inspected.inspector + "events", headers={"Last-Event-ID": "0"})
    try:
        assert resumed.next()["id"] == "1"
    finally:
        resumed.close()


def test_delete_forgets_the_kept_lines_and_seq_goes_on(inspected):
    post(inspected, "user_info", user_id="1")
    stream = Events(inspected.inspector + "events")
    try:
        assert stream.next()["id"] == "1"
        response = api(inspected, "DELETE", "calls")
        assert response.status_code == 204 and response.content == b""
        assert stream.next()["event"] == "clear"
    finally:
        stream.close()
    assert api(inspected, "GET", "calls").json() == {"calls": []}
    post(inspected, "user_info", user_id="2")
    assert [c["seq"] for c in api(inspected, "GET", "calls").json()["calls"]] == [2]


def test_replay_sends_the_call_again_and_answers_the_new_line(inspected):
    post(inspected, "user_info", user_id="43")
    httpx.get(inspected.url + "/nowhere")
    assert api(inspected, "POST", "calls/9/replay").status_code == 404
    unknown = api(inspected, "POST", "calls/2/replay")
    assert unknown.status_code == 400 and "only calls to the four endpoints" in unknown.json()["message"]
    response = api(inspected, "POST", "calls/1/replay")
    assert response.status_code == 200
    line = response.json()
    assert line["seq"] == 3 and line["replay_of"] == 1 and line["kind"] == "user_info"
    assert line["fields"] == {"user_id": "43"} and line["status"] == 200 and line["reply"]["name"] == "User 43"
    assert api(inspected, "GET", "calls/3").json() == line


def test_faults_get_put_delete(inspected):
    put = api(inspected, "PUT", "faults", json=["user_info:status=503", "*:html,times=1"])
    assert put.status_code == 200 and put.json() == ["user_info:status=503", "*:html,times=1"]
    assert api(inspected, "GET", "faults").json() == ["user_info:status=503", "*:html,times=1"]
    faulted = post(inspected, "user_info", user_id="42")
    assert faulted.status_code == 503 and faulted.json() == {"status": 0, "message": "fault: HTTP 503"}
    bad = api(inspected, "PUT", "faults", json=["user_info:delay=1", "nonsense"])
    assert bad.status_code == 400 and "nonsense" in bad.json()["message"]
    assert api(inspected, "GET", "faults").json() == ["user_info:status=503", "*:html,times=1"]
    not_a_list = api(inspected, "PUT", "faults", content=b'{"a": 1}')
    assert not_a_list.status_code == 400 and "JSON list" in not_a_list.json()["message"]
    assert api(inspected, "DELETE", "faults").status_code == 204
    assert api(inspected, "GET", "faults").json() == []
    assert post(inspected, "user_info", user_id="42").status_code == 200


def test_curl_of_a_call_makes_the_same_call_again(inspected, tmp_path):
    upload = tmp_path / "photo.jpg"
    upload.write_bytes(b"\xff\xd8 not really a jpeg" * 100)
    form = ["-F", f"token={TOKEN}", "-F", "action=message_sent", "-F", "user_id=42", "-F", "contact_id=7"]
    form += [
        "--form-string",
        'message=it\'s "quoted" $HOME',
        "-F",
        "attaches[0][file_url]=https://cdn.example.com/1.jpg",
    ]
    form += ["-F", "attaches[0][big]=https://cdn.example.com/1b.jpg", "-F", f"attach=@{upload}"]
    curl(*form, inspected.endpoints["message_sent"])
    curl("--data-urlencode", f"token={TOKEN}", "--data-urlencode", "user_id=42", inspected.endpoints["user_info"])
    commands = [api(inspected, "GET", f"calls/{seq}/curl") for seq in (1, 2)]
    assert all(c.headers["content-type"].startswith("text/plain") for c in commands)
    assert all('"token=$OPCLI_TOKEN"' in c.text and TOKEN not in c.text for c in commands)
    assert "--data-urlencode" in commands[1].text
    env = {**os.environ, "OPCLI_TOKEN": TOKEN}
    for command in commands:
        subprocess.run(["bash", "-c", command.text], check=True, env=env, capture_output=True, timeout=30)
    original, again = inspected.calls[0], inspected.calls[2]
    assert again.status == 200 and again.fields == original.fields and again.attaches == original.attaches
    assert [f["sha256"] for f in again.files] == [hashlib.sha256(upload.read_bytes()).hexdigest()]
    assert inspected.calls[3].fields == {"user_id": "42"} and inspected.calls[3].content_type == (
        "application/x-www-form-urlencoded"
    )
    assert api(inspected, "GET", "calls/1/curl").status_code == 200
    httpx.get(inspected.url + "/")
    assert api(inspected, "GET", "calls/5/curl").status_code == 400


def test_download_serves_only_saved_files_of_kept_lines(inspected, tmp_path):
    upload = tmp_path / "report <1>.html"
    upload.write_bytes(b"<script>alert(1)</script>")
    curl("-F", f"token={TOKEN}", "-F", "user_id=1", "-F", f"attach=@{upload}", inspected.endpoints["user_info"])
    got = api(inspected, "GET", "calls/1/files/0")
    assert got.status_code == 200 and got.content == upload.read_bytes()
    assert got.headers["content-type"] == "application/octet-stream"  # never rendered on this origin
    assert got.headers["content-disposition"].startswith('attachment; filename="report__1_.html"')
    assert api(inspected, "GET", "calls/1/files/1").status_code == 404
    # a line that names a path outside --save-dir gets nothing
    inspected.calls[0].files[0]["saved_as"] = str(tmp_path / "c.yaml")
    outside = api(inspected, "GET", "calls/1/files/0")
    assert outside.status_code == 404 and TOKEN not in outside.text


def test_no_token_in_any_answer(inspected):
    post(inspected, "message_sent", user_id="42", contact_id="7", message=f"my token is {TOKEN}")
    post(inspected, "user_info", user_id="42", Token=TOKEN)
    answers = [api(inspected, "GET", p).text for p in ("calls", "calls/1", "calls/2", "calls/1/curl", "calls/2/curl")]
    answers.append(api(inspected, "GET", "wait", params={"count": 2}).text)
    stream = Events(inspected.inspector + "events")
    try:
        answers += [stream.next()["data"], stream.next()["data"]]
    finally:
        stream.close()
    for page in ("", "inspector.js", "inspector.css"):
        answers.append(api(inspected, "GET", page).text)
    assert all(TOKEN not in text for text in answers)


def test_only_loopback_clients_are_answered():
    config = load_config(None, listen=True)
    from opcli.listener import create_app

    app = create_app(config)

    def ask(client: tuple[str, int] | None, headers: list[tuple[bytes, bytes]] = (), method: str = "GET"):
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": method, "path": "/_opcli/calls", "query_string": b"", "headers": headers}
        asyncio.run(app({**scope, "client": client}, receive, send))
        return sent[0]["status"], json.loads(sent[1]["body"] or b"null")

    assert ask(("127.0.0.1", 5000)) == (200, {"calls": []})
    assert ask(("127.8.9.10", 5000))[0] == 200
    assert ask(("::1", 5000))[0] == 200
    assert ask(("::ffff:127.0.0.1", 5000))[0] == 200
    for outsider in [("10.0.0.5", 5000), ("192.168.1.20", 5000), ("2001:db8::1", 5000), None, ("testclient", 1)]:
        status, body = ask(outsider)
        assert status == 403 and body["status"] == 0 and "loopback" in body["message"]
    # a page on another site cannot reach it through the browser: rebound DNS names and other origins
    rebound = ask(("127.0.0.1", 5000), [(b"host", b"attacker.example:8765")])
    assert rebound[0] == 403 and "attacker.example" in rebound[1]["message"]
    cross = ask(("127.0.0.1", 5000), [(b"host", b"127.0.0.1:8765"), (b"origin", b"https://evil.example")], "DELETE")
    assert cross[0] == 403
    assert ask(("127.0.0.1", 5000), [(b"host", b"localhost:8765")])[0] == 200
    assert app.journal.entries() == []
    assert is_loopback(("127.0.0.1", 1)) and not is_loopback(("128.0.0.1", 1))
    assert isinstance(app.mounts["/_opcli/"], Inspector)


def test_health_check_links_to_the_inspector(inspected):
    assert httpx.get(inspected.url + "/").json()["inspector"] == "/_opcli/"
    page = httpx.get(inspected.url + "/", headers={"Accept": "text/html"}).text
    assert '<a href="/_opcli/">' in page
    html = api(inspected, "GET", "")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in html.headers["content-security-policy"]
    assert '<script src="inspector.js"' in html.text


def test_listen_stops_promptly_with_streams_and_waits_open(listen_proc, isolated):
    proc = listen_proc("listen", "--port", "0", "--count", "1", "--json")
    inspector = f"{proc.url}/_opcli/"
    ready = json.loads(proc.stdout_lines.get(timeout=10))
    assert ready["inspector"] == inspector and f"(inspector: {inspector})" in proc.stderr
    streams = [Events(inspector + "events") for _ in range(3)]
    waited: list[httpx.Response] = []
    waiter = threading.Thread(
        target=lambda: waited.append(httpx.get(inspector + "wait", params={"count": 5, "timeout": 60}, timeout=60))
    )
    waiter.start()
    for _ in range(3):  # neither counted nor journaled
        assert httpx.get(inspector + "calls").status_code == 200
    assert proc.proc.poll() is None
    assert httpx.post(f"{proc.url}/hooks/user-info", data={"token": "dev-token", "user_id": "1"}).status_code == 200
    assert proc.wait(timeout=20) == 0
    waiter.join(20)
    assert waited[0].status_code == 503 and len(waited[0].json()["calls"]) == 1
    for stream in streams:
        assert stream.next()["id"] == "1" and stream.next() is None  # ended by the server
        stream.close()
    lines = [json.loads(line) for line in proc.stdout]
    assert [line["path"] for line in lines] == ["/hooks/user-info"]


def test_sigterm_with_a_stream_open_exits_143(listen_proc):
    proc = listen_proc("listen", "--port", "0")
    stream = Events(f"{proc.url}/_opcli/events")
    try:
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 143
        assert stream.next() is None
    finally:
        stream.close()
