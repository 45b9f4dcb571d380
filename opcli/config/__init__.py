"""Loading the YAML config: discovery, ``${VAR}`` interpolation, validation with positions.

The first file found is the whole config (``--config``, ``$OPCLI_CONFIG``, ``./opcli.yaml``,
the user config dir, then the built-in ``defaults.yaml``). Every problem is reported as
``FILE:LINE:COL: problem``, all of them at once, by raising one ``ConfigError``.

Interpolation is lazy: an unset variable without a default is an error only in the selected
site, or in the ``listen`` section when the listener asks for it.
"""

from __future__ import annotations

import os
from pathlib import Path

from opcli.config.checks import LISTEN_SPEC, WEBHOOKS, check_site, listen_section, type_name, walk
from opcli.config.model import DEFAULT_TEMPLATE, Config, ListenConfig, Site
from opcli.config.positions import YamlMap, parse_yaml
from opcli.config.positions import where as _where
from opcli.errors import ConfigError

BUILTIN = Path(__file__).parent.parent / "defaults.yaml"
SAMPLE = Path(__file__).parent.parent / "sample-config.yaml"

__all__ = [
    "BUILTIN",
    "DEFAULT_TEMPLATE",
    "SAMPLE",
    "WEBHOOKS",
    "Config",
    "ListenConfig",
    "Site",
    "find_config",
    "load_config",
    "searched",
    "user_config_path",
]


def user_config_path() -> Path:
    """The config file in the user config dir (``typer.get_app_dir("opcli")/config.yaml``)."""
    from typer import get_app_dir

    return Path(get_app_dir("opcli")) / "config.yaml"


def searched() -> list[str]:
    """Where a config file is looked for when neither --config nor $OPCLI_CONFIG names one."""
    return ["./opcli.yaml", str(user_config_path())]


def _is_file(path: Path, origin: str) -> bool:
    """True for a file; an unusable path (unreadable directory, name too long) is a ConfigError naming it."""
    try:
        return path.is_file()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({origin}): {exc.strerror or exc}") from None


_piped: dict[tuple[int, int], bytes] = {}  # the bytes of each config read from a pipe (-c /dev/stdin, -c <(...))


def _pipe_key(path: Path) -> tuple[int, int]:
    """The pipe itself (not its name: /dev/stdin is another pipe in another run of the same process)."""
    st = path.stat()
    return st.st_dev, st.st_ino


def find_config(explicit: str | Path | None = None) -> Path:
    """The config file to use: the first of --config, $OPCLI_CONFIG, ./opcli.yaml, user, built-in."""
    for given, origin in ((explicit, "--config"), (os.environ.get("OPCLI_CONFIG"), "$OPCLI_CONFIG")):
        if given:
            path = Path(given).expanduser()
            if _is_file(path, f"from {origin}") or (path.exists() and not path.is_dir()):  # a pipe: -c <(...)
                return path
            if path.is_dir():
                raise ConfigError(f"{path}: is a directory, not a config file (from {origin})")
            raise ConfigError(f"{path}: config file not found (from {origin})")
    for candidate, origin in ((Path("opcli.yaml"), "the current directory"), (user_config_path(), "user config")):
        if _is_file(candidate, origin):
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
        piped = None if file.is_file() else _pipe_key(file)
        data = _piped[piped] if piped in _piped else file.read_bytes()
        text = data.decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read config: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        byte = data[exc.start]
        raise ConfigError(f"{shown}:{line}:{column}: the config is not UTF-8 text (byte {byte:#04x})") from None
    if piped is not None:  # a pipe reads once: a second load of it (an error message's) gets the same bytes
        _piped[piped] = data
    raw = parse_yaml(text, shown)
    if raw is None:
        raw = YamlMap()
    if not isinstance(raw, dict):
        raise ConfigError(f"{shown}:1:1: the config must be a mapping with 'sites:', got {type_name(raw)}")
    errors: list[str] = []
    top_where = _where(shown, raw.mark) if raw.mark is not None else f"{shown}:1:1"  # (an empty file has none)
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
    origin = "--site" if site else "$OPCLI_SITE" if os.environ.get("OPCLI_SITE") else "default_site"
    if chosen is None:
        chosen = next(iter(sites_node)) if len(sites_node) == 1 else None
        origin = "the only site"
    if chosen is None:
        errors.append(
            f"{top_where}: no site selected: set default_site, --site or $OPCLI_SITE "
            f"(sites: {', '.join(map(str, sites_node))})"
        )
    elif chosen not in sites_node:
        mark = raw.value_marks.get("default_site") if origin == "default_site" else sites_node.mark
        errors.append(
            f"{_where(shown, mark)}: no site '{chosen}' (from {origin}); sites: {', '.join(map(str, sites_node))}"
        )
    selected = None
    for name, node in sites_node.items():
        where = _where(shown, sites_node.value_marks.get(name))
        resolved = check_site(str(name), node, shown, where, errors, strict=(name == chosen))
        if name == chosen:
            selected = resolved
    # the listen section's keys are always checked; its variables and canned replies when used
    resolved_listen = None
    if listen:
        resolved_listen = listen_section(raw.get("listen"), shown, errors, strict=True)
    elif raw.get("listen") is not None:
        walk(LISTEN_SPEC, raw["listen"], shown, _where(shown, raw.value_marks.get("listen")), errors, False, "listen")
    if errors or selected is None:
        raise ConfigError(errors or [f"{top_where}: site '{chosen}' is not usable"])
    names = [str(n) for n in sites_node]
    return Config(path=shown, site=selected, site_names=names, _raw=raw, _listen=resolved_listen, site_from=origin)
