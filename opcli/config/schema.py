"""``opcli config schema``: the JSON Schema of the config file, built from the specs that validate it.

Every key of ``_SITE_SPEC`` and ``LISTEN_SPEC`` becomes a property with its converter's fragment
(see ``checks.fragment``), so the schema cannot miss a key the loader knows; unknown keys are
refused, as the loader refuses them. The canned replies of ``listen`` follow the contract models
(``spec.reply_schemas``). Draft-07, which editors' YAML language servers understand.
"""

from __future__ import annotations

from typing import Any

from opcli.config.checks import _SITE_SPEC, LISTEN_SPEC, SITE_REQUIRED, FreeForm

#: A converter without a fragment: any value (tests fail for it, so that the schema says more).
UNDESCRIBED: dict[str, Any] = {}


def config_schema() -> dict[str, Any]:
    """The config file's JSON Schema (draft-07), for editors and for validating configs elsewhere."""
    site = _object(_SITE_SPEC)
    site["required"] = list(SITE_REQUIRED)
    listen = _object(LISTEN_SPEC)
    listen["type"] = ["object", "null"]
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "opcli config",
        "description": "The config file of opcli (opcli.yaml). Strings may use ${VAR} or ${VAR:-default}.",
        "type": "object",
        "required": ["sites"],
        "additionalProperties": False,
        "properties": {
            "default_site": {"type": "string", "description": "The site used without --site or $OPCLI_SITE."},
            "sites": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": site,
                "description": "The sites by name: the panel's endpoint and the site's webhooks, one token each.",
            },
            "listen": listen,
        },
        "definitions": _canned(),
    }


def _object(spec: dict[str, Any]) -> dict[str, Any]:
    """A spec (nested dicts of converters) as a closed JSON Schema object."""
    properties = {}
    for key, conv in spec.items():
        if isinstance(conv, dict):
            properties[key] = _object(conv)
        elif isinstance(conv, FreeForm):
            properties[key] = conv.schema
        else:
            properties[key] = getattr(conv, "schema", UNDESCRIBED)
    return {"type": "object", "additionalProperties": False, "properties": properties}


def _canned() -> dict[str, Any]:
    """``listen.user_template``, ``users`` and ``media``: the contract's replies, ids as keys."""
    from opcli.spec import reply_schemas

    models = reply_schemas("#/definitions/{model}")
    profile = models["UserInfo"]
    profile["required"] = [key for key in profile["required"] if key != "id"]  # the id is the key (or {id})
    profile["description"] = "A canned profile (id is the key, or {id} in the template); checked against the contract."
    # PyYAML reads ``42:`` as the int 42 and ``"42":`` as a string, a JSON tool sees strings: the
    # keys are described by propertyNames (no patternProperties, whose regexes fail on an int key)
    ids = {
        "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": r"^[0-9]+$"}],
        "description": 'A user id: a whole number (42 or "42").',
    }
    return {
        **{name: schema for name, schema in models.items() if name in ("CustomAttr", "MediaItem")},
        "Profile": profile,
        "UserId": ids,
        "Users": {
            "type": ["object", "null"],
            "description": "Canned user-info replies by user id.",
            "propertyNames": {"$ref": "#/definitions/UserId"},
            "additionalProperties": {"$ref": "#/definitions/Profile"},
        },
        "Media": {
            "type": ["object", "null"],
            "description": "Canned private media by user id.",
            "propertyNames": {"$ref": "#/definitions/UserId"},
            "additionalProperties": {"type": "array", "items": {"$ref": "#/definitions/MediaItem"}},
        },
    }
