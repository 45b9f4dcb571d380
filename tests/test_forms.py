"""The listener's multipart parser (``opcli.listener.forms``) reads what python_multipart reads.

The listener parses multipart bodies itself (with ``bytes.split`` and ``bytes.find``;
python_multipart's byte loop was a quarter of its time). Here both parse the same bodies --
valid ones cut into chunks anywhere, byte by byte too, and valid ones with a few bytes changed
-- and must agree on the fields and files, or both refuse the body.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from pathlib import Path

import pytest
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from opcli.listener.forms import MAX_HEADER_LINE, MAX_PART_HEADERS, Body, Rejected, _Multipart, read_form
from opcli.protocol import mask_token

PIECES = [
    b"a",
    b"\r",
    b"\n",
    b"-",
    b"--",
    b"\r\n",
    b"\r\n--",
    b"XyZ",
    b"\r\n--XyZ",
    b"\r\n--XyZ1",
    b" ",
    b"\t",
    b"x" * 40,
]


def reference(body: bytes, boundary: bytes) -> tuple[list, list]:
    """Fields and files as python_multipart reads them (the listener's rules for a part's name on top)."""
    fields: list[tuple[str, str]] = []
    files: list[tuple[str, str, int]] = []
    part: dict = {}
    headers: dict[bytes, bytes] = {}
    name, value = bytearray(), bytearray()

    def on_header_end() -> None:
        headers[bytes(name).lower()] = bytes(value)
        name.clear()
        value.clear()

    def on_headers_finished() -> None:
        kind, params = parse_options_header(headers.pop(b"content-disposition", b""))
        headers.clear()
        if kind != b"form-data" or b"name" not in params:
            raise ValueError("not a form field")
        part.update(name=params[b"name"].decode(), file=b"filename" in params, data=bytearray())

    def on_part_end() -> None:
        data = bytes(part["data"])
        if part["file"]:
            files.append((part["name"], hashlib.sha256(data).hexdigest(), len(data)))
        else:
            fields.append((part["name"], data.decode()))

    parser = MultipartParser(
        boundary,
        {
            "on_header_field": lambda d, s, e: name.extend(d[s:e]),
            "on_header_value": lambda d, s, e: value.extend(d[s:e]),
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": lambda d, s, e: part["data"].extend(d[s:e]),
            "on_part_end": on_part_end,
        },
    )
    parser.write(body)
    if parser.state != MultipartState.END:
        raise ValueError("truncated")
    return fields, files


def ours(body: bytes, boundary: bytes, cuts: list[int]) -> tuple[list, list]:
    parsed = Body(None)
    parser = _Multipart(boundary, 1 << 30, parsed)
    for start, end in zip([0, *cuts], [*cuts, len(body)], strict=True):
        parser.feed(body[start:end])
    if not parser.complete:
        raise Rejected(400, "truncated")
    return parsed.fields, [(u.field, u.digest.hexdigest(), u.size) for u in parsed.uploads]


def valid_body(rnd: random.Random, boundary: bytes) -> bytes:
    parts = []
    for k in range(rnd.randint(0, 5)):
        value = b"".join(rnd.choice([*PIECES, b"x" * 40]) for _ in range(rnd.randint(0, 12)))
        value = value.replace(b"\r\n--" + boundary, b"\r\n-X")  # a boundary never occurs in the data
        filename = '; filename="x.bin"' if rnd.random() < 0.3 else ""
        padding = rnd.choice([b"", b"", b" ", b" \t "]) if parts else b""  # RFC 2046 transport padding
        extra = rnd.choice([b"", b"Content-Type: text/plain\r\n"])
        head = f'Content-Disposition: form-data; name="f{k}"{filename}\r\n'.encode() + extra
        parts.append(b"--" + boundary + padding + b"\r\n" + head + b"\r\n" + value + b"\r\n")
    ending = rnd.choice([b"", b"\r\n", b"\r\nan epilogue"])
    return rnd.choice([b"", b"\r\n"]) + b"".join(parts) + b"--" + boundary + b"--" + ending


@pytest.fixture(autouse=True)
def _quiet_python_multipart():
    logging.disable(logging.WARNING)  # python_multipart logs every malformed body
    yield
    logging.disable(logging.NOTSET)


def test_valid_bodies_read_the_same_however_they_are_cut():
    rnd = random.Random(18)
    for trial in range(300):
        boundary = rnd.choice([b"XyZ", b"XyZ1", b"b", b"----WebKitFormBoundary7MA4YWxkTrZu0gW"])
        body = valid_body(rnd, boundary)
        if trial % 3 == 0:
            cuts = list(range(1, len(body)))  # byte by byte: every state split at every point
        else:
            cuts = sorted(rnd.sample(range(1, len(body)), min(len(body) - 1, rnd.randint(0, 6))))
        assert ours(body, boundary, cuts) == reference(body, boundary), (body, cuts)


def test_damaged_bodies_are_refused_or_read_the_same():
    rnd = random.Random(16)
    fields = b"".join(
        b"--XyZ\r\n" + f'Content-Disposition: form-data; name="f{k}"\r\n\r\nvalue{k}\r\n'.encode() for k in range(3)
    )
    refused = 0
    for _ in range(3000):
        body = bytearray(fields + b"--XyZ--\r\n")
        for _ in range(rnd.randint(1, 3)):
            at, byte = rnd.randrange(len(body)), rnd.choice(b'\r\n-: Xa\t"=;')
            action = rnd.random()
            if action < 0.4:
                body[at] = byte
            elif action < 0.7:
                del body[at]
            else:
                body.insert(at, byte)
        try:
            expected = reference(bytes(body), b"XyZ")
        except Exception:  # noqa: BLE001 - any refusal of python_multipart's
            expected = None
        try:
            got = ours(bytes(body), b"XyZ", [])
        except Rejected as exc:
            assert exc.status == 400
            got = None
        assert got == expected, bytes(body)
        refused += got is None
    assert 300 < refused < 2700  # both outcomes were exercised


def test_padding_of_1_kib_or_more_after_a_boundary_is_refused_however_the_body_is_cut():
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--XyZ'
        + b" " * 2000
        + b'\r\nContent-Disposition: form-data; name="b"\r\n\r\n2\r\n--XyZ--\r\n'
    )
    for cuts in ([], [60, 1000], list(range(1, len(body)))):
        with pytest.raises(Rejected, match="no CRLF after the boundary's padding"):
            ours(body, b"XyZ", cuts)
    assert ours(body.replace(b" " * 2000, b" " * 1000), b"XyZ", [60]) == ([("a", "1"), ("b", "2")], [])
    longest = body.replace(b" " * 2000, b" " * 1023)  # the most padding there may be: a CR, then the LF, comes
    between = longest.index(b" \r\n") + 2
    for cuts in ([], [between], list(range(1, len(longest)))):
        assert ours(longest, b"XyZ", cuts) == ([("a", "1"), ("b", "2")], [])


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        # a header line that starts with the boundary's bytes: in the headers, that is no delimiter
        (b'Content-Disposition: form-data; name="a"\r\n--XyZx: y\r\n\r\nv', [("a", "v")]),
        # the blank line's CRLF is not a delimiter's: the value starts with the boundary's bytes
        (b'Content-Disposition: form-data; name="a"\r\n\r\n--XyZ\r\nv', [("a", "--XyZ\r\nv")]),
        (
            b'Content-Disposition: form-data; name="a"\r\n\r\n\r\n--XyZ\r\n--XyZx: y\r\n'
            b'Content-Disposition: form-data; name="b"\r\n\r\n\r\n--XyZx',
            [("a", ""), ("b", "\r\n--XyZx")],
        ),
    ],
)
def test_the_boundary_s_bytes_where_no_delimiter_may_start_are_read_as_they_are(body, fields):
    body = b"--XyZ\r\n" + body + b"\r\n--XyZ--"
    for cuts in ([], list(range(1, len(body)))):
        assert ours(body, b"XyZ", cuts) == (fields, [])
        assert reference(body, b"XyZ") == (fields, [])


def test_a_secret_that_takes_a_part_s_whole_header_block_leaves_the_rest_of_the_raw_body_whole():
    """Found in the block's text (decoded with U+FFFD) but not in its bytes, a secret takes the whole
    block out of the raw body: the block alone, however the body is cut."""
    secret = "x\ufffdxxxxxx"
    body = b'--b\r\nX: x\xffxxxxxx\r\nContent-Disposition: form-data; name="a"\r\n\r\nv\r\n--b--'
    for cuts in ([], [5], [3, 6], list(range(1, len(body)))):
        chunks = [body[start:end] for start, end in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        parsed = Body(None, keep_raw=True, secrets=(secret,))

        async def receive(chunks=chunks):
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

        asyncio.run(read_form("multipart/form-data; boundary=b", "", receive, None, 1 << 20, 1 << 20, parsed))
        assert parsed.fields == [("a", "v")]
        assert parsed.raw is not None
        source = parsed.raw.source
        assert not isinstance(source, Path)
        source.seek(0)
        assert source.read() == b"--b\r\n" + mask_token(secret).encode() + b"\r\n\r\nv\r\n--b--", cuts
        parsed.close_raw("multipart/form-data")


def test_a_boundary_with_a_cr_is_refused():
    with pytest.raises(Rejected, match="multipart boundary with a CR in it") as refused:
        read_form('multipart/form-data; boundary="a\rb"', "", None, None, 1 << 20, 1 << 20, Body(None))
    assert refused.value.status == 400


def test_the_largest_headers_a_part_may_have_are_read_however_the_body_is_cut():
    lines = [b'Content-Disposition: form-data; name="a"'.ljust(MAX_HEADER_LINE)]
    lines += [f"X-H{k}: ".encode().ljust(MAX_HEADER_LINE, b"v") for k in range(MAX_PART_HEADERS - 1)]
    head = b"--XyZ\r\n" + b"\r\n".join(lines) + b"\r\n\r\n"
    body = head + b"1\r\n--XyZ--\r\n"
    for cut in range(len(head) - 4, len(head) + 1):  # in the blank line, and on either side of it
        assert ours(body, b"XyZ", [cut]) == ([("a", "1")], []), cut
    with pytest.raises(Rejected, match=f"a part's header line is longer than {MAX_HEADER_LINE} bytes"):
        ours(body.replace(b'name="a"', b'name="' + b"a" * MAX_HEADER_LINE + b'"'), b"XyZ", [])
    with pytest.raises(Rejected, match="a part has more than 8 headers"):
        ours(head.replace(b"\r\n\r\n", b"\r\nX: y\r\n\r\n"), b"XyZ", [])
