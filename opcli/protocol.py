"""The Operator API itself: field names, attaches encodings, envelopes and the reply contract.

Everything that knows what the protocol looks like lives here, so that the client, the listener,
``check`` and the config's canned replies agree on one contract (see shared/operator-api.md).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, Union
from urllib.parse import quote, quote_plus

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationError

ACTION_MESSAGE_SENT = "message_sent"
#: The four calls of the protocol, by the name the config and the journal use.
KINDS = ("message_sent", "send_message", "user_info", "user_media")
#: The site's three webhooks: the calls the panel makes.
WEBHOOKS = KINDS[1:]
#: The fields each call must carry as integers (the token is checked separately).
ID_FIELDS = {
    "message_sent": ("user_id", "contact_id"),
    "send_message": ("user_id", "contact_id"),
    "user_info": ("user_id",),
    "user_media": ("user_id",),
}
#: Every field a call of each kind may carry; anything else earns a warning (``--strict``: 422).
#: ``message_id``, ``message_type`` and ``is_mass_pokes`` are read by the deployed panel.
KNOWN_FIELDS = {
    "message_sent": {
        "token",
        "action",
        "user_id",
        "contact_id",
        "message",
        "message_id",
        "message_type",
        "is_mass_pokes",
    },
    "send_message": {"token", "user_id", "contact_id", "message"},
    "user_info": {"token", "user_id"},
    "user_media": {"token", "user_id"},
}
#: The one file field of the calls that carry a file.
FILE_FIELD = "attach"

#: The largest id opcli sends or accepts: ids are 64-bit signed integers on the deployed panel.
MAX_ID = 2**63 - 1

#: What ``is_url`` accepts (the contract's URLs): a host's first character is enough (matching all
#: of it cost 0.1 µs more a URL, two URLs a photo); also a JSON Schema ``pattern``.
URL_PATTERN = r"^https?://[^\s/]"
#: The envelope ``status`` values that mean failure.
FAILED_STATUSES = (0, False, "0")

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class Memo(dict[_K, _V]):
    """``fn``'s result for each argument, ``memo[arg]``, for the few values that come with every call.

    A dict's lookup: on CPython 3.11 a hit costs half of ``functools.lru_cache``'s call and
    bookkeeping, and the listener makes about twenty a call. Past ``maxsize`` results it starts
    over, so that a client's endless new values cannot grow it; an exception is not kept.
    """

    def __init__(self, fn: Callable[[_K], _V], maxsize: int) -> None:
        super().__init__()
        self.fn = fn
        self.maxsize = maxsize

    def __missing__(self, key: _K) -> _V:
        value = self.fn(key)
        if len(self) >= self.maxsize:
            self.clear()
        self[key] = value
        return value


_BRACKET = re.compile(r"attaches\[([0-9]+)\]\[(file_url|big)\]")  # fullmatch: ASCII digits, no newline after
_URL = re.compile(URL_PATTERN)
# opcli's own request header: a request `opcli replay` (or the inspector) sends again names the
# journal line it replays; the listener journals it as ``replay_of``
REPLAY_HEADER = "X-Opcli-Replay"
# scheme://user:PASSWORD@ -- the password part, up to the @ of the authority
# (a password that is a shell variable, as in the curl line of --dry-run, is no secret: it stays)
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)(?!\$)[^/\s@]+@")


def kind_name(text: Any, kinds: Iterable[str] = KINDS) -> str:
    """A kind name as a user writes it, as the journal writes it: ``user-info`` and ``user_info`` are ``user_info``.

    The one reading of a kind name for every option, argument and parameter that takes one
    (``--kind``, ``--mix``, ``--fault``, ``wait_for``, the inspector's ``?kind=``, ``fetch``);
    ``kinds`` are those the caller accepts (``KINDS`` by default; ``unknown``, ``*`` where they mean something).
    Raises ValueError listing them: ``unknown kind 'user-infos' (expected one of message_sent, ...)``.
    """
    kinds = tuple(kinds)
    kind = text.replace("-", "_") if isinstance(text, str) else text
    if kind not in kinds:
        raise ValueError(f"unknown kind {_shown(text)} (expected one of {', '.join(kinds)})")
    return kind


def mask_token(token: str | None) -> str:
    """Show a token the way every opcli output does: ``…wxyz`` (16+ chars), ``***``, or ``(empty)``."""
    if token is None or token == "":
        return "(empty)"
    return f"…{token[-4:]}" if len(token) >= 16 else "***"


def _digits(text: str) -> bool:
    """Only 0-9, at least one (no other digits: int() reads "٤٢" as 42)."""
    return text.isascii() and text.isdecimal()


def id_of(value: Any) -> int:
    """An id as the protocol carries it: a whole number from 0 to 2^63-1, as an int or a digit string.

    Raises ValueError saying what is wrong with the value (``'abc' is not a whole number``).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _digits(value.removeprefix("-")):
        try:
            number = int(value)
        except ValueError:  # more digits than int() takes (4,300): far past 2^63
            raise ValueError(f"{_shown(value)} is out of range (0 to 2^63-1)") from None
    else:
        raise ValueError(f"{_shown(value)} is not a whole number")
    if not 0 <= number <= MAX_ID:
        raise ValueError(f"{number} is out of range (0 to 2^63-1)")
    return number


def parse_id(value: Any, name: str) -> int:
    """``id_of`` for the field or option ``name``: the one id rule of every command and the listener.

    Raises ValueError naming it: ``user_id: 'abc' is not a whole number``.
    """
    try:
        return id_of(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


#: control characters as a message shows them: escaped, so that a message stays one line
_ESCAPED = {n: repr(chr(n))[1:-1] for n in (*range(32), 127)}


def _shown(value: Any) -> str:
    """A received value in a message: a string in single quotes (control characters escaped), anything else as JSON."""
    if isinstance(value, str):
        return f"'{value.translate(_ESCAPED)}'" if len(value) <= 40 else f"'{value[:37].translate(_ESCAPED)}...'"
    return json.dumps(value, ensure_ascii=False)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with each secret's value masked (as ``mask_token`` shows it) and every URL password hidden.

    The one redaction of everything opcli prints or writes: a token may hide in a URL's query, a
    URL's password or an error message.
    """
    if "@" in text and "://" in text:  # what _URL_PASSWORD needs: most texts are spared the regex
        text = _URL_PASSWORD.sub(r"\1***@", text)
    return hide_secrets(text, secrets)


def hide_secrets(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with each secret's value masked, in whatever form it takes (``secret_pattern``).

    A secret shorter than 8 characters is masked only where it stands alone (not inside a longer
    word), so that ``abc`` does not mangle ``abcdef``.
    """
    for secret in secrets:
        if secret and may_hold(text, secret):
            mask = mask_token(secret)
            text = secret_pattern(secret).sub(mask.replace("\\", "\\\\"), text)  # (the mask as it is)
    return text


def may_hold(text: str, secret: str) -> bool:
    """False when ``text`` cannot hold ``secret`` in any form: no plain form of it, no ``%`` and no ``\\``."""
    return "%" in text or "\\" in text or any(form in text for form in secret_forms(secret))


@functools.lru_cache(maxsize=64)
def secret_pattern(secret: str) -> re.Pattern[str]:
    """Where a secret stands in text: each of its characters as is, %-encoded (either case; a space
    also as ``+``) or JSON-escaped (``\\u0041``, ``\\/``), in any mix -- ``%53uper\\u0053ecret``.

    A secret shorter than 8 characters only where it stands alone. ``.pattern`` compiles for bytes
    too (``secret_bytes_pattern``).
    """
    body = "".join(f"(?:{'|'.join(_char_forms(char))})" for char in secret)
    return re.compile(rf"(?<![A-Za-z0-9]){body}(?![A-Za-z0-9])" if len(secret) < 8 else body)


@functools.lru_cache(maxsize=64)
def secret_bytes_pattern(secret: str) -> re.Pattern[bytes]:
    """``secret_pattern`` for UTF-8 bytes (a raw body, a journal line)."""
    return re.compile(secret_pattern(secret).pattern.encode())


_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _char_forms(char: str) -> list[str]:
    """The regular expressions of one character of a secret: as is, %-encoded, JSON-escaped."""

    def hex_digits(text: str) -> str:
        return "".join(f"[{c}{c.upper()}]" if c.isalpha() else c for c in text)

    forms = [re.escape(char), "".join(f"%{hex_digits(f'{byte:02x}')}" for byte in char.encode())]
    if char == " ":
        forms.append(r"\+")
    # a JSON escape, as is or escaped once more: a client's typed "\u0041" is "\\u0041" in a journal line
    if ord(char) < 0x10000:
        forms.append(r"\\\\?u" + hex_digits(f"{ord(char):04x}"))
    if char in _JSON_ESCAPES:
        escape = _JSON_ESCAPES[char]
        forms += [re.escape(escape), re.escape(json.dumps(escape)[1:-1])]
    return forms


def hide_secrets_in(value: Any, secrets: Iterable[str | None]) -> Any:
    """A JSON value with ``hide_secrets`` applied to every string in it, object keys included."""
    if isinstance(value, str):
        return hide_secrets(value, secrets)
    if isinstance(value, dict):
        return {hide_secrets(k, secrets): hide_secrets_in(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [hide_secrets_in(v, secrets) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and str(value) in secrets:
        return mask_token(str(value))  # a numeric token sent as a JSON number
    return value


def secret_needles(secrets: tuple[str, ...]) -> tuple[bytes, ...]:
    """The bytes each secret's whole forms take in UTF-8 text or JSON (``secret_forms``); see ``_NEEDLES``."""
    return tuple({form.encode() for secret in secrets if secret for form in secret_forms(secret)})


_NEEDLES = Memo(secret_needles, 64)


_PERCENT, _BACKSLASH = ord("%"), ord("\\")  # (as numbers: see holds_secret)


def holds_secret(data: bytes | bytearray, secrets: tuple[str, ...]) -> bool:
    """True when UTF-8 ``data`` (a journal line, a file) may hold one of ``secrets`` in any form.

    The whole forms are looked for first; only data with a ``%`` or a backslash goes through each
    secret's pattern (``secret_pattern``), which takes any mix of forms.

    (This runs for every call the listener journals: a loop, not any(); ``find`` and bytes as
    numbers, because ``bytes in data`` first tries the bytes as a number, and that failing costs
    more than the search -- 1.1 µs against 0.6 for a journal line.)
    """
    for needle in _NEEDLES[secrets]:
        if data.find(needle) >= 0:
            return True
    return (_PERCENT in data or _BACKSLASH in data) and any(secret_bytes_pattern(s).search(data) for s in secrets if s)


@functools.lru_cache(maxsize=64)
def secret_forms(secret: str) -> tuple[str, ...]:
    """The ways a secret appears in text, longest first: as is, URL-encoded (``/`` kept or not,
    spaces as ``+`` or ``%20``), JSON-escaped (``/`` as is or as PHP writes it, ``\\/``).

    Cached: the listener's human view redacts every line it shows.
    """
    in_json = json.dumps(secret, ensure_ascii=False)[1:-1]
    forms = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret, safe=""), in_json}
    forms.add(in_json.replace("/", "\\/"))
    return tuple(sorted(forms, key=len, reverse=True))


def is_url(value: Any) -> bool:
    """True for an http:// or https:// URL with a host."""
    return isinstance(value, str) and bool(_URL.match(value))


def make_photos(pairs: Iterable[tuple[Any, Any]]) -> list[Photo]:
    """Photo objects from ``(file_url, big)`` pairs, ``big`` defaulting to the photo itself.

    The one photo rule of ``send``, ``send --batch`` and ``load``: both URLs must be http(s),
    since the panel fetches them. Raises ValueError naming the bad URL.
    """
    photos = []
    for file_url, big in pairs:
        big = file_url if big in (None, "") else big
        for url in (file_url, big):
            if not is_url(url):
                shown = json.dumps(url, ensure_ascii=False)
                raise ValueError(f"photo URL {shown} must start with http:// or https:// (the panel fetches it)")
        photos.append(Photo(file_url=file_url, big=big))
    return photos


# --- attaches ------------------------------------------------------------------------------


def encode_attaches(photos: Iterable[Photo | dict[str, Any]], encoding: str = "brackets") -> list[tuple[str, str]]:
    """Form fields for ``attaches``: PHP bracket notation (default) or one JSON field.

    A photo may also be a dict as the listener journals it (``opcli replay``): its keys go as they are.
    """
    items = [p.model_dump() if isinstance(p, BaseModel) else p for p in photos]
    if not items:
        return []
    if encoding == "json":
        return [("attaches", json.dumps(items, ensure_ascii=False))]
    fields: list[tuple[str, str]] = []
    for k, photo in enumerate(items):
        fields += [(f"attaches[{k}][{key}]", str(value)) for key, value in photo.items()]
    return fields


def _photo_field(name: str) -> tuple[int, str] | None:
    """``attaches[N][key]`` as ``(N, key)``, else None.

    Looked up in ``_PHOTO_FIELDS``: the same few names come with every call. (Only short names
    are: a client's long ones are not kept.)
    """
    m = _BRACKET.fullmatch(name)
    return (int(m.group(1)), m.group(2)) if m else None


_PHOTO_FIELDS = Memo(_photo_field, 256)


def decode_attaches(fields: list[tuple[str, str]]) -> tuple[list[dict], list[tuple[str, str]], str | None]:
    """Split received form fields into photo objects and the other fields, and say how photos came.

    Accepts bracket notation and a JSON ``attaches`` field; raises ValueError on a JSON field
    that is not a list of objects, and on a malformed bracket name (a photo must not vanish).
    The encoding is ``json`` when an ``attaches`` field came, else ``brackets`` when bracket
    fields did, else None.
    """
    photos: dict[int, dict] = {}
    from_json: list[dict] = []
    rest: list[tuple[str, str]] = []
    encoding = None
    for name, value in fields:
        if name[:8] != "attaches":  # (a slice, not startswith(): 3.11 parses a str method's arguments slowly)
            rest.append((name, value))
            continue
        photo_field = _PHOTO_FIELDS[name] if len(name) <= 64 else _photo_field(name)
        if photo_field is not None:
            index, key = photo_field
            photos.setdefault(index, {})[key] = value
        elif name == "attaches":
            encoding = "json"
            try:
                items = json.loads(value) if value.strip() else []
            except json.JSONDecodeError as exc:
                raise ValueError(f"attaches is not valid JSON: {exc.msg}") from None
            except RecursionError:
                raise ValueError("attaches is nested too deeply") from None
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise ValueError("attaches must be a JSON array of photo objects")
            from_json.extend(items)
        elif name.startswith("attaches["):
            raise ValueError(f"{name} is not a photo field (attaches[N][file_url] or attaches[N][big])")
        else:  # attachesX: just another field
            rest.append((name, value))
    if photos:
        from_json = [*map(photos.__getitem__, sorted(photos)), *from_json]
        encoding = encoding or "brackets"
    return from_json, rest, encoding


# --- envelopes -----------------------------------------------------------------------------


def envelope_failed(body: Any) -> bool:
    """True when a reply is the panel's envelope saying ``"status": 0`` or ``false``."""
    return isinstance(body, dict) and "status" in body and body["status"] in FAILED_STATUSES


def envelope_message(body: Any) -> str:
    """The ``message`` of an envelope, or ``""``."""
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return ""


def unwrap(body: Any) -> tuple[Any, bool]:
    """``(inner, True)`` for ``{"status": 1, "data": {...}}``, else ``(body, False)``."""
    if isinstance(body, dict) and "status" in body and isinstance(body.get("data"), dict) and not envelope_failed(body):
        return body["data"], True
    return body, False


# --- the reply contract --------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class Photo(_Strict):
    """A photo of a ``message_sent`` call: the original and its thumbnail."""

    file_url: StrictStr = Field(description="URL of the original photo (the panel fetches it)")
    big: StrictStr = Field(description="URL of a thumbnail, usually 200x200")


class CustomAttr(_Strict):
    """An extra attribute of a profile, shown by the panel as ``name: value``."""

    name: StrictStr
    value: Union[StrictStr, StrictInt, StrictFloat]  # noqa: UP007 (pydantic on 3.10)


class UserInfo(_Strict):
    """The reply of the user-info webhook."""

    id: StrictInt = Field(description="the user's id: the requested user_id")
    name: StrictStr = Field(description="display name")
    gender: StrictStr = Field(description="free text, e.g. male, female")
    avatar: StrictStr = Field(description='URL of the avatar, or ""')
    balance: StrictStr = Field(description='the balance as text, e.g. "12.50" (a string, not a number)')
    location: StrictStr = Field(description="free text")
    about: StrictStr = Field(description="free text")
    custom: list[CustomAttr] = Field(description="extra attributes, each {name, value}")


class MediaItem(_Strict):
    """A private photo of a user."""

    url: StrictStr = Field(description="URL of the original")
    big: StrictStr | None = Field(None, description="URL of a thumbnail; without it the panel shows the original")


class MediaReply(_Strict):
    """The reply of the user-media webhook."""

    media: list[MediaItem]


@dataclass(frozen=True)
class Finding:
    """One result of a contract check: ``level`` is ``violation``, ``warning`` or ``notice``."""

    level: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def as_json(self) -> dict[str, str]:
        """As journal lines carry it: ``{"level", "field", "text"}``."""
        return {"level": self.level, "field": self.field, "text": self.message}


_EXPECTED = {
    "int_type": "an integer",
    "string_type": "a string",
    "float_type": "a number",
    "list_type": "a list",
    "model_type": "an object",
    "dict_type": "an object",
    "model_attributes_type": "an object",
}


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {json.dumps(value)}"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {json.dumps(shown, ensure_ascii=False)}"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "int", "float") or "[" in str(part):
            continue  # union member names pydantic adds to the location
        else:
            out += f".{part}" if out else str(part)
    return out


def _violations(model: type[BaseModel], obj: Any) -> list[Finding]:
    try:
        model.model_validate(obj)
        return []
    except ValidationError as exc:
        found: dict[str, Finding] = {}
        for err in exc.errors(include_url=False):
            field = _loc(err["loc"])
            if err["type"] == "missing":
                msg = "missing (required)"
            else:
                want = _EXPECTED.get(err["type"], err["msg"])
                if field.endswith(".value"):
                    want = "a string or a number"
                msg = f"expected {want}, found {_json_kind(err['input'])}"
            found.setdefault(field, Finding("violation", field, msg))
        return list(found.values())


def _extras(obj: Any, known: Iterable[str], prefix: str = "") -> list[Finding]:
    if not isinstance(obj, dict):
        return []
    return [Finding("warning", f"{prefix}{k}", "unknown field (the panel ignores it)") for k in obj if k not in known]


def _check_user_info(body: dict, requested_id: int | None) -> list[Finding]:
    findings = _violations(UserInfo, body)
    findings += _extras(body, UserInfo.model_fields)
    custom = body.get("custom")
    for i, attr in enumerate(custom if isinstance(custom, list) else []):
        findings += _extras(attr, CustomAttr.model_fields, f"custom[{i}].")
    ident = body.get("id")
    if requested_id is not None and type(ident) is int and ident != requested_id:
        findings.append(Finding("violation", "id", f"expected {requested_id} (the requested user_id), found {ident}"))
    avatar = body.get("avatar")
    if isinstance(avatar, str) and avatar and not is_url(avatar):
        findings.append(Finding("violation", "avatar", f'expected a URL or "", found {_json_kind(avatar)}'))
    return findings


def _check_media(body: dict) -> list[Finding]:
    findings = _violations(MediaReply, body)
    findings += _extras(body, MediaReply.model_fields)
    items = body.get("media")
    for i, item in enumerate(items if isinstance(items, list) else []):
        if not isinstance(item, dict):
            continue
        where = f"media[{i}]"
        findings += _extras(item, MediaItem.model_fields, f"{where}.")
        if "big" not in item:
            findings.append(Finding("warning", f"{where}.big", "missing (the panel shows the original instead)"))
        for key in ("url", "big"):
            value = item.get(key)
            if isinstance(value, str) and not is_url(value):
                findings.append(Finding("violation", f"{where}.{key}", f"expected a URL, found {_json_kind(value)}"))
    return findings


def check_reply(kind: str, body: Any, requested_id: int | None = None) -> tuple[Any, list[Finding]]:
    """Check a webhook reply against the contract; returns the unwrapped object and findings.

    ``kind`` is ``user_info`` or ``user_media`` (or ``user-info``...; ValueError for another).
    Violations make the reply unusable by the panel; warnings are worth fixing; a notice says the
    reply came in an envelope.
    """
    kind = kind_name(kind, ("user_info", "user_media"))
    if envelope_failed(body):
        msg = envelope_message(body) or "(no message)"
        return body, [Finding("violation", "status", f"the site answered status 0: {msg}")]
    body, wrapped = unwrap(body)
    findings = [Finding("notice", "", 'reply was wrapped in an envelope {"status", "data"}')] if wrapped else []
    if not isinstance(body, dict):
        return body, [*findings, Finding("violation", "", f"expected a JSON object, found {_json_kind(body)}")]
    findings += _check_user_info(body, requested_id) if kind == "user_info" else _check_media(body)
    return body, findings
