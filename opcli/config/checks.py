"""Checking a parsed config against what opcli expects: converters, specs, interpolation.

Every problem is appended to an ``errors`` list as ``FILE:LINE:COL: problem``, so that one run
reports all of them; the caller raises one ConfigError.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from opcli.config.model import ListenConfig, OperatorConfig, Site, Timeouts, fill_template
from opcli.config.positions import where as _where
from opcli.protocol import WEBHOOKS, kind_name

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Unset:
    """Stands for a value whose variable is unset (only in sections not selected)."""


def _interpolate(text: str, where: str, errors: list[str], strict: bool, name: str) -> str | type[_Unset]:
    missing: list[str] = []

    def sub(m: re.Match) -> str:
        value = os.environ.get(m.group(1))
        if not value and m.group(2) is not None:  # POSIX ${VAR:-default}: unset *or empty* takes the default
            return m.group(2)
        if value is None:
            missing.append(m.group(1))
            return ""
        return value

    out = _VAR.sub(sub, text)
    if missing:
        if strict:
            for var in missing:
                errors.append(
                    f"{where}: {name}: environment variable {var} is not set (set it, or write ${{{var}:-default}})"
                )
        return _Unset
    return out


# --- converters: each checks a value and carries the JSON Schema of what it accepts ----------
#
# ``opcli config schema`` is built from these specs and fragments (config/schema.py), so a key
# added to a spec is in the schema; tests fail for a converter without a fragment.

#: A string holding ``${VAR}``: interpolated before it is converted, so it may stand for any value.
VARIABLE = {"type": "string", "pattern": r"\$\{"}
_NUMERIC = r"^\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$"
_INTEGER = r"^\s*[+-]?[0-9]+\s*$"


def fragment(schema: dict[str, Any]) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    """Attach ``schema`` (what the converter accepts, as JSON Schema) to a converter."""

    def attach(conv: Callable[[Any], Any]) -> Callable[[Any], Any]:
        conv.schema = schema  # type: ignore[attr-defined]
        return conv

    return attach


class FreeForm:
    """A key that ``walk`` leaves alone (``listen_section`` checks it); ``schema`` describes it.

    ``#/definitions/...`` references are resolved by config/schema.py.
    """

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema


def type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    return "a list" if isinstance(value, list) else "a mapping"


@fragment({"type": "string"})
def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type_name(value)}")
    return value


@fragment({"type": "string"})
def _token(value: Any) -> str:
    """``_str`` for a token: an error never quotes it (a number is a token written unquoted)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError('expected a string, got a number: quote it (token: "...")')
    return _str(value)


@fragment({"anyOf": [{"type": "string", "pattern": "^https?://"}, VARIABLE]})
def _url(value: Any) -> str:
    value = _str(value)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"bad port in URL {value!r}") from None
    return value


def _number(value: Any, cast: Callable[[str], Any]) -> Any:
    if isinstance(value, str):  # "10" or an interpolated "${TIMEOUT:-10}"
        try:
            return cast(value.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {type_name(value)}")
    return value


@fragment({"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string", "pattern": _NUMERIC}, VARIABLE]})
def _timeout(value: Any) -> float:
    value = float(_number(value, float))
    if value <= 0:
        raise ValueError(f"expected a number of seconds above 0, got {value:g}")
    return value


def _int_range(low: int, high: int | None = None) -> Callable[[Any], int]:
    def conv(value: Any) -> int:
        value = _number(value, int)
        if not isinstance(value, int) or value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise ValueError(f"expected a whole number {bound}, got {value!r}")
        return value

    limits = {"minimum": low, **({"maximum": high} if high is not None else {})}
    return fragment({"anyOf": [{"type": "integer", **limits}, {"type": "string", "pattern": _INTEGER}, VARIABLE]})(conv)


@fragment({"type": ["boolean", "string"]})
def _bool_or_path(value: Any) -> bool | str:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "yes", "1"):
            return True
        if lowered in ("false", "no", "0"):
            return False
        path = Path(value).expanduser()
        if not path.is_file():
            why = "a directory" if path.is_dir() else "no such file"
            raise ValueError(f"expected true, false or a CA bundle file, got {value!r} ({why})")
        import ssl  # (only for a CA bundle: most configs have none)

        try:
            ssl.create_default_context(cafile=str(path))
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ValueError(f"{value!r} is not a CA bundle (PEM certificates): {exc}") from None
        return str(path)
    raise ValueError(f"expected true, false or a CA bundle path, got {type_name(value)}")


@fragment({"type": "boolean"})  # a ${VAR} would give a string, which is refused
def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {type_name(value)}")
    return value


def _choice(*choices: Any) -> Callable[[Any], Any]:
    def conv(value: Any) -> Any:
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if value not in choices:
            got = "nothing" if value is None else repr(value)
            raise ValueError(f"expected one of {', '.join(map(str, choices))}, got {got}")
        return value

    digits = [str(c) for c in choices if isinstance(c, int)]  # "404" is read as 404
    return fragment({"anyOf": [{"enum": [*choices, *digits]}, VARIABLE]})(conv)


SITE_REQUIRED = ("token",)
_SITE_SPEC: dict[str, Any] = {
    "panel_url": _url,
    "token": _token,
    "webhooks": dict.fromkeys(WEBHOOKS, _url),
    "timeout": _timeout,
    "verify": _bool_or_path,
    "attaches_encoding": _choice("brackets", "json"),
    "webhook_encoding": _choice("urlencoded", "multipart"),
    "check": {"user": _int_range(0), "bot": _int_range(0)},
}


def walk(spec: dict, node: Any, path: str, where: str, errors: list[str], strict: bool, dotted: str) -> dict[str, Any]:
    """Check a mapping against ``spec`` (nested dicts of converters); collect every error."""
    if not isinstance(node, dict):
        errors.append(f"{where}: {dotted} must be a mapping, got {type_name(node)}")
        return {}
    out: dict[str, Any] = {}
    for key, value in node.items():
        key_where = _where(path, node.key_marks.get(key))
        value_where = _where(path, node.value_marks.get(key))
        name = f"{dotted}.{key}" if dotted else str(key)
        if key not in spec:
            known = ", ".join(spec)
            errors.append(f"{key_where}: unknown key '{name}' (expected one of: {known})")
            continue
        if isinstance(spec[key], dict):
            out[key] = walk(spec[key], value, path, value_where, errors, strict, name)
            continue
        if spec[key] is None or isinstance(spec[key], FreeForm):
            continue
        written = value
        if isinstance(value, str) and "${" in value:
            value = _interpolate(value, value_where, errors, strict, name)
            if value is _Unset:
                continue
        try:
            out[key] = spec[key](value)
        except ValueError as exc:
            # quote the value as written: an expanded ${VAR} may hold a secret (a token in a URL)
            reason = str(exc).replace(repr(value), repr(written)) if written != value else str(exc)
            errors.append(f"{value_where}: {name}: {reason}")
    return out


def check_site(name: str, node: Any, path: str, where: str, errors: list[str], strict: bool) -> Site | None:
    before = len(errors)
    values = walk(_SITE_SPEC, node, path, where, errors, strict, f"sites.{name}")
    if isinstance(node, dict):
        errors += [f"{where}: site '{name}' has no {key}" for key in SITE_REQUIRED if key not in node]
    if isinstance(node, dict) and "token" in node and values.get("token") == "":
        written = node["token"]
        variables = _VAR.findall(written) if isinstance(written, str) else []
        names = " or ".join(f"${v[0]}" for v in variables)
        why = f" (from {names}: set it to the site's token)" if variables else ""
        errors.append(f"{_where(path, node.value_marks.get('token'))}: sites.{name}.token: the token is empty{why}")
    if len(errors) > before or any(key not in values for key in SITE_REQUIRED):
        return None
    check = values.pop("check", {})
    return Site(name=name, source=where, check=check, **values)  # (where its errors point: FILE:LINE:COL)


def _interp_tree(value: Any, path: str, mark: Any, errors: list[str], strict: bool, name: str) -> Any:
    """Interpolate every string below a value (canned replies are free-form data)."""
    if isinstance(value, str):
        if "${" not in value:
            return value
        out = _interpolate(value, _where(path, mark), errors, strict, name)
        return "" if out is _Unset else out
    if isinstance(value, dict):
        marks = getattr(value, "value_marks", {})
        return {k: _interp_tree(v, path, marks.get(k, mark), errors, strict, f"{name}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        marks = getattr(value, "item_marks", [])
        return [
            _interp_tree(v, path, marks[i] if i < len(marks) else mark, errors, strict, f"{name}[{i}]")
            for i, v in enumerate(value)
        ]
    return value


def _id_map(node: Any, path: str, where: str, errors: list[str], dotted: str) -> dict[int, tuple[Any, Any]]:
    """``users``/``media``: keys are YAML integers or digit strings, normalised to int.

    Returns ``{id: (value, mark of the value)}``.
    """
    if node is None:
        return {}
    if not isinstance(node, dict):
        errors.append(f"{where}: {dotted} must be a mapping of user ids, got {type_name(node)}")
        return {}
    out: dict[int, Any] = {}
    for key, value in node.items():
        key_where = _where(path, node.key_marks.get(key))
        if isinstance(key, bool) or not (isinstance(key, int) or (isinstance(key, str) and key.isdigit())):
            errors.append(f"{key_where}: {dotted}: key {key!r} is not a user id (a whole number)")
            continue
        if int(key) in out:
            errors.append(f"{key_where}: {dotted}: user {int(key)} is listed twice")
            continue
        out[int(key)] = (value, node.value_marks.get(key))
    return out


@fragment({"anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": _NUMERIC}, VARIABLE]})
def _seconds(value: Any) -> float:
    value = float(_number(value, float))
    if value < 0:
        raise ValueError(f"expected a number of seconds, 0 or more, got {value:g}")
    return value


@fragment(
    {"type": "array", "uniqueItems": True, "items": {"enum": ["user_info", "user_media", "user-info", "user-media"]}}
)
def _fetch(value: Any) -> tuple[str, ...]:
    kinds = ("user_info", "user_media")
    if not isinstance(value, list):
        raise ValueError(f"expected a list of {' and '.join(kinds)} (or []), got {type_name(value)}")
    fetched = []
    for item in value:
        try:
            fetched.append(kind_name(item, kinds))  # user-info is user_info
        except ValueError:
            raise ValueError(f"expected {' or '.join(kinds)} in the list, got {item!r}") from None
    if len(set(fetched)) < len(fetched):
        raise ValueError("each webhook may be listed once")
    return tuple(fetched)


@fragment({"type": ["string", "null"]})
def _template(value: Any) -> str | None:
    if value is None:
        return None
    value = _str(value)
    allowed = OperatorConfig.PLACEHOLDERS
    for name in re.findall(r"\{([^{}]*)\}", value):
        if name not in allowed:
            raise ValueError(f"unknown placeholder {{{name}}} (use {', '.join(f'{{{a}}}' for a in allowed)})")
    return value


_OPERATOR_SPEC: dict[str, Any] = {"fetch": _fetch, "reply": _template, "delay": _seconds, "timeout": _timeout}


def operator_settings(**values: Any) -> OperatorConfig:
    """``listen.operator`` from Python values (``ListenerThread.operator``); ValueError names a bad one."""
    checked = {}
    for key, value in values.items():
        try:
            checked[key] = _OPERATOR_SPEC[key](value)
        except ValueError as exc:
            raise ValueError(f"operator {key}: {exc}") from None
    return OperatorConfig(**checked)


LISTEN_SPEC: dict[str, Any] = {
    "host": _str,
    "port": _int_range(0, 65535),
    "max_body_bytes": _int_range(1),
    "max_field_bytes": _int_range(1),
    "keep": _int_range(1),
    "strict": _bool,
    "unknown_user": _choice("template", 404),
    "seed": _int_range(0),
    "faults": FreeForm({"type": ["array", "null"], "items": {"type": "string"}}),  # each SPEC checked by listen_section
    "operator": _OPERATOR_SPEC,
    "timeouts": {"idle": _timeout, "headers": _timeout, "body": _timeout},
    # free-form canned replies: interpolated and contract-checked by listen_section
    "user_template": FreeForm({"anyOf": [{"$ref": "#/definitions/Profile"}, {"type": "null"}]}),
    "users": FreeForm({"$ref": "#/definitions/Users"}),
    "media": FreeForm({"$ref": "#/definitions/Media"}),
}


def listen_section(node: Any, path: str, errors: list[str], strict: bool) -> ListenConfig:
    from opcli.protocol import check_reply

    if node is None:
        return ListenConfig()
    values = walk(LISTEN_SPEC, node, path, path, errors, strict, "listen")
    if not isinstance(node, dict):
        return ListenConfig()
    marks = node.value_marks

    def contract(kind: str, reply: Any, mark: Any, dotted: str, user_id: int) -> None:
        for f in check_reply(kind, reply, user_id)[1]:
            if f.level == "violation":
                errors.append(f"{_where(path, mark)}: {dotted}: {f} (canned replies follow the contract)")

    if node.get("user_template") is not None:
        mark = marks.get("user_template")
        template = _interp_tree(node["user_template"], path, mark, errors, strict, "listen.user_template")
        if isinstance(template, dict):
            contract("user_info", {"id": 1, **fill_template(template, 1)}, mark, "listen.user_template", 1)
            values["user_template"] = template
        else:
            errors.append(f"{_where(path, mark)}: listen.user_template must be a mapping, got {type_name(template)}")
    for section, kind in (("users", "user_info"), ("media", "user_media")):
        raw = node.get(section)
        found = _id_map(raw, path, _where(path, marks.get(section)), errors, f"listen.{section}")
        for uid, (value, mark) in found.items():
            value = _interp_tree(value, path, mark, errors, strict, f"listen.{section}.{uid}")
            reply = (
                ({"id": uid, **value} if isinstance(value, dict) else value)
                if kind == "user_info"
                else {"media": value}
            )
            contract(kind, reply, mark, f"listen.{section}.{uid}", uid)
            found[uid] = value
        values[section] = found
    if node.get("faults") is not None:
        values["faults"] = _faults(node["faults"], path, marks.get("faults"), errors, strict)
    if "operator" in values:
        values["operator"] = OperatorConfig(**values["operator"])
    if "timeouts" in values:
        values["timeouts"] = Timeouts(**values["timeouts"])
    return ListenConfig(**values)


def _faults(node: Any, path: str, mark: Any, errors: list[str], strict: bool) -> list[str]:
    """``listen.faults``: a list of ``--fault`` SPECs, each checked where it stands."""
    from opcli.listener.faults import parse_rule

    specs = _interp_tree(node, path, mark, errors, strict, "listen.faults")
    if not isinstance(specs, list):
        errors.append(f"{_where(path, mark)}: listen.faults must be a list of KIND:ACTION[,OPTION]... strings")
        return []
    marks = getattr(node, "item_marks", [])
    for i, spec in enumerate(specs):
        where = f"{_where(path, marks[i] if i < len(marks) else mark)}: listen.faults[{i}]"
        if not isinstance(spec, str):
            errors.append(f"{where}: expected a string KIND:ACTION[,OPTION]..., got {type_name(spec)}")
            continue
        try:
            parse_rule(spec)
        except ValueError as exc:
            errors.append(f"{where}: {exc}")
    return specs
