"""``opcli spec``: the Operator API as an OpenAPI 3.1 document, generated from opcli's own contract.

One source of truth: the reply schemas are the JSON Schema of the strict models in ``protocol``
(tightened by what ``check_reply`` checks beyond them: URLs, the id range), and the fields of
each call come from ``protocol.KNOWN_FIELDS`` and ``ID_FIELDS``. Only the prose (what a field
means) is written here. Paths are those of the selected site's URLs, so the document drives
``opcli listen`` as it is.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from opcli import __version__
from opcli.config import Site
from opcli.errors import UsageError
from opcli.protocol import (
    ACTION_MESSAGE_SENT,
    FAILED_STATUSES,
    FILE_FIELD,
    ID_FIELDS,
    KNOWN_FIELDS,
    MAX_ID,
    URL_PATTERN,
    WEBHOOKS,
    MediaReply,
    Photo,
    UserInfo,
    encode_attaches,
)

SIDES = ("panel", "site")
FORMATS = ("yaml", "json")
#: The calls that may carry a file part (``attach``).
FILE_KINDS = ("message_sent", "send_message")

_REF = "#/components/schemas/{model}"

#: What each call is, in the words of the protocol's reference (shared/operator-api.md).
_OPERATIONS = {
    "message_sent": (
        "send message to control panel",
        "The site reports a message from one of its users to a bot. Always multipart/form-data. Photos the "
        "panel can fetch go in `attaches`, in PHP bracket notation (one field per value: "
        "`attaches[0][file_url]`, `attaches[0][big]`, `attaches[1][file_url]`, ...) or, as some integrations "
        "do, as one field holding a JSON array of photo objects; a receiver accepts both. A photo or file "
        "that is not public goes along as the file part `attach`.",
    ),
    "send_message": (
        "send message from control panel",
        "An operator's reply reaches the site. Note the direction: `user_id` is the bot and `contact_id` "
        "the user, the reverse of message_sent. The deployed panel sends it urlencoded, multipart when a "
        "file goes along. The reply is not documented: any 2xx is success, and an envelope with "
        '`"status": 0` is a rejection.',
    ),
    "user_info": (
        "get user info from site",
        "The panel opens a user's profile. The deployed panel sends it urlencoded (the vendor's document "
        "says multipart): a site accepts both. It gives up after 4 seconds and does not retry.",
    ),
    "user_media": (
        "get user private media from site",
        "The panel opens a user's private photos. Encodings and timeout as for user info.",
    ),
}

#: The fields that are not ids, and what they mean.
_FIELD_SCHEMAS: dict[str, dict[str, Any]] = {
    "token": {
        "type": "string",
        "format": "password",
        "description": "The site's token, the same in both directions. A wrong or missing one gets 401 with "
        '`{"status": 0, "message": ...}`. A repeated field counts by its last value, as PHP reads it.',
    },
    "action": {"type": "string", "const": ACTION_MESSAGE_SENT, "description": "Always `message_sent`."},
    "message": {"type": "string", "description": "The message text; may be empty when only a photo or file is sent."},
    "message_id": {"type": "string", "description": "The site's own id of the message (optional; kept as it came)."},
    "message_type": {
        "type": "string",
        "description": "Optional: `default`, `kisses`, `winks` or `like_me` (kept as it came).",
        "examples": ["default"],
    },
    "is_mass_pokes": {
        "type": "string",
        "description": "Optional flag of the deployed panel (kept as it came).",
        "examples": ["0"],
    },
}

#: Whom each id names, per call: the direction of a message matters.
_ID_ROLES = {
    ("message_sent", "user_id"): "Sender: the site user.",
    ("message_sent", "contact_id"): "Recipient: the bot.",
    ("send_message", "user_id"): "Sender: the bot.",
    ("send_message", "contact_id"): "Recipient: the site user.",
    ("user_info", "user_id"): "The user whose profile the operator opens.",
    ("user_media", "user_id"): "The user whose private media the operator opens.",
}

_ID = {"type": "integer", "format": "int64", "minimum": 0, "maximum": MAX_ID}
#: The original of a photo in bracket notation (``protocol.decode_attaches`` reads it).
_PHOTO_FIELD = r"^attaches\[[0-9]+\]\[file_url\]$"


def build_spec(site: Site, side: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of one side (``panel``, ``site``) or both, at the site's URL paths.

    Both sides also list the webhooks under ``webhooks``. Raises UsageError for an unknown side
    and ConfigError when the site lacks a URL the side needs.
    """
    if side not in (None, *SIDES):
        raise UsageError(f"unknown side {side!r}: choose panel or site")
    kinds = [k for k in ("message_sent", *WEBHOOKS) if _wanted(site, k, side)]
    if not kinds:
        site.url("message_sent")  # raises ConfigError naming what is missing
    urls = {kind: site.url(kind) for kind in kinds}
    top = _origin(urls[kinds[-1]])  # the site's webhooks, or the panel when it is alone
    paths: dict[str, Any] = {}
    for kind in kinds:
        item = {"post": _operation(kind, site)}
        if _origin(urls[kind]) != top:
            item["servers"] = [_server(urls[kind], kind)]
        paths[urlsplit(urls[kind]).path or "/"] = item
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Operator API",
            "version": __version__,
            "summary": "The protocol between a dating site and the operator control panel.",
            "description": _INFO,
        },
        "servers": [_server(urls[kinds[-1]], kinds[-1])],
        "tags": [t for t in _TAGS if any(_tag(k) == t["name"] for k in kinds)],
        "paths": paths,
    }
    if side is None:
        hooks = [k for k in kinds if k in WEBHOOKS]
        doc["webhooks"] = {k: {"$ref": "#/paths/" + _pointer(urlsplit(urls[k]).path or "/")} for k in hooks}
    doc["components"] = {"schemas": _used(doc, _schemas())}
    return doc


def render(doc: dict[str, Any], fmt: str = "yaml") -> str:
    """The document as YAML (block style, keys in order) or JSON (indented)."""
    if fmt == "json":
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    if fmt != "yaml":
        raise UsageError(f"unknown format {fmt!r}: choose yaml or json")
    import yaml

    class Dumper(yaml.SafeDumper):
        """Multi-line text as a literal block, as a person would write it."""

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, text)
    Dumper.ignore_aliases = lambda self, data: True  # no &id001 anchors: some tools do not follow them
    return yaml.dump(doc, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=100)


def reply_schemas(ref_template: str = _REF) -> dict[str, dict[str, Any]]:
    """The JSON Schemas of the contract models, with what ``check_reply`` checks beyond them.

    ``check_reply`` also wants URLs (``avatar`` may be ``""``) and an ``id`` equal to the
    requested one (which JSON Schema cannot say: the description does). ``config schema`` uses
    these too, for the canned replies of ``listen``.
    """
    from pydantic.json_schema import models_json_schema

    _, top = models_json_schema(
        [(model, "validation") for model in (UserInfo, MediaReply, Photo)], ref_template=ref_template
    )
    schemas = top["$defs"]
    for schema in schemas.values():
        if "description" in schema:
            schema["description"] = schema["description"].replace("``", "`")  # docstrings are reST
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)  # pydantic's "Id", "Name": noise next to the property's name
    schemas["UserInfo"]["properties"]["id"].update({k: v for k, v in _ID.items() if k != "type"})
    avatar = schemas["UserInfo"]["properties"]["avatar"]
    avatar["anyOf"] = [{"const": ""}, {"type": "string", "pattern": URL_PATTERN}]
    del avatar["type"]
    for model, keys in (("MediaItem", ("url", "big")), ("Photo", ("file_url", "big"))):
        for key in keys:
            _require_url(schemas[model]["properties"][key])
    return schemas


def _require_url(schema: dict[str, Any]) -> None:
    if schema.get("type") == "string":
        schema["pattern"] = URL_PATTERN
    for option in schema.get("anyOf", []):
        _require_url(option)


def _schemas() -> dict[str, Any]:
    """Every component: the reply models, the envelopes, the call bodies."""
    schemas = reply_schemas()
    schemas["Envelope"] = {
        "type": "object",
        "description": "The panel's envelope. The deployed panel answers HTTP 200 in every case and says "
        "the outcome here: a client counts a call as failed when the status code is not 2xx or `status` "
        "is 0 (or false), and shows `message`.",
        "required": ["status"],
        "properties": {
            "status": {"enum": [1, True, *FAILED_STATUSES], "description": "1: done; 0 (or false): failed"},
            "message": {"type": "string", "description": "why it failed; may be empty on success"},
            "data": {
                "type": "object",
                "properties": {"message_id": {"type": "integer", "description": "the panel's id of the message"}},
            },
        },
    }
    schemas["Refusal"] = {
        "type": "object",
        "description": 'A refusal: `{"status": 0, "message": "..."}`, with a 4xx status or (as deployed PHP '
        "sites answer) HTTP 200.",
        "required": ["status"],
        "properties": {
            "status": {"enum": list(FAILED_STATUSES)},
            "message": {"type": "string", "description": "why, in one line"},
        },
    }
    for model in ("UserInfo", "MediaReply"):
        schemas[f"Wrapped{model}"] = {
            "type": "object",
            "description": f"A {model} wrapped in the panel's envelope, as some sites answer; clients unwrap it.",
            "required": ["status", "data"],
            "properties": {"status": {"enum": [1, True, "1"]}, "data": {"$ref": _REF.format(model=model)}},
        }
    for kind in ("message_sent", *WEBHOOKS):
        name = _body_name(kind)
        schemas[name] = _form(kind, with_file=kind == "message_sent")  # message_sent is always multipart
        if kind in FILE_KINDS and kind != "message_sent":
            schemas[f"{name}WithFile"] = _form(kind, with_file=True)
    return schemas


def _form(kind: str, with_file: bool) -> dict[str, Any]:
    """The body of a call: its known fields in the protocol's order, ids as integers."""
    order = [*_FIELD_SCHEMAS, "user_id", "contact_id"]
    names = sorted(KNOWN_FIELDS[kind], key=lambda n: (order.index(n) if n in order else len(order), n))
    props: dict[str, Any] = {}
    for name in names:
        if name in ID_FIELDS[kind]:
            props[name] = {**_ID, "description": _ID_ROLES[(kind, name)]}
        else:
            props[name] = dict(_FIELD_SCHEMAS[name])
    required = ["token", *(["action"] if kind == "message_sent" else []), *ID_FIELDS[kind]]
    schema: dict[str, Any] = {
        "type": "object",
        "required": required,
        "properties": props,
        "description": "Other fields are kept as they came (opcli listen warns about them; --strict refuses "
        "them with 422).",
    }
    if kind == "message_sent":
        props["attaches"] = {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"type": "array", "items": {"$ref": _REF.format(model="Photo")}},
            "description": "The JSON-string alternative to bracket notation: one text field holding a JSON array "
            'of photo objects, `[{"file_url": ..., "big": ...}]`. Senders use bracket notation by default; a '
            "receiver accepts both.",
        }
        # Only file_url is declared: a thumbnail alone (attaches[K][big] without attaches[K][file_url]) is
        # refused, which JSON Schema cannot say for every K; so tools generate photos with an original.
        schema["patternProperties"] = {
            _PHOTO_FIELD: {
                "type": "string",
                "pattern": URL_PATTERN,
                "description": "`attaches` in PHP bracket notation, one field per value: `attaches[K][file_url]` "
                "is the URL of the K-th photo (K = 0, 1, ...), and `attaches[K][big]` (optional) that of its "
                "thumbnail.",
            }
        }
    if with_file:
        props[FILE_FIELD] = {
            "type": "string",
            "format": "binary",
            "contentMediaType": "application/octet-stream",
            "description": "The photo or file itself, uploaded (when it is not public).",
        }
    return schema


def _operation(kind: str, site: Site) -> dict[str, Any]:
    summary, description = _OPERATIONS[kind]
    body = _body_name(kind)
    ref = {"$ref": _REF.format(model=body)}
    content: dict[str, Any] = {}
    if kind == "message_sent":
        content["multipart/form-data"] = {"schema": ref, "examples": _message_examples(site)}
    else:
        content["application/x-www-form-urlencoded"] = {"schema": ref}
        with_file = f"{body}WithFile" if kind in FILE_KINDS else body
        content["multipart/form-data"] = {"schema": {"$ref": _REF.format(model=with_file)}}
    refusal = {"application/json": {"schema": {"$ref": _REF.format(model="Refusal")}}}
    responses: dict[str, Any] = {
        "2XX" if kind == "send_message" else "200": _success(kind),
        "401": {"description": "A wrong or missing token.", "content": refusal},
        "4XX": {
            "description": "Refused: 400 (a body that cannot be read), 404 (an unknown user), 413 (too large), "
            "415 (not a form), 422 (a missing or non-integer id, a bad field).",
            "content": refusal,
        },
    }
    return {
        "operationId": kind,
        "tags": [_tag(kind)],
        "summary": summary,
        "description": description,
        "requestBody": {"required": True, "content": content},
        "responses": responses,
    }


def _success(kind: str) -> dict[str, Any]:
    if kind == "message_sent":
        return {
            "description": "Accepted; an envelope with status 0 (HTTP 200, as the deployed panel answers) is a "
            "refusal.",
            "content": {"application/json": {"schema": {"$ref": _REF.format(model="Envelope")}}},
        }
    if kind == "send_message":
        return {
            "description": "Accepted: the reply is not documented, any 2xx is success; a JSON envelope with "
            "status 0 is a refusal.",
            "content": {"application/json": {"schema": {"examples": [{"status": 1, "message": "", "data": {}}]}}},
        }
    model, what = (
        ("UserInfo", "The user's profile; `id` must equal the requested user_id.")
        if kind == "user_info"
        else ("MediaReply", "The user's private media; without `big` the panel shows the original.")
    )
    return {
        "description": f"{what} Also accepted: the same wrapped in the envelope, and a refusal with HTTP 200 "
        '(`{"status": 0, ...}`, as deployed PHP sites answer for an unknown user).',
        "content": {
            "application/json": {
                "schema": {"anyOf": [{"$ref": _REF.format(model=m)} for m in (model, f"Wrapped{model}", "Refusal")]}
            }
        },
    }


def _message_examples(site: Site) -> dict[str, Any]:
    """Two message_sent bodies, encoded by the encoder ``opcli send`` uses."""
    user, bot = site.check.get("user", 42), site.check.get("bot", 7)
    head = {"token": "<the site's token>", "action": ACTION_MESSAGE_SENT, "user_id": user, "contact_id": bot}
    photo = Photo(file_url="https://site.example/p/1.jpg", big="https://site.example/p/1_200.jpg")
    return {
        encoding: {
            "summary": f"a message with a photo, attaches as {label}",
            "value": {**head, "message": "Hello!", **dict(encode_attaches([photo], encoding))},
        }
        for encoding, label in (("brackets", "PHP bracket notation"), ("json", "one JSON field"))
    }


def _wanted(site: Site, kind: str, side: str | None) -> bool:
    if side is not None and _tag(kind) != side:
        return False
    present = site.panel_url if kind == "message_sent" else site.webhooks.get(kind)
    return bool(present) or side is not None  # an explicit side must have all its URLs: site.url() says which


def _tag(kind: str) -> str:
    return "panel" if kind == "message_sent" else "site"


def _body_name(kind: str) -> str:
    return "".join(part.capitalize() for part in kind.split("_")) + "Call"


def _host(url: str) -> str:
    """``host[:port]`` of a URL: never its ``user:password@`` part (a token may hide there)."""
    parts = urlsplit(url)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname or ""
    return f"{host}:{parts.port}" if parts.port else host


def _origin(url: str) -> str:
    return f"{urlsplit(url).scheme}://{_host(url)}"


def _server(url: str, kind: str) -> dict[str, Any]:
    parts = urlsplit(url)
    whose = "the panel" if kind == "message_sent" else "the site"
    return {
        "url": "{scheme}://{host}",
        "description": f"{whose}, as the selected config site says; set the variables to test another",
        "variables": {
            "scheme": {"default": parts.scheme, "enum": ["http", "https"]},
            "host": {"default": _host(url), "description": "host[:port]"},
        },
    }


def _pointer(path: str) -> str:
    """A path as a JSON Pointer segment (RFC 6901)."""
    return path.replace("~", "~0").replace("/", "~1")


def _used(doc: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """The components the document refers to, directly or through other components."""
    prefix = _REF.format(model="")
    seen: set[str] = set()
    todo = [doc]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(prefix) and ref[len(prefix) :] not in seen:
                seen.add(ref[len(prefix) :])
                todo.append(schemas[ref[len(prefix) :]])
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return {name: schema for name, schema in schemas.items() if name in seen}


_TAGS = [
    {"name": "panel", "description": "The operator control panel's Operator API endpoint, called by the site."},
    {"name": "site", "description": "The site's three webhooks, called by the panel."},
]

_INFO = """\
Every request in both directions is an HTTP POST whose body is a form; the token travels as the
form field `token` (not a header). Ids are integers from 0 to 2^63-1, sent as decimal text. A
repeated field counts by its last value, as the deployed panel (PHP) reads it.

Generated by opcli from the contract models it checks replies against: `opcli spec`."""
