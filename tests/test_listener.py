"""The listener in-process (Starlette's TestClient): what it answers and journals, bad input."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from opcli.config import load_config
from opcli.listener import create_app
from tests.conftest import lines_of, write_config

TOKEN = "secret-token-123456"
MSG = {"token": TOKEN, "action": "message_sent", "user_id": "42", "contact_id": "7", "message": "hi"}


def make(tmp_path: Path, listen: str = "", save_dir: Path | None = None):
    path = write_config(tmp_path / "c.yaml", panel_url="http://127.0.0.1:9/operator-api", listen=listen)
    app = create_app(load_config(path, listen=True), save_dir=save_dir)
    return TestClient(app), lines_of(app)


def multipart(fields: dict[str, str], files: list[tuple[str, str, bytes]] = ()) -> dict:
    return {"files": [(k, (None, v)) for k, v in fields.items()] + [(f, (n, c)) for f, n, c in files]}


@pytest.fixture
def listener(tmp_path):
    return make(tmp_path)


def test_message_sent_multipart_with_photos_and_file(tmp_path):
    saved = tmp_path / "saved"
    saved.mkdir()
    client, journal = make(tmp_path, save_dir=saved)
    content = b"\x00\x01binary\xff" * 1000
    fields = {
        **MSG,
        "attaches[0][file_url]": "https://x/1.jpg",
        "attaches[0][big]": "https://x/1b.jpg",
        "attaches[1][file_url]": "https://x/2.jpg",
        "attaches[1][big]": "https://x/2b.jpg",
    }
    r = client.post("/operator-api", **multipart(fields, [("attach", "pic.png", content)]))
    assert r.status_code == 200
    assert r.json()["status"] == 1 and isinstance(r.json()["data"]["message_id"], int)
    [entry] = journal
    assert entry["kind"] == "message_sent" and entry["token_ok"] is True and entry["status"] == 200
    assert entry["fields"] == {"action": "message_sent", "user_id": "42", "contact_id": "7", "message": "hi"}
    assert entry["attaches"] == [
        {"file_url": "https://x/1.jpg", "big": "https://x/1b.jpg"},
        {"file_url": "https://x/2.jpg", "big": "https://x/2b.jpg"},
    ]
    [f] = entry["files"]
    assert f["field"] == "attach" and f["filename"] == "pic.png" and f["size"] == len(content)
    assert f["sha256"] == hashlib.sha256(content).hexdigest()
    assert Path(f["saved_as"]).parent == saved and Path(f["saved_as"]).read_bytes() == content
    assert TOKEN not in json.dumps(entry)


def test_attaches_as_json_and_urlencoded(listener):
    client, journal = listener
    photos = [{"file_url": "https://x/1.jpg", "big": "https://x/1b.jpg"}]
    r = client.post("/operator-api", data={**MSG, "attaches": json.dumps(photos)})
    assert r.status_code == 200
    assert journal[-1]["content_type"] == "application/x-www-form-urlencoded"
    assert journal[-1]["attaches"] == photos
    assert "attaches" not in journal[-1]["fields"]


@pytest.mark.parametrize(
    "path, fields, expected",
    [
        ("/hooks/user-info", {"user_id": "42"}, {"id": 42, "name": None}),
        ("/hooks/user-media", {"user_id": "42"}, {"media": None}),
        ("/hooks/send-message", {"user_id": "7", "contact_id": "42", "message": "hello"}, {"status": 1}),
    ],
)
def test_webhooks_urlencoded_and_multipart(listener, path, fields, expected):
    client, journal = listener
    for kwargs in ({"data": {"token": TOKEN, **fields}}, multipart({"token": TOKEN, **fields})):
        r = client.post(path, **kwargs)
        assert r.status_code == 200, r.text
        for key, value in expected.items():
            assert key in r.json()
            if value is not None:
                assert r.json()[key] == value
    assert [e["content_type"] for e in journal] == ["application/x-www-form-urlencoded", "multipart/form-data"]


def test_canned_user_info_template_and_404(tmp_path):
    client, _ = make(tmp_path)
    r = client.post("/hooks/user-info", data={"token": TOKEN, "user_id": "9001"})
    assert r.json()["id"] == 9001 and r.json()["name"] == "User 9001"
    client, journal = make(tmp_path, listen="listen:\n  unknown_user: 404\n")
    r = client.post("/hooks/user-info", data={"token": TOKEN, "user_id": "9001"})
    assert r.status_code == 404 and r.json()["status"] == 0
    assert journal[-1]["status"] == 404


def test_wrong_or_missing_token_is_401_and_journaled(listener):
    client, journal = listener
    for data in ({"token": "wrong", "user_id": "1"}, {"user_id": "1"}, {"token": "ünïcode", "user_id": "1"}):
        r = client.post("/hooks/user-info", data=data)
        assert r.status_code == 401
        assert r.json()["status"] == 0 and r.json()["message"]
    assert [e["token_ok"] for e in journal] == [False, False, False]
    assert all(e["status"] == 401 and e["fields"] == {"user_id": "1"} for e in journal)


BOUNDARY = "XyZ123"
MP = f"multipart/form-data; boundary={BOUNDARY}"


def part(name: str, value: bytes, filename: str | None = None) -> bytes:
    disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + value + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


VALID = body(*(part(k, v.encode()) for k, v in MSG.items()))


@pytest.mark.parametrize(
    "method, path, headers, content, status, message",
    [
        ("GET", "/operator-api", {}, None, 405, "GET is not allowed"),
        ("POST", "/nope", {}, b"", 404, "no endpoint at /nope"),
        (
            "POST",
            "/operator-api",
            {"content-type": "application/json"},
            b'{"token": 1}',
            415,
            "unsupported content type",
        ),
        ("POST", "/operator-api", {}, b"token=x", 415, "unsupported content type: none"),
        ("POST", "/operator-api", {"content-type": MP}, b"", 400, "empty body"),
        ("POST", "/operator-api", {"content-type": "application/x-www-form-urlencoded"}, b"", 400, "empty body"),
        ("POST", "/operator-api", {"content-type": "multipart/form-data"}, VALID, 400, "without a boundary"),
        ("POST", "/operator-api", {"content-type": MP}, b"this is not multipart at all", 400, "malformed multipart"),
        ("POST", "/operator-api", {"content-type": MP}, VALID[:-40], 400, "truncated multipart"),
        (
            "POST",
            "/operator-api",
            {"content-type": MP},
            body(part("token", TOKEN.encode()), part("message", b"\xff\xfe bad")),
            400,
            "field 'message' is not valid UTF-8",
        ),
        (
            "POST",
            "/operator-api",
            {"content-type": "application/x-www-form-urlencoded"},
            f"token={TOKEN}&message=%FF%FE".encode(),
            400,
            "field 'message' is not valid UTF-8",
        ),
        (
            "POST",
            "/operator-api",
            {"content-type": MP},
            body(*(part(k, v.encode()) for k, v in MSG.items() if k != "user_id")),
            422,
            "user_id is missing",
        ),
        (
            "POST",
            "/operator-api",
            {"content-type": MP},
            body(*(part(k, (v if k != "contact_id" else "abc").encode()) for k, v in MSG.items())),
            422,
            "contact_id: 'abc' is not a whole number",
        ),
        (
            "POST",
            "/operator-api",
            {"content-type": MP},
            body(*(part(k, (v if k != "action" else "delete").encode()) for k, v in MSG.items())),
            422,
            "action must be message_sent",
        ),
        (
            "POST",
            "/hooks/user-info",
            {"content-type": "application/x-www-form-urlencoded"},
            f"token={TOKEN}&user_id=-3".encode(),
            422,
            "user_id: -3 is out of range (0 to 2^63-1)",
        ),
        (
            "POST",
            "/hooks/user-info",
            {"content-type": "application/x-www-form-urlencoded"},
            f"token={TOKEN}&user_id={'9' * 5000}".encode(),  # more digits than Python's int() takes
            422,
            "user_id: '9999999999999999999999999999999999999...' is out of range (0 to 2^63-1)",
        ),
        (
            "POST",
            "/hooks/user-info",
            {"content-type": "application/x-www-form-urlencoded"},
            f"token={TOKEN}&user_id=42&{'n' * 5000}=1".encode(),
            400,
            "a field name is longer than 4224 bytes",
        ),
        (
            "POST",
            "/hooks/user-info",
            {"content-type": "application/x-www-form-urlencoded"},
            f"token={TOKEN}&user_id=42%0A".encode(),  # a regex's "$" matches before a last newline
            422,
            "user_id: '42\\n' is not a whole number",
        ),
        (
            "POST",
            "/operator-api",
            {"content-type": MP},
            body(*(part(k, v.encode()) for k, v in MSG.items()), part("attaches", b"[not json")),
            422,
            "attaches is not valid JSON",
        ),
        (
            "POST",
            "/operator-api",
            {"content-type": MP},
            body(*(part(f"f{i}", b"x") for i in range(3000))),
            413,
            "more than 1000 parts",
        ),
    ],
)
def test_bad_input_gets_json_4xx_and_a_journal_entry(listener, method, path, headers, content, status, message):
    client, journal = listener
    r = client.request(method, path, headers=headers, content=content)
    assert r.status_code == status
    assert r.headers["content-type"] == "application/json"
    assert r.json()["status"] == 0 and message in r.json()["message"]
    assert journal[-1]["status"] == status
    assert journal[-1]["reply"]["message"] == r.json()["message"]
    # and the listener keeps serving valid calls afterwards
    ok = client.post("/operator-api", content=VALID, headers={"content-type": MP})
    assert ok.status_code == 200 and journal[-1]["status"] == 200


def test_body_over_the_limit_is_413_and_leaves_no_file(tmp_path):
    saved = tmp_path / "saved"
    saved.mkdir()
    client, journal = make(tmp_path, listen="listen:\n  max_body_bytes: 5000\n", save_dir=saved)
    big = body(*(part(k, v.encode()) for k, v in MSG.items()), part("attach", b"z" * 20000, "big.bin"))
    r = client.post("/operator-api", content=big, headers={"content-type": MP})
    assert r.status_code == 413 and "5000" in r.json()["message"]
    assert list(saved.iterdir()) == []

    def chunks():  # no Content-Length: the limit is enforced while reading
        yield big[:4000]
        yield big[4000:]

    r = client.post("/operator-api", content=chunks(), headers={"content-type": MP})
    assert r.status_code == 413
    assert list(saved.iterdir()) == []
    assert [e["status"] for e in journal] == [413, 413]
    assert client.post("/operator-api", content=VALID, headers={"content-type": MP}).status_code == 200


def test_urlencoded_body_in_pieces_is_read_whole_and_capped_while_reading(tmp_path, serve):
    """A body that comes in pieces (chunked, with pauses: several reads): joined, and capped as it comes."""
    import socket
    import time

    path = write_config(tmp_path / "c.yaml", listen="listen:\n  max_body_bytes: 5000\n")
    app = create_app(load_config(path, listen=True))
    journal = lines_of(app)
    host, port = serve(app).url.rsplit("/", 1)[1].split(":")

    def post(*pieces: bytes) -> tuple[int, dict]:
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"POST /hooks/user-info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            for piece in pieces:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                time.sleep(0.05)
            sock.sendall(b"0\r\n\r\n")
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
        head, _, reply = response.partition(b"\r\n\r\n")
        return int(head.split(b" ")[1]), json.loads(reply)

    encoded = f"token={TOKEN}&user_id=42".encode()
    status, reply = post(encoded[:3], encoded[3:12], encoded[12:30], encoded[30:])  # a field cut in two too
    assert status == 200 and reply["id"] == 42
    status, reply = post(f"token={TOKEN}&about=".encode(), b"x" * 3000, b"x" * 3000)
    assert status == 413 and "5000" in reply["message"]
    assert [(e["status"], e["fields"]) for e in journal] == [(200, {"user_id": "42"}), (413, {})]


@pytest.mark.parametrize(
    "filename", ["../../etc/passwd", "/abs/path.jpg", "..\\..\\win.ini", "nul\x00byte.png", "ok.JPG"]
)
def test_client_filename_never_chooses_the_path(tmp_path, filename):
    saved = tmp_path / "saved"
    saved.mkdir()
    client, journal = make(tmp_path, save_dir=saved)
    content = b"payload-" + filename.encode("utf-8", "replace")
    # a raw body, so that the filename reaches the server exactly as written
    disp = f'form-data; name="attach"; filename="{filename}"'.encode()
    file_part = f"--{BOUNDARY}\r\nContent-Disposition: ".encode() + disp + b"\r\n\r\n" + content + b"\r\n"
    raw = body(*(part(k, v.encode()) for k, v in MSG.items()), file_part)
    r = client.post("/operator-api", content=raw, headers={"content-type": MP})
    assert r.status_code == 200, r.text
    [f] = journal[-1]["files"]
    saved_as = Path(f["saved_as"])
    assert saved_as.parent == saved and saved_as.read_bytes() == content
    assert ".." not in saved_as.name and "\x00" not in saved_as.name
    assert sorted(saved.iterdir()) == sorted([saved_as, Path(journal[-1]["body"]["saved_as"])])  # the file, the body
    assert f["filename"] == filename
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{12}\.[a-z0-9]+", saved_as.name)


def test_index_is_a_health_check(listener):
    client, journal = listener
    r = client.get("/")
    assert r.status_code == 200 and r.json()["endpoints"]["user_info"] == "/hooks/user-info"
    html = client.get("/", headers={"accept": "text/html"})
    assert html.headers["content-type"].startswith("text/html") and "/operator-api" in html.text
    assert [e["kind"] for e in journal] == ["unknown", "unknown"]


def _raw_post(url: str, path: str, head: dict[str, str], pieces: list[bytes]) -> bytes:
    """POST over a plain socket, the body in chunked pieces; returns the whole response."""
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(url)
    with socket.create_connection((where.hostname, where.port), timeout=10) as sock:
        lines = [f"POST {path} HTTP/1.1", f"Host: {where.netloc}", "Transfer-Encoding: chunked", "Connection: close"]
        sock.sendall(("\r\n".join(lines + [f"{k}: {v}" for k, v in head.items()]) + "\r\n\r\n").encode())
        try:
            for piece in pieces:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the listener may answer (and close) before the whole body went out
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    return response


def test_over_a_real_socket_a_streamed_body_over_the_limit_leaves_no_file(tmp_path, serve):
    """The file part is opened on disk while it streams; 413 mid-body and a 401 both remove it."""
    saved = tmp_path / "saved"
    saved.mkdir()
    path = write_config(tmp_path / "c.yaml", listen="listen:\n  max_body_bytes: 200000\n")
    app = create_app(load_config(path, listen=True), save_dir=saved)
    journal = lines_of(app)
    server = serve(app)
    head = {"Content-Type": MP}
    big = body(*(part(k, v.encode()) for k, v in MSG.items()), part("attach", b"z" * 500000, "big.bin"))
    response = _raw_post(server.url, "/operator-api", head, [big[i : i + 16384] for i in range(0, len(big), 16384)])
    assert response.startswith(b"HTTP/1.1 413") and b"200000" in response
    assert journal[-1]["status"] == 413 and journal[-1]["files"][0]["saved_as"] is None
    assert list(saved.iterdir()) == []

    fields = {**MSG, "token": "wrong"}
    small = body(*(part(k, v.encode()) for k, v in fields.items()), part("attach", b"y" * 50000, "f.bin"))
    response = _raw_post(server.url, "/operator-api", head, [small[:30000], small[30000:]])
    assert response.startswith(b"HTTP/1.1 401")
    assert journal[-1]["files"][0]["size"] > 0 and journal[-1]["files"][0]["saved_as"] is None
    assert list(saved.iterdir()) == [Path(journal[-1]["body"]["saved_as"])]  # the raw body (for replay) stays

    response = _raw_post(server.url, "/operator-api", head, [VALID])
    assert response.startswith(b"HTTP/1.1 200")


def test_a_lines_time_is_utc_to_the_millisecond_and_ms_has_two_decimals():
    import datetime
    import time

    from opcli.listener.call import ms_since, now

    before = datetime.datetime.now(datetime.timezone.utc)
    stamp = now()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), stamp
    moment = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    assert before - datetime.timedelta(milliseconds=1) <= moment <= datetime.datetime.now(datetime.timezone.utc)
    started, clock = time.perf_counter_ns(), time.perf_counter()  # the same clock, read two ways
    time.sleep(0.02)
    at_least = (time.perf_counter() - clock) * 1000
    ms = ms_since(started)
    at_most = (time.perf_counter() - clock) * 1000
    assert at_least - 0.01 <= ms <= at_most + 0.01 and ms == round(ms, 2) and ms >= 20


def test_bracket_photos_are_read_whatever_the_index_s_length_in_any_order():
    from opcli.protocol import _PHOTO_FIELDS, decode_attaches

    _PHOTO_FIELDS.clear()
    long_index = "attaches[" + "0" * 70 + "2][big]"  # a name too long for the parsed-name cache: parsed anyway
    photos, rest, encoding = decode_attaches(
        [("attaches[1][big]", "b"), ("attaches[0][file_url]", "a"), (long_index, "c"), ("attaches[1][big]", "b2")]
        + [("attachesX", "x")]
    )
    assert photos == [{"file_url": "a"}, {"big": "b2"}, {"big": "c"}] and rest == [("attachesX", "x")]
    assert encoding == "brackets"
    assert len(_PHOTO_FIELDS) == 3  # the two short photo names and attachesX; not the long one
    with pytest.raises(ValueError, match="not a photo field"):
        decode_attaches([("attaches[0][size]", "1")])
    for name in ("attaches[0][big]\n", "attaches[\u0663][big]"):  # a newline after; an Arabic-Indic 3 (int() takes it)
        with pytest.raises(ValueError, match="not a photo field"):
            decode_attaches([(name, "https://a/b.jpg")])
    assert decode_attaches([("attaches", '[{"file_url": "j"}]'), ("attaches[0][big]", "b")])[::2] == (
        [{"big": "b"}, {"file_url": "j"}],
        "json",
    )
    assert decode_attaches([("attaches", ""), ("m", "x")]) == ([], [("m", "x")], "json")
    assert decode_attaches([("attachesX", "x")]) == ([], [("attachesX", "x")], None)
