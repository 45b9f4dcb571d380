"""Loading the YAML config: discovery, ``${VAR}`` interpolation, validation with positions.

The first file found is the whole config (``--config``, ``$OPCLI_CONFIG``, ``./opcli.yaml``,
the user config dir, then the built-in ``defaults.yaml``). Every problem is reported as
``FILE:LINE:COL: problem``, all of them at once, by raising one ``ConfigError``.

Interpolation is lazy: an unset variable without a default is an error only in the selected
site, or in the ``listen`` section when the listener asks for it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from opcli.errors import ConfigError

BUILTIN = Path(__file__).with_name("defaults.yaml")
SAMPLE = Path(__file__).with_name("sample-config.yaml")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
WEBHOOKS = ("send_message", "user_info", "user_media")


# --- YAML with positions -------------------------------------------------------------------


class _Map(dict):
    """A mapping that remembers where it, each key and each value stand in the file."""

    mark: Any = None

    def __init__(self) -> None:
        super().__init__()
        self.key_marks: dict[Any, Any] = {}
        self.value_marks: dict[Any, Any] = {}


class _List(list):
    mark: Any = None

    def __init__(self) -> None:
        super().__init__()
        self.item_marks: list[Any] = []


class _Loader(yaml.SafeLoader):
    def __init__(self, stream: str, path: str) -> None:
        super().__init__(stream)
        self.path = path
        self.duplicates: list[str] = []

    def construct_mapping(self, node, deep=False):  # noqa: ANN001 (PyYAML's signature)
        self.flatten_mapping(node)
        out = _Map()
        out.mark = node.start_mark
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, list | dict):
                raise yaml.constructor.ConstructorError(None, None, "a key must be a plain value", key_node.start_mark)
            if key in out:
                self.duplicates.append(f"{_where(self.path, key_node.start_mark)}: duplicate key {key!r}")
            out[key] = self.construct_object(value_node, deep=True)
            out.key_marks[key] = key_node.start_mark
            out.value_marks[key] = value_node.start_mark
        return out

    def construct_sequence(self, node, deep=False):  # noqa: ANN001
        out = _List()
        out.mark = node.start_mark
        for child in node.value:
            out.append(self.construct_object(child, deep=True))
            out.item_marks.append(child.start_mark)
        return out


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:seq", _Loader.construct_sequence)


def _where(path: str, mark: Any) -> str:
    if mark is None:
        return path
    return f"{path}:{mark.line + 1}:{mark.column + 1}"


def _parse(text: str, path: str) -> Any:
    loader = _Loader(text, path)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{_where(path, mark)}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML error: {exc}") from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ConfigError(loader.duplicates)
    return data


# --- the resolved config -------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    """One site of the config, interpolated and validated."""

    name: str
    source: str
    token: str
    panel_url: str | None = None
    webhooks: dict[str, str] = field(default_factory=dict)
    timeout: float = 10.0
    verify: bool | str = True
    attaches_encoding: str = "brackets"
    webhook_encoding: str = "urlencoded"
    check: dict[str, int] = field(default_factory=dict)

    def url(self, kind: str) -> str:
        """The URL of a call: ``message_sent`` (the panel) or one of the three webhooks."""
        url = self.panel_url if kind == "message_sent" else self.webhooks.get(kind)
        if not url:
            key = "panel_url" if kind == "message_sent" else f"webhooks.{kind}"
            raise ConfigError(f"{self.source}: site '{self.name}' has no {key}")
        return url

    def masked(self) -> dict[str, Any]:
        """The site as a plain dict with the token masked, for ``config show``."""
        from opcli.protocol import mask_token

        return {
            "panel_url": self.panel_url,
            "token": mask_token(self.token),
            "webhooks": dict(self.webhooks),
            "timeout": self.timeout,
            "verify": self.verify,
            "attaches_encoding": self.attaches_encoding,
            "webhook_encoding": self.webhook_encoding,
            "check": dict(self.check),
        }


#: The profile of a user not listed in ``listen.users`` when the config has no template.
DEFAULT_TEMPLATE = {
    "name": "User {id}",
    "gender": "female",
    "avatar": "",
    "balance": "0.00",
    "location": "",
    "about": "",
    "custom": [],
}


@dataclass(frozen=True)
class ListenConfig:
    """The ``listen:`` section, interpolated, with canned replies checked against the contract."""

    host: str | None = None
    port: int | None = None
    max_body_bytes: int = 100 * 1024 * 1024
    unknown_user: str | int = "template"
    user_template: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_TEMPLATE))
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    media: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    def user_info(self, user_id: int) -> dict[str, Any] | None:
        """The canned profile of a user, from ``users`` or the template; None for 404."""
        if user_id in self.users:
            profile = self.users[user_id]
        elif self.unknown_user == 404:
            return None
        else:
            profile = _fill_template(self.user_template, user_id)
        return {"id": user_id, **{k: v for k, v in profile.items() if k != "id"}}


def _fill_template(value: Any, user_id: int) -> Any:
    if isinstance(value, str):
        return value.replace("{id}", str(user_id))
    if isinstance(value, dict):
        return {k: _fill_template(v, user_id) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_template(v, user_id) for v in value]
    return value


@dataclass
class Config:
    """A loaded config file with its selected site; ``listen`` is resolved on first use."""

    path: str
    site: Site
    site_names: list[str]
    _raw: Any = None
    _listen: ListenConfig | None = None

    @property
    def listen(self) -> ListenConfig:
        if self._listen is None:
            errors: list[str] = []
            raw = self._raw.get("listen") if isinstance(self._raw, dict) else None
            self._listen = _listen_section(raw, self.path, errors, strict=True)
            if errors:
                raise ConfigError(errors)
        return self._listen


# --- validation ----------------------------------------------------------------------------


class _Unset:
    """Stands for a value whose variable is unset (only in sections not selected)."""


def _interpolate(text: str, where: str, errors: list[str], strict: bool, name: str) -> str | type[_Unset]:
    missing: list[str] = []

    def sub(m: re.Match) -> str:
        value = os.environ.get(m.group(1))
        if value is None:
            if m.group(2) is not None:
                return m.group(2)
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


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    return "a list" if isinstance(value, list) else "a mapping"


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_type_name(value)}")
    return value


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
        raise ValueError(f"expected a number, got {_type_name(value)}")
    return value


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

    return conv


def _bool_or_path(value: Any) -> bool | str:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "yes", "1"):
            return True
        if lowered in ("false", "no", "0"):
            return False
        if not Path(value).expanduser().is_file():
            raise ValueError(f"expected true, false or a CA bundle file, got {value!r} (no such file)")
        return str(Path(value).expanduser())
    raise ValueError(f"expected true, false or a CA bundle path, got {_type_name(value)}")


def _choice(*choices: Any) -> Callable[[Any], Any]:
    def conv(value: Any) -> Any:
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(map(str, choices))}, got {value!r}")
        return value

    return conv


_SITE_SPEC: dict[str, Any] = {
    "panel_url": _url,
    "token": _str,
    "webhooks": dict.fromkeys(WEBHOOKS, _url),
    "timeout": _timeout,
    "verify": _bool_or_path,
    "attaches_encoding": _choice("brackets", "json"),
    "webhook_encoding": _choice("urlencoded", "multipart"),
    "check": {"user": _int_range(0), "bot": _int_range(0)},
}


def _walk(spec: dict, node: Any, path: str, where: str, errors: list[str], strict: bool, dotted: str) -> dict[str, Any]:
    """Check a mapping against ``spec`` (nested dicts of converters); collect every error."""
    if not isinstance(node, dict):
        errors.append(f"{where}: {dotted} must be a mapping, got {_type_name(node)}")
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
            out[key] = _walk(spec[key], value, path, value_where, errors, strict, name)
            continue
        if spec[key] is None:
            continue
        if isinstance(value, str) and "${" in value:
            value = _interpolate(value, value_where, errors, strict, name)
            if value is _Unset:
                continue
        try:
            out[key] = spec[key](value)
        except ValueError as exc:
            errors.append(f"{value_where}: {name}: {exc}")
    return out


def _site(name: str, node: Any, path: str, where: str, errors: list[str], strict: bool) -> Site | None:
    before = len(errors)
    values = _walk(_SITE_SPEC, node, path, where, errors, strict, f"sites.{name}")
    if isinstance(node, dict) and "token" not in node:
        errors.append(f"{where}: site '{name}' has no token")
    if len(errors) > before or "token" not in values:
        return None
    check = values.pop("check", {})
    return Site(name=name, source=path, check=check, **values)


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
        errors.append(f"{where}: {dotted} must be a mapping of user ids, got {_type_name(node)}")
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


_LISTEN_SPEC: dict[str, Any] = {
    "host": _str,
    "port": _int_range(0, 65535),
    "max_body_bytes": _int_range(1),
    "unknown_user": _choice("template", 404),
    # free-form canned replies: interpolated and contract-checked by _listen_section
    "user_template": None,
    "users": None,
    "media": None,
}


def _listen_section(node: Any, path: str, errors: list[str], strict: bool) -> ListenConfig:
    from opcli.protocol import check_reply

    if node is None:
        return ListenConfig()
    values = _walk(_LISTEN_SPEC, node, path, path, errors, strict, "listen")
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
            contract("user_info", {"id": 1, **_fill_template(template, 1)}, mark, "listen.user_template", 1)
            values["user_template"] = template
        else:
            errors.append(f"{_where(path, mark)}: listen.user_template must be a mapping, got {_type_name(template)}")
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
    return ListenConfig(**values)


# --- discovery and loading -----------------------------------------------------------------


def user_config_path() -> Path:
    """The config file in the user config dir (``typer.get_app_dir("opcli")/config.yaml``)."""
    from typer import get_app_dir

    return Path(get_app_dir("opcli")) / "config.yaml"


def find_config(explicit: str | Path | None = None) -> Path:
    """The config file to use: the first of --config, $OPCLI_CONFIG, ./opcli.yaml, user, built-in."""
    for given, origin in ((explicit, "--config"), (os.environ.get("OPCLI_CONFIG"), "$OPCLI_CONFIG")):
        if given:
            path = Path(given).expanduser()
            if not path.is_file():
                raise ConfigError(f"{path}: config file not found (from {origin})")
            return path
    for candidate in (Path("opcli.yaml"), user_config_path()):
        if candidate.is_file():
            return candidate
    return BUILTIN


def load_config(path: str | Path | None = None, site: str | None = None, listen: bool = False) -> Config:
    """Load, validate and interpolate a config; select ``site`` (or $OPCLI_SITE, default_site).

    With ``listen``, the listen section is resolved too (its variables and canned replies), in
    the same pass. Raises ConfigError listing every problem as ``FILE:LINE:COL: problem``.
    """
    file = find_config(path)
    shown = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{shown}: cannot read config: {exc}") from None
    raw = _parse(text, shown)
    if raw is None:
        raw = _Map()
    if not isinstance(raw, dict):
        raise ConfigError(f"{shown}:1:1: the config must be a mapping with 'sites:', got {_type_name(raw)}")
    errors: list[str] = []
    top_where = _where(shown, raw.mark)
    for key in raw:
        if key not in ("default_site", "sites", "listen"):
            errors.append(
                f"{_where(shown, raw.key_marks[key])}: unknown key '{key}' "
                "(expected one of: default_site, sites, listen)"
            )
    sites_node = raw.get("sites")
    if not isinstance(sites_node, dict) or not sites_node:
        where = _where(shown, raw.value_marks.get("sites")) if "sites" in raw else top_where
        errors.append(f"{where}: 'sites' must be a mapping with at least one site")
        raise ConfigError(errors)
    chosen = site or os.environ.get("OPCLI_SITE") or raw.get("default_site")
    if chosen is None:
        chosen = next(iter(sites_node)) if len(sites_node) == 1 else None
    if chosen is None:
        errors.append(
            f"{top_where}: no site selected: set default_site, --site or $OPCLI_SITE "
            f"(sites: {', '.join(map(str, sites_node))})"
        )
    elif chosen not in sites_node:
        origin = "--site" if site else "$OPCLI_SITE" if os.environ.get("OPCLI_SITE") else "default_site"
        mark = raw.value_marks.get("default_site") if origin == "default_site" else sites_node.mark
        errors.append(
            f"{_where(shown, mark)}: no site '{chosen}' (from {origin}); sites: {', '.join(map(str, sites_node))}"
        )
    selected = None
    for name, node in sites_node.items():
        where = _where(shown, sites_node.value_marks.get(name))
        resolved = _site(str(name), node, shown, where, errors, strict=(name == chosen))
        if name == chosen:
            selected = resolved
    # the listen section's keys are always checked; its variables and canned replies when used
    listen_section = None
    if listen:
        listen_section = _listen_section(raw.get("listen"), shown, errors, strict=True)
    elif raw.get("listen") is not None:
        _walk(_LISTEN_SPEC, raw["listen"], shown, _where(shown, raw.value_marks.get("listen")), errors, False, "listen")
    if errors or selected is None:
        raise ConfigError(errors or [f"{top_where}: site '{chosen}' is not usable"])
    return Config(path=shown, site=selected, site_names=[str(n) for n in sites_node], _raw=raw, _listen=listen_section)
