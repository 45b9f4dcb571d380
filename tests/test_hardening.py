"""The listener under hostile input and lazy clients, through real sockets (issue: harden the listener)."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time

import httpx
import pytest

from opcli.config import load_config
from opcli.listener import create_app
from tests.conftest import form_request, half_closed, lines_of, write_config

TOKEN = "secret-token-123456"


@pytest.fixture
def real(tmp_path, serve):
    """A listener on a free port with a small field cap; yields (base URL, journal lines)."""
    path = write_config(tmp_path / "c.yaml", listen="listen:\n  max_field_bytes: 100000\n")
    app = create_app(load_config(path, listen=True))
    journal = lines_of(app)
    server = serve(app)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client, journal


def form(**fields: str) -> dict:
    return {"data": {"token": TOKEN, **fields}}


def test_a_lone_surrogate_in_attaches_is_journaled_escaped(real):
    client, journal = real
    attaches = '[{"file_url": "https://x/\\ud800.jpg", "big": "https://x/b.jpg"}]'
    r = client.post(
        "/operator-api", **form(action="message_sent", user_id="1", contact_id="2", message="m", attaches=attaches)
    )
    assert r.status_code == 200
    assert journal[-1]["attaches"][0]["file_url"] == "https://x/\ud800.jpg"


def test_the_last_of_a_repeated_field_counts_as_in_php(real):
    client, journal = real
    body = f"token=wrong&token={TOKEN}&user_id=abc&user_id=42"
    r = client.post("/hooks/user-info", content=body, headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and r.json()["id"] == 42
    assert journal[-1]["fields"] == {"user_id": ["abc", "42"]}
    r = client.post(
        "/hooks/user-info",
        content=f"token={TOKEN}&token=wrong&user_id=42",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 401


@pytest.mark.parametrize("name", ["Token", "token[]", "token ", " TOKEN", "api_key"])
def test_the_token_never_reaches_the_journal_under_any_name(real, name):
    client, journal = real
    r = client.post("/hooks/user-info", data={"token": TOKEN, name: TOKEN, "user_id": "42"})
    assert r.status_code == 200
    assert TOKEN not in json.dumps(journal[-1])


def test_the_token_is_masked_wherever_a_client_puts_it(real):
    client, journal = real
    r = client.post(
        "/hooks/send-message",
        data={"token": TOKEN, "user_id": "7", "contact_id": "42", "message": f"mine: {TOKEN}!", TOKEN: "name"},
        files={"attach": (f"{TOKEN}.txt", b"hi")},
    )
    assert r.status_code == 200
    assert client.get(f"/elsewhere?t={TOKEN}").status_code == 404
    assert client.post("/hooks/user-info", data={"token": f"{TOKEN}-not", "user_id": "1"}).status_code == 401
    sent = journal[0]
    assert sent["fields"]["message"] == "mine: …3456!" and sent["fields"]["…3456"] == "name"
    assert sent["files"][0]["filename"] == "…3456.txt"
    every_view = [json.dumps(journal), client.get("/_opcli/calls").text]
    every_view += [client.get(f"/_opcli/calls/{n}").text for n in (1, 2, 3)]
    every_view.append(client.get("/_opcli/calls/1/curl").text)
    for text in every_view:
        assert TOKEN not in text


def test_a_token_sent_as_a_file_leaves_no_hash(real):
    client, journal = real
    r = client.post("/hooks/user-info", data={"token": TOKEN, "user_id": "42"}, files={"attach": ("t.txt", TOKEN)})
    assert r.status_code == 200
    import hashlib

    assert hashlib.sha256(TOKEN.encode()).hexdigest() not in json.dumps(journal[-1])


def test_thousands_of_repeated_fields_are_refused_fast(real):
    client, journal = real
    body = "&".join(["user_id=1"] * 160_000) + f"&token={TOKEN}"
    r = client.post("/hooks/user-info", content=body, headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413 and "1000 fields" in r.json()["message"]
    # up to 1,000 fields, repeats are kept in linear time (160,000 once froze the listener for 21 s)
    body = "&".join(["x=1"] * 998) + f"&token={TOKEN}&user_id=1"
    r = client.post("/hooks/user-info", content=body, headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and len(journal[-1]["fields"]["x"]) == 998


def test_a_huge_text_field_is_413(real):
    client, journal = real
    r = client.post("/hooks/send-message", **form(user_id="7", contact_id="42", message="x" * 200_000))
    assert r.status_code == 413 and "max_field_bytes" in r.json()["message"]
    files = {k: (None, v) for k, v in {"token": TOKEN, "user_id": "7", "contact_id": "42"}.items()}
    r = client.post("/hooks/send-message", files={**files, "message": (None, "y" * 200_000)})
    assert r.status_code == 413
    assert [e["status"] for e in journal] == [413, 413]


@pytest.mark.parametrize(
    "body, message",
    [
        ({"attaches": "[" * 40_000 + "]" * 40_000}, "nested too deeply"),
        ({"attaches[x": "https://x/1.jpg"}, "is not a photo field"),
        ({"attaches[0][file_url][extra]": "https://x/1.jpg"}, "is not a photo field"),
    ],
)
def test_bad_attaches_are_422_naming_the_field(real, body, message):
    client, journal = real
    r = client.post("/operator-api", **form(action="message_sent", user_id="1", contact_id="2", message="m", **body))
    assert r.status_code == 422 and message in r.json()["message"]


def test_a_boundary_over_256_bytes_is_400(real):
    client, journal = real
    boundary = "b" * 300
    r = client.post(
        "/hooks/user-info",
        content=f"--{boundary}\r\n".encode(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 400 and "boundary" in r.json()["message"]
    assert journal[-1]["status"] == 400


def test_after_count_further_calls_get_503(listen_proc):
    """`--count 3` with 30 calls at once: 3 counted; the others answered (200 when already under way
    as the third was counted, else 503) and journaled, not counted."""
    import concurrent.futures

    proc = listen_proc("listen", "--port", "0", "--count", "3", "--json")

    def call(i: int) -> int:
        try:
            return httpx.post(
                f"{proc.url}/hooks/user-info", data={"token": "dev-token", "user_id": str(i)}, timeout=10
            ).status_code
        except httpx.TransportError:
            return 0  # the listener stopped before this one connected

    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        statuses = list(pool.map(call, range(30)))
    assert proc.wait() == 0
    assert statuses.count(200) >= 3, statuses
    assert set(statuses) <= {200, 503, 0}
    lines = [json.loads(line) for line in proc.stdout[1:]]
    assert [line["status"] for line in lines].count(200) == statuses.count(200)
    assert "Stopped (count): 3 calls, 0 rejected" in proc.stderr


def test_a_journal_that_cannot_be_opened_for_writing_is_exit_2_at_once(isolated):
    """`--journal /dev/full`: not even the ready line can be written, so the listener never serves."""
    done = subprocess.run(
        [sys.executable, "-m", "opcli", "listen", "--port", "0", "--journal", "/dev/full"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.count("opcli: error:") == 1 and "Traceback" not in done.stderr
    assert "cannot write the journal /dev/full: No space left on device" in done.stderr


def test_a_journal_write_failing_mid_run_answers_503_and_stops_with_exit_2(isolated):
    """The journal file hits the file-size limit after a few calls: that call is 503, never 200."""
    import resource
    import signal

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))

    journal = isolated / "j.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "opcli", "listen", "--port", "0", "--journal", str(journal)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=small_files,
    )
    try:
        line = proc.stderr.readline()
        assert line.startswith("Ready: "), line
        url = line.split()[1]
        statuses = []
        with httpx.Client(timeout=10) as client:
            for i in range(20):
                try:
                    r = client.post(f"{url}/hooks/user-info", data={"token": "dev-token", "user_id": str(i)})
                except httpx.TransportError:
                    break  # stopped
                statuses.append(r.status_code)
                if r.status_code != 200:
                    break
        err = proc.stderr.read()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stderr.close()
    assert statuses[-1] == 503 and set(statuses[:-1]) == {200}, statuses
    assert proc.returncode == 2, err
    assert "cannot write the journal" in err and "File too large" in err
    assert err.count("opcli: error:") == 1 and "Traceback" not in err
    answered = [json.loads(text) for text in journal.read_text().splitlines()[1:]]
    assert [c["status"] for c in answered] == statuses[:-1]  # every call answered 200 is in the journal


def test_idle_sockets_beyond_the_soft_fd_limit_do_not_lock_the_listener_out(isolated):
    """The listener raises its open-file limit to the hard limit: 300 idle clients, soft limit 64."""
    import resource
    import socket

    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 4096))

    proc = subprocess.Popen(
        [sys.executable, "-m", "opcli", "listen", "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=low_soft_limit,
    )
    idle: list[socket.socket] = []
    try:
        url = proc.stderr.readline().split()[1]
        host, port = url.rsplit("/", 1)[1].split(":")
        for _ in range(300):
            idle.append(socket.create_connection((host, int(port)), timeout=5))
        r = httpx.post(f"{url}/hooks/user-info", data={"token": "dev-token", "user_id": "1"}, timeout=10)
        assert r.status_code == 200
    finally:
        for sock in idle:
            sock.close()
        proc.terminate()
        err = proc.communicate(timeout=30)[1]
    assert proc.returncode == 143 and "Traceback" not in err


# --- the HTTP layer: malformed requests, sizes, time limits, h2c -----------------------------


@pytest.fixture
def raw(tmp_path, serve):
    """A listener with short time limits; yields (send raw bytes -> response bytes, journal lines, URL)."""
    import socket

    limits = "listen:\n  timeouts: {idle: 0.5, headers: 0.5, body: 0.5}\n"
    app = create_app(load_config(write_config(tmp_path / "c.yaml", listen=limits), listen=True))
    journal = lines_of(app)
    server = serve(app)
    host, port = server.url.rsplit("/", 1)[1].split(":")

    def exchange(*pieces: bytes, pause: float = 0.0) -> bytes:
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            for piece in pieces:
                sock.sendall(piece)
                time.sleep(pause)
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
        return response

    return exchange, journal, server.url


def status_and_json(response: bytes) -> tuple[int, dict]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize(
    "request_bytes, message, method, kind",
    [
        (b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", "no endpoint at *", "OPTIONS", "unknown"),
        (
            b"POST /hooks/user-info?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "malformed",
            "POST",
            "user_info",  # a broken call to an endpoint is that endpoint's (--count counts it)
        ),
        (
            b"POST /hooks/user-info HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "malformed",
            "POST",
            "user_info",
        ),
        (b"BREW /pot HTCPCP/1.0\r\n\r\n", "malformed", "?", "unknown"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40), "a TLS handshake", "-", "unknown"),
    ],
)
def test_malformed_http_gets_a_json_400_and_a_journal_line(raw, request_bytes, message, method, kind):
    exchange, journal, _ = raw
    status, reply = status_and_json(exchange(request_bytes))
    assert status in (400, 404) and reply["status"] == 0 and message in reply["message"]
    assert journal[-1]["status"] == status and journal[-1]["reply"] == reply
    assert (journal[-1]["method"], journal[-1]["kind"]) == (method, kind)


def test_a_bad_chunk_in_the_body_gets_the_same_400_in_the_journal_and_on_the_wire(raw):
    exchange, journal, _ = raw
    head = (
        b"POST /hooks/user-info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n\r\n"
    )
    status, reply = status_and_json(exchange(head + b"5\r\ntoken\r\nzz\r\nabc\r\n0\r\n\r\n"))
    assert status == 400 and "malformed HTTP request" in reply["message"]
    assert [(line["status"], line["reply"]) for line in journal] == [(400, reply)]
    assert journal[-1]["kind"] == "user_info"


def test_headers_over_64_kib_are_431(raw):
    exchange, journal, _ = raw
    status, reply = status_and_json(exchange(b"POST /hooks/user-info HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n"))
    assert status == 431 and "larger than 65536" in reply["message"]
    assert journal[-1]["status"] == 431 and journal[-1]["kind"] == "user_info"


def test_curl_http2_upgrade_offer_is_served_as_http_1_1(raw):
    exchange, journal, url = raw
    for form in (["-d", f"token={TOKEN}", "-d", "user_id=42"], ["-F", f"token={TOKEN}", "-F", "user_id=42"]):
        done = subprocess.run(
            ["curl", "-sS", "--http2", *form, f"{url}/hooks/user-info"], capture_output=True, text=True, timeout=30
        )
        assert json.loads(done.stdout)["id"] == 42, done.stdout + done.stderr
    assert [line["status"] for line in journal] == [200, 200]


def test_an_idle_connection_is_closed(raw):
    exchange, journal, _ = raw
    assert exchange() == b""  # nothing sent: the listener closes the connection after listen.timeouts.idle
    assert journal == []


def test_slow_headers_get_408(raw):
    exchange, journal, _ = raw
    response = exchange(b"POST /hooks/user-info HTTP/1.1\r\n", b"Host: x\r\n", b"X-Slow: 1\r\n", pause=0.4)
    status, reply = status_and_json(response)
    assert status == 408 and "headers did not come within 0.5 s" in reply["message"]
    assert journal[-1]["status"] == 408


def test_a_stalled_body_gets_408_from_the_listener(raw):
    exchange, journal, _ = raw
    head = (
        b"POST /hooks/user-info HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n\r\ntoken="
    )
    status, reply = status_and_json(exchange(head))
    assert status == 408 and "stalled" in reply["message"]
    assert [(line["kind"], line["status"]) for line in journal] == [("user_info", 408)]


def test_keep_alive_requests_in_a_row_still_work(raw):
    exchange, journal, _ = raw
    request = (
        b"POST /hooks/user-info HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(f"token={TOKEN}&user_id=42"), f"token={TOKEN}&user_id=42".encode())
    )
    response = exchange(request, request)
    assert response.count(b"HTTP/1.1 200 OK") == 2 and [line["status"] for line in journal] == [200, 200]


def test_pipelined_requests_are_answered_in_order_each_whole(raw):
    """Three requests in one write: three responses, in order, each head with its own body."""
    exchange, journal, _ = raw

    def request(body: str) -> bytes:
        return (
            b"POST /hooks/user-info HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body.encode())
        )

    response = exchange(
        request(f"token={TOKEN}&user_id=42") + request("token=bad&user_id=42") + request(f"token={TOKEN}&user_id=7")
    )
    answers = []
    while response:
        head, _, rest = response.partition(b"\r\n\r\n")
        length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
        answers.append((head.split(b" ")[1], json.loads(rest[:length])))
        response = rest[length:]
    assert [(status, reply.get("id")) for status, reply in answers] == [(b"200", 42), (b"401", None), (b"200", 7)]
    assert [line["status"] for line in journal] == [200, 401, 200]


def test_head_http_1_0_and_connection_close_are_framed_as_http_says(raw):
    """HEAD: the head with the body's length, no body, the next answer right after it; 1.0 and close: closed."""
    exchange, journal, _ = raw
    response = exchange(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, rest = response.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head).group(1))
    assert head.startswith(b"HTTP/1.1 200 OK") and rest.startswith(b"HTTP/1.1 200 OK"), response
    second_head, _, body = rest.partition(b"\r\n\r\n")
    assert len(body) == length and json.loads(body)["opcli"] and b"connection: close" in second_head
    old = exchange(form_request(f"token={TOKEN}&user_id=42".encode()).replace(b"HTTP/1.1\r\n", b"HTTP/1.0\r\n", 1))
    assert old.startswith(b"HTTP/1.1 200 OK") and b"connection: close" in old.split(b"\r\n\r\n")[0], old
    refused = exchange(b"GET /hooks/user-info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    names = [line.split(b":")[0] for line in refused.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]]
    assert names == [b"date", b"content-type", b"content-length", b"allow", b"connection"], refused
    assert [(line["method"], line["status"]) for line in journal] == [
        ("HEAD", 200),
        ("GET", 200),
        ("POST", 200),
        ("GET", 405),
    ]


def test_expect_100_continue_gets_its_interim_answer_before_the_body_is_sent(raw):
    """A client that waits for `100 Continue` (curl does for a large body) gets it, then the answer."""
    import socket

    _, journal, url = raw
    host, port = url.rsplit("/", 1)[1].split(":")
    body = f"token={TOKEN}&user_id=42".encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = form_request(body).removesuffix(body).replace(b"\r\n\r\n", b"\r\nEXPECT: 100-Continue\r\n\r\n")
        sock.sendall(head)
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
    assert [line["status"] for line in journal] == [200]


def test_a_client_answered_early_that_sends_no_body_is_closed_after_the_idle_limit(tmp_path, serve):
    """curl with `Expect: 100-continue` and a 415: it never sends the body; the connection ends after idle."""
    import socket

    limits = "listen:\n  timeouts: {idle: 0.5, headers: 30, body: 30}\n"
    app = create_app(load_config(write_config(tmp_path / "c.yaml", listen=limits), listen=True))
    host, port = serve(app).url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:  # (a 30 s wait would time out)
        sock.sendall(
            b"POST /hooks/user-info HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 10\r\nExpect: 100-continue\r\n\r\n"
        )
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    assert response.startswith(b"HTTP/1.1 415 ") and response.count(b"HTTP/1.1") == 1, response


def test_a_pipelined_body_still_coming_when_the_answer_before_it_leaves_gets_the_body_limit(tmp_path, serve):
    """The next request's body, half sent with the first request, is not held to the idle limit."""
    import socket

    limits = "listen:\n  timeouts: {idle: 0.3, headers: 5, body: 5}\n"
    app = create_app(load_config(write_config(tmp_path / "c.yaml", listen=limits), listen=True))
    journal = lines_of(app)
    host, port = serve(app).url.rsplit("/", 1)[1].split(":")
    second = form_request(f"token={TOKEN}&user_id=7".encode())
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(form_request(f"token={TOKEN}&user_id=42".encode()) + second[:-5])
        time.sleep(1.0)  # the first answer is out; more than idle passes
        sock.sendall(second[-5:] + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    assert response.count(b"HTTP/1.1 200 OK") == 3, response
    assert [line["status"] for line in journal] == [200, 200, 200]


@pytest.mark.parametrize("half_close", [False, True])
def test_the_next_requests_headers_begun_with_an_answered_request_get_the_headers_limit(tmp_path, serve, half_close):
    """A request's headers that came, in part, in the same write as the request before it: once that one
    is answered, they are timed as headers (408, journaled), not as an idle connection closed in silence;
    a client that half-closes there gets the 400 of headers cut short."""
    import socket

    limits = "listen:\n  timeouts: {idle: 0.3, headers: 1.5, body: 5}\n"
    app = create_app(load_config(write_config(tmp_path / "c.yaml", listen=limits), listen=True))
    journal = lines_of(app)
    host, port = serve(app).url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        started = time.monotonic()
        begun = b"POST /hooks/user-info HTTP/1.1\r\nHost: x\r\n"  # the next request's first lines, then nothing
        sock.sendall(form_request(f"token={TOKEN}&user_id=42".encode()) + begun)
        if half_close:
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
            sock.shutdown(socket.SHUT_WR)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
        waited = time.monotonic() - started
    if half_close:
        assert response.startswith(b"HTTP/1.1 400 ") and b"ended before its headers did" in response, response
        assert [line["status"] for line in journal] == [200, 400]
    else:
        first, _, second = response.partition(b"HTTP/1.1 408 ")
        assert first.startswith(b"HTTP/1.1 200 OK") and second, response
        assert b"headers did not come within 1.5 s" in second and b"connection: close" in second, response
        assert waited >= 1.0  # (the headers limit, not the idle one)
        assert [line["status"] for line in journal] == [200, 408]
    assert journal[1]["method"] == "POST" and journal[1]["path"] == "/hooks/user-info"


def test_the_next_requests_headers_begun_with_the_body_of_a_request_answered_early_get_the_headers_limit(
    tmp_path, serve
):
    """A 415 answered before its body came; the body then comes with the next request's first lines: 408 for it."""
    import socket

    limits = "listen:\n  timeouts: {idle: 0.3, headers: 1.5, body: 5}\n"
    app = create_app(load_config(write_config(tmp_path / "c.yaml", listen=limits), listen=True))
    journal = lines_of(app)
    host, port = serve(app).url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /hooks/user-info HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 10\r\nExpect: 100-continue\r\n\r\n"
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 415 ")
        sock.sendall(b"0123456789" + b"POST /hooks/user-media HTTP/1.1\r\nHost: x\r\n")
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    assert response.startswith(b"HTTP/1.1 408 ") and b"headers did not come within 1.5 s" in response, response
    assert [line["status"] for line in journal] == [415, 408]
    assert journal[1]["path"] == "/hooks/user-media"


def test_a_kept_alive_connection_lasts_the_idle_limit_not_uvicorns_five_seconds(tmp_path, serve):
    """listen.timeouts.idle decides when an idle connection closes, also after an answer."""
    import socket

    limits = "listen:\n  timeouts: {idle: 30}\n"
    app = create_app(load_config(write_config(tmp_path / "c.yaml", listen=limits), listen=True))
    host, port = serve(app).url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for pause in (0, 5.5):  # (uvicorn's own keep-alive limit is 5 s)
            time.sleep(pause)
            sock.sendall(form_request(f"token={TOKEN}&user_id=42".encode()))
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")


def test_a_client_that_pipelines_thousands_of_calls_and_reads_nothing_stalls_only_itself(tmp_path, serve):
    """Its answers wait in the socket, not in the listener: others are served; when it reads, all come, in order."""
    import socket

    app = create_app(load_config(write_config(tmp_path / "c.yaml"), listen=True))
    journal = lines_of(app)
    url = serve(app).url
    host, port = url.rsplit("/", 1)[1].split(":")
    count = 20000
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # (before connecting: a small window)
        sock.settimeout(10)
        sock.connect((host, int(port)))
        requests = b"".join(form_request(f"token={TOKEN}&user_id={n}".encode()) for n in range(count))
        sock.setblocking(False)
        sent = 0
        with contextlib.suppress(BlockingIOError):  # the listener stops reading once its answers back up
            while sent < len(requests):
                sent += sock.send(requests[sent : sent + 65536])
        seen = -1
        while seen != len(journal):  # until the listener has stopped reading its requests
            seen = len(journal)
            time.sleep(0.5)
        assert seen < count
        other = httpx.post(f"{url}/hooks/user-info", data={"token": TOKEN, "user_id": "7"}, timeout=10)
        assert other.status_code == 200
        sock.setblocking(True)
        sock.sendall(requests[sent:])
        response = b""
        while response.count(b"HTTP/1.1 ") < count or not response.endswith(b"}"):
            response += sock.recv(1 << 20)
    ids = [json.loads(body)["id"] for body in re.findall(rb"\r\n\r\n(\{.*?\})(?=HTTP/1.1 |$)", response)]
    assert ids == list(range(count))
    assert len(journal) == count + 1


def test_an_early_answer_then_the_rest_of_the_body_leaves_an_idle_connection_that_is_closed(raw):
    """415 as the headers end; the body comes after it: the connection is then idle, and closed after idle."""
    exchange, journal, _ = raw
    head = b"POST /hooks/user-info HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n"
    started = time.monotonic()
    response = exchange(head, b"0123456789", pause=0.2)  # reads until the listener closes (10 s socket timeout)
    assert response.count(b"HTTP/1.1 415") == 1 and time.monotonic() - started < 5
    assert [line["status"] for line in journal] == [415]


def test_a_buffer_the_app_reuses_after_sending_it_is_sent_as_it_was(serve):
    """Writes wait for the end of the turn to leave together: what waits is a copy, as asyncio's write() takes."""
    import asyncio
    import socket

    async def app(scope, receive, send):  # noqa: ANN001
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"16")]})
        await asyncio.sleep(0.01)  # the head leaves: the first chunk is the first to wait
        buffer = bytearray(b"chunk-1:")
        await send({"type": "http.response.body", "body": buffer, "more_body": True})
        buffer[:] = b"chunk-2:"  # in the same turn: the first chunk has not left yet
        await send({"type": "http.response.body", "body": buffer})

    server = serve(app)
    host, port = server.url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    assert response.split(b"\r\n\r\n", 1)[1] == b"chunk-1:chunk-2:"


@pytest.mark.parametrize("path", ["/hooks/user-info", "/_opcli/calls"])
def test_a_client_that_half_closes_after_its_request_still_gets_the_answer(tmp_path, serve, path):
    """`nc -N`, socat, HTTP/1.0 scripts: the request, then the client's end of the stream, then read."""
    app = create_app(load_config(write_config(tmp_path / "c.yaml"), listen=True))
    server = serve(app)
    body = b"token=secret-token-123456&user_id=42" if path.startswith("/hooks") else b""
    request = form_request(body, path) if body else f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    for _ in range(20):
        response = half_closed(server.url, request)
        assert response.startswith(b"HTTP/1.1 200 "), response


def test_a_request_cut_short_by_a_half_close_gets_400_and_a_journal_line(tmp_path, serve):
    """`nc -N` with a request cut short, in its headers or in its body: answered and journaled."""
    app = create_app(load_config(write_config(tmp_path / "c.yaml"), listen=True))
    journal = lines_of(app)
    url = serve(app).url
    request = form_request(f"token={TOKEN}&user_id=42".encode())
    for cut, words in [(40, "before its headers"), (len(request) - 3, "body ended early")]:
        status, reply = status_and_json(half_closed(url, request[:cut]))
        assert status == 400 and words in reply["message"], reply
    assert [(line["status"], line["reply"]["message"][:30]) for line in journal] == [
        (400, "the request ended before its h"),
        (400, "the request's body ended early"),
    ]


def test_a_slow_pipelined_call_is_not_cut_off_by_the_idle_limit(tmp_path, serve):
    """Two requests in one write, the second slower than listen.timeouts.idle: both answered."""
    import socket

    limits = 'listen:\n  timeouts: {idle: 0.3, headers: 5, body: 5}\n  faults: ["user_info:delay=0.8"]\n'
    app = create_app(load_config(write_config(tmp_path / "c.yaml", listen=limits), listen=True))
    host, port = serve(app).url.rsplit("/", 1)[1].split(":")
    body = f"token={TOKEN}&user_id=42".encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /hooks/user-info HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    assert response.count(b"HTTP/1.1 200 OK") == 2 and b'"id":42' in response, response


def test_stopping_with_an_upload_in_flight_is_prompt_and_quiet(listen_proc, isolated):
    """SIGTERM while a client is half-way through a body: 503 to it, exit 143, no traceback."""
    import signal
    import socket

    journal = isolated / "j.jsonl"
    proc = listen_proc("listen", "--port", "0", "--journal", str(journal))
    host, port = proc.url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(
            b"POST /operator-api HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\nContent-Disposition: form-data; "
            b'name="attach"; filename="big.bin"\r\n\r\n' + b"x" * 100000
        )
        time.sleep(0.3)  # the upload is under way
        proc.proc.send_signal(signal.SIGTERM)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    assert proc.wait() == 143
    assert response.startswith(b"HTTP/1.1 503") and b"the listener is stopping" in response
    assert "Traceback" not in proc.stderr and "Cancel" not in proc.stderr
    assert json.loads(journal.read_text().splitlines()[-1])["status"] == 503


def test_every_answered_call_is_in_the_journal_even_after_kill_9(listen_proc, isolated):
    """Journal lines are written before replies: kill -9 under load loses no answered call."""
    import concurrent.futures
    import signal

    journal = isolated / "j.jsonl"
    proc = listen_proc("listen", "--port", "0", "--journal", str(journal))
    payload = b"\x00" * (1024 * 1024)
    answered: list[str] = []

    def send(i: int) -> None:
        form = {"token": "dev-token", "action": "message_sent", "user_id": str(i), "contact_id": "7"}
        try:
            r = httpx.post(f"{proc.url}/operator-api", data=form, files={"attach": ("f.bin", payload)}, timeout=20)
        except httpx.TransportError:
            return
        if r.status_code == 200:
            answered.append(str(i))

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(send, i) for i in range(40)]
        deadline = time.monotonic() + 30
        while len(answered) < 10 and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.proc.send_signal(signal.SIGKILL)
        concurrent.futures.wait(futures)
    proc.wait()
    journaled = {json.loads(line)["fields"]["user_id"] for line in journal.read_text().splitlines()[1:]}
    assert len(answered) >= 10 and set(answered) <= journaled


def test_a_burst_of_clients_each_finds_its_line_in_the_journal_when_its_answer_comes(listen_proc, isolated):
    """Answers wait for the end of the event loop's turn to leave together; each call's line is in the file first."""
    import socket
    import threading

    journal = isolated / "j.jsonl"
    proc = listen_proc("listen", "--port", "0", "--journal", str(journal))
    host, port = proc.url.rsplit("/", 1)[1].split(":")
    clients = 32
    start = threading.Barrier(clients)
    wrong: list[str] = []  # answers that were not 200, or came before their line was in the file

    def client(i: int) -> None:
        body = f"token=dev-token&user_id={1000 + i}".encode()
        request = (
            b"POST /hooks/user-info HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            for _ in range(20):  # 20 calls on one connection, all clients at once
                start.wait(10)
                sock.sendall(request)
                response = b""
                while not response.endswith(b"}") and (chunk := sock.recv(65536)):
                    response += chunk
                written = journal.read_text()  # the moment the answer came
                if f'"user_id":"{1000 + i}"' not in written or not response.startswith(b"HTTP/1.1 200 "):
                    wrong.append(response.decode())

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not wrong
    assert len(journal.read_text().splitlines()) == 1 + clients * 20  # the ready line and every call


def test_a_call_answered_early_then_stalled_is_journaled_once(raw):
    exchange, journal, _ = raw
    head = (
        b"POST /hooks/user-info HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 999999999999\r\n\r\ntoken="
    )
    response = exchange(head)  # answered 413 at once; then the body stalls past listen.timeouts.body
    assert response.count(b"HTTP/1.1 ") == 1 and b" 413 " in response.split(b"\r\n")[0]
    time.sleep(0.8)
    assert [line["status"] for line in journal] == [413]
