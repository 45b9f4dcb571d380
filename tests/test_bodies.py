"""Raw bodies kept by the listener (--save-dir): the bytes as received, token values cut out, however chunked."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from opcli.config import load_config
from opcli.listener import create_app
from opcli.multipart import SavedBody, token_bytes
from opcli.protocol import mask_token
from tests.conftest import lines_of, write_config

BOUNDARY = "b0undAry"
MP = f"multipart/form-data; boundary={BOUNDARY}"
FORM = "application/x-www-form-urlencoded"


def part(name: str, value: bytes, filename: str | None = None) -> bytes:
    disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + value + b"\r\n"


def multipart(token: str) -> bytes:
    """A message_sent with the token first, a near-miss field holding the token, photos, UTF-8 text and a file."""
    return b"".join(
        [
            b"\r\n",  # a preamble CRLF, which parsers skip
            part("token", token.encode()),
            part("action", b"message_sent"),
            part("user_id", b"42"),
            part("contact_id", b"7"),
            part("message", "Привет,\r\n--b0und not a boundary ✓".encode()),
            part("attaches[0][file_url]", b"https://cdn.example.com/1.jpg"),
            part("attaches[0][big]", b"https://cdn.example.com/1_b.jpg"),
            part("Token", token.encode()),
            part("attach", b"\x00\r\n--b0undAr\xff" * 300, "photo.jpg"),
            f"--{BOUNDARY}--\r\n".encode(),
        ]
    )


def pieces(data: bytes, size: int):
    for start in range(0, len(data), size):
        yield data[start : start + size]


def listener(tmp_path: Path, token: str):
    saved = tmp_path / "saved"
    saved.mkdir(exist_ok=True)
    config = write_config(tmp_path / "c.yaml", token=f'"{token}"'.replace("\r", "\\r").replace("\n", "\\n"))
    app = create_app(load_config(config, listen=True), save_dir=saved)
    return TestClient(app), lines_of(app), saved


def cut_out(data: bytes, token: bytes, instead: bytes = b"") -> tuple[bytes, list[int]]:
    """What the listener must save: ``data`` with its first ``token`` cut out (the token field's
    value, where it was in ``token_at``) and every later one replaced by ``instead`` (its mask)."""
    first, _, rest = data.partition(token)
    return first + rest.replace(token, instead), [len(first)]


TOKENS = ["secret-token-123456", "\r\n--b0undAry-looks-like-a-boundary\r\n"]


@pytest.mark.parametrize("token", TOKENS)
@pytest.mark.parametrize("size", [1, 2, 3, 7, 16, 61, 4096, 10**6])
def test_multipart_is_saved_as_received_without_the_token(tmp_path, token, size):
    client, journal, saved = listener(tmp_path, token)
    original = multipart(token)
    r = client.post("/operator-api", content=pieces(original, size), headers={"content-type": MP})
    assert r.status_code == 200, r.text
    entry = journal[-1]
    assert entry["fields"]["Token"] == "***" and len(entry["attaches"]) == 1
    body = entry["body"]
    data = Path(body["saved_as"]).read_bytes()
    mask = mask_token(token).encode()  # the near-miss field holding the token: masked for good
    expected, token_at = cut_out(original, token.encode(), mask)
    assert data == expected
    assert body == {
        "saved_as": body["saved_as"],
        "size": len(expected),
        "sha256": hashlib.sha256(expected).hexdigest(),
        "content_type": MP,
        "token_at": token_at,
    }
    # put back, the token gives the original bytes (but the masked near-miss)
    again = SavedBody(Path(body["saved_as"]), body["size"], body["token_at"], token.encode(), MP)
    assert b"".join(again) == original[: token_at[0]] + token.encode() + expected[token_at[0] :]
    for path in saved.iterdir():
        assert token.encode() not in path.read_bytes()


@pytest.mark.parametrize("size", [1, 5, 10**6])
def test_urlencoded_is_saved_without_the_token(tmp_path, size):
    client, journal, saved = listener(tmp_path, "tok+en/with&odd=chars-1234")
    encoded = "tok%2Ben%2Fwith%26odd%3Dchars-1234"
    original = f"user_id=42&token={encoded}&&note=caf%C3%A9+au+lait&token={encoded}".encode()
    r = client.post("/hooks/user-info", content=pieces(original, size), headers={"content-type": FORM})
    assert r.status_code == 200, r.text
    body = journal[-1]["body"]
    data = Path(body["saved_as"]).read_bytes()
    assert data == b"user_id=42&token=&&note=caf%C3%A9+au+lait&token="
    assert body["token_at"] == [17, len(data)] and body["content_type"] == FORM
    put_back = token_bytes("tok+en/with&odd=chars-1234", FORM)
    assert b"".join(SavedBody(Path(body["saved_as"]), body["size"], body["token_at"], put_back, FORM)) == original


def test_rejected_calls_keep_their_body_when_it_was_read_whole(tmp_path):
    client, journal, saved = listener(tmp_path, "secret-token-123456")
    wrong = client.post("/hooks/user-info", content=b"token=nope&user_id=42", headers={"content-type": FORM})
    bad_id = client.post(
        "/hooks/user-info", content=b"token=secret-token-123456&user_id=x", headers={"content-type": FORM}
    )
    assert (wrong.status_code, bad_id.status_code) == (401, 422)
    assert Path(journal[0]["body"]["saved_as"]).read_bytes() == b"token=&user_id=42"  # a wrong token is cut too
    assert Path(journal[1]["body"]["saved_as"]).read_bytes() == b"token=&user_id=x"
    # the file of a rejected call is not kept, its body is
    rejected = multipart("secret-token-123456").replace(b"message_sent", b"other")
    assert client.post("/operator-api", content=rejected, headers={"content-type": MP}).status_code == 422
    assert journal[-1]["files"][0]["saved_as"] is None and journal[-1]["body"]["size"] > 0
    assert len(list(saved.iterdir())) == 3


@pytest.mark.parametrize(
    "content, status",
    [
        (multipart("secret-token-123456")[:-40], 400),  # truncated: the closing boundary never came
        (part("token", b"secret-token-123456") + b"--b0undAry\r\nno-colon-header\r\n\r\nx", 400),  # malformed
        (multipart("secret-token-123456") + b"x" * 30000, 413),  # over max_body_bytes
    ],
)
def test_bodies_cut_short_are_not_kept(tmp_path, content, status):
    config = write_config(tmp_path / "c.yaml", listen="listen:\n  max_body_bytes: 20000\n")
    saved = tmp_path / "saved"
    saved.mkdir()
    app = create_app(load_config(config, listen=True), save_dir=saved)
    journal = lines_of(app)
    r = TestClient(app).post("/operator-api", content=pieces(content, 100), headers={"content-type": MP})
    assert r.status_code == status
    assert "body" not in journal[-1]
    assert list(saved.iterdir()) == []


def test_without_save_dir_or_forward_no_body_is_kept(tmp_path):
    app = create_app(load_config(write_config(tmp_path / "c.yaml"), listen=True))
    journal = lines_of(app)
    r = TestClient(app).post("/operator-api", content=multipart("secret-token-123456"), headers={"content-type": MP})
    assert r.status_code == 200 and "body" not in journal[-1]


@pytest.mark.parametrize("content_type", [MP, FORM])
def test_the_token_quoted_anywhere_else_is_masked_in_the_saved_body(tmp_path, content_type):
    token = "secret-token-123456"
    client, journal, saved = listener(tmp_path, token)
    message = f"mine is {token}, twice: {token}"
    if content_type == MP:
        original = b"".join([part("token", token.encode()), part("user_id", b"42"), part("message", message.encode())])
        original += part(f"x{token}", b"1") + part("attach", b"data", f"{token}.txt") + f"--{BOUNDARY}--\r\n".encode()
        original += f"an epilogue, which parsers ignore: {token}\r\n".encode()
        mask = "…3456".encode()
    else:
        odd = token.replace("s", "%2573", 1)  # its "s" %-encoded twice: no form of the token in the raw bytes
        original = (
            f"token={token}&user_id=42&message={message.replace(' ', '+')}&x{token}=1&note={token}+{odd}".encode()
        )
        mask = b"%E2%80%A63456"
    r = client.post("/hooks/user-info", content=original, headers={"content-type": content_type})
    assert r.status_code == 200, r.text
    entry = journal[-1]
    assert entry["fields"]["message"] == "mine is …3456, twice: …3456"
    if content_type == FORM:  # (decoded once, the "s" is %73: the journal masks that form too)
        assert entry["fields"]["note"] == "…3456 …3456"
    data = Path(entry["body"]["saved_as"]).read_bytes()
    expected, token_at = cut_out(original, token.encode(), mask)
    if content_type == FORM:
        expected = expected.rsplit(b"&note=", 1)[0] + b"&note=" + mask
    assert data == expected and entry["body"]["token_at"] == token_at
    put_back = token_bytes(token, content_type)
    again = SavedBody(Path(entry["body"]["saved_as"]), entry["body"]["size"], token_at, put_back, content_type)
    assert b"".join(again) == expected[: token_at[0]] + put_back + expected[token_at[0] :]
    for path in saved.iterdir():
        assert token.encode() not in path.read_bytes()


def test_an_upload_whose_suffix_is_the_token_is_saved_as_bin(tmp_path):
    client, journal, saved = listener(tmp_path, "abcd1234xy")
    files = {"attach": ("photo.ABCD1234XY", b"data"), "other": ("a.jpg", b"jpg")}
    r = client.post("/hooks/user-info", data={"token": "abcd1234xy", "user_id": "42"}, files=files)
    assert r.status_code == 200
    suffixes = sorted(Path(f["saved_as"]).suffix for f in journal[-1]["files"])
    assert suffixes == [".bin", ".jpg"]
    assert not any("abcd1234xy" in p.name.lower() for p in saved.iterdir())


ENCODED = "".join(f"%{b:02x}" for b in b"secret-token-123456")  # every character %-encoded


@pytest.mark.parametrize("size", [3, 10**6])
@pytest.mark.parametrize("held", ["secret-token-123456", ENCODED, "secret-token-123456".replace("s", "\\u0073")])
def test_a_file_holding_the_token_is_not_saved_nor_its_body(tmp_path, size, held):
    token = "secret-token-123456"
    client, journal, saved = listener(tmp_path, token)
    content = b"x" * 5000 + b"the key: " + held.encode() + b"\n" + b"y" * 5000
    original = (
        b"".join([part("token", token.encode()), part("user_id", b"42"), part("attach", content, "notes.txt")])
        + f"--{BOUNDARY}--\r\n".encode()
    )
    r = client.post("/hooks/user-info", content=pieces(original, size), headers={"content-type": MP})
    assert r.status_code == 200, r.text
    entry = journal[-1]
    assert entry["files"][0]["saved_as"] is None and entry["files"][0]["size"] == len(content)
    assert "body" not in entry and "file 'notes.txt' holds the token: not saved" in entry["warnings"]
    assert list(saved.iterdir()) == []
    # a file without it is saved as ever
    clean = original.replace(held.encode() + b"\n", b"nothing here\n", 1)
    assert client.post("/hooks/user-info", content=clean, headers={"content-type": MP}).status_code == 200
    assert Path(journal[-1]["files"][0]["saved_as"]).read_bytes() == content.replace(
        held.encode() + b"\n", b"nothing here\n"
    )
