"""Small pieces of a raw ASGI app: JSON errors, query values, the client's address, whole responses.

The inspector (``/_opcli/``) is made of them; each answer other than 2xx is ``HTTPError``, a
JSON envelope ``{"status": 0, "message": ...}``.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from opcli.protocol import KINDS, kind_name

MAX_PUT_BYTES = 1024 * 1024
COMMON_HEADERS = [(b"x-content-type-options", b"nosniff")]


class HTTPError(Exception):
    """An answer other than 2xx: a JSON envelope ``{"status": 0, "message": ...}``."""

    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


def integer(value: str, least: int) -> int:
    if not re.fullmatch(r"[0-9]{1,18}", value) or int(value) < least:
        raise ValueError(f"must be an integer >= {least}, got {value!r}")
    return int(value)


def _kind(value: str) -> str:
    kinds = (*KINDS, "unknown")
    try:
        return kind_name(value, kinds)  # user-info is user_info
    except ValueError:
        raise ValueError(f"must be one of {', '.join(kinds)}, got {value!r}") from None


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"must be a number of seconds > 0, got {value!r}")
    return seconds


_PARAMS: dict[str, Callable[[str], Any]] = {
    "kind": _kind,
    "after": lambda v: integer(v, 0),
    "count": lambda v: integer(v, 0),
    "timeout": _seconds,
}


def query(scope: dict[str, Any], *names: str) -> dict[str, Any]:
    """The query's values, parsed; an unknown parameter or a bad value is a 400 naming it."""
    values: dict[str, Any] = {}
    for name, value in parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True):
        if name not in names:
            takes = f"takes {', '.join(names)}" if names else "takes no parameters"
            raise HTTPError(400, f"unknown parameter {name!r}: {scope['path']} {takes}")
        try:
            values[name] = _PARAMS[name](value)
        except ValueError as exc:
            raise HTTPError(400, f"{name} {exc}") from None
    return values


def is_loopback(client: Any) -> bool:
    """True for a client address in 127.0.0.0/8 or ::1 (also as an IPv4-mapped IPv6 address)."""
    if not client:
        return False
    try:
        address = ipaddress.ip_address(str(client[0]).split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def host_is_local(host: str) -> bool:
    """A Host header naming an IP address, ``localhost`` or this machine: not a rebound DNS name."""
    name = (urlsplit(f"//{host}").hostname or "").rstrip(".").lower()
    if name in ("localhost", socket.gethostname().lower()) or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


async def read_json(receive: Any, what: str) -> Any:
    """The request body as JSON: 413 past MAX_PUT_BYTES, 400 when it is not JSON."""
    body = bytearray()
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HTTPError(400, "the client disconnected before the body ended")
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > MAX_PUT_BYTES:
            raise HTTPError(413, f"the body is over {MAX_PUT_BYTES} bytes")
    try:
        return json.loads(body)
    except ValueError:
        raise HTTPError(400, f"the body is not JSON; expected {what}") from None


async def respond(
    send: Any,
    status: int,
    body: bytes | None,
    content_type: bytes = b"application/json",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """One whole response (no body for 204)."""
    data = body or b""
    start_headers = [(b"content-length", str(len(data)).encode()), *COMMON_HEADERS, *(headers or [])]
    if status != 204:
        start_headers.insert(0, (b"content-type", content_type))
    await send({"type": "http.response.start", "status": status, "headers": start_headers})
    await send({"type": "http.response.body", "body": data})
