"""The resolved config: sites and the listener's settings, interpolated and validated."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from opcli.errors import ConfigError


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
        """The URL of a call: ``message_sent`` (the panel) or one of the three webhooks.

        ``kind`` as a user may write it (``user-info``); ValueError for no kind at all.
        """
        from opcli.protocol import kind_name

        kind = kind_name(kind)
        url = self.panel_url if kind == "message_sent" else self.webhooks.get(kind)
        if not url:
            key = "panel_url" if kind == "message_sent" else f"webhooks.{kind}"
            raise ConfigError(f"{self.source}: site '{self.name}' has no {key}")
        return url

    def rebased(self, base_url: str, only: tuple[str, int] | None = None) -> Site:
        """The same site with every URL moved to ``base_url`` (scheme, host, port), paths kept.

        What a listener on a free port serves: ``opcli demo``, ``ListenerThread`` and tests use it.
        With ``only=(host, port)``, only the http URLs at that address move (the listener's own
        URLs, when it serves elsewhere than the config says: ``--port 0``).
        """
        base = urlsplit(base_url)

        def move(url: str | None) -> str | None:
            if not url:
                return url
            parts = urlsplit(url)
            if only is not None and (parts.scheme, parts.hostname, parts.port or 80) != ("http", *only):
                return url
            return urlunsplit(parts._replace(scheme=base.scheme, netloc=base.netloc))

        return replace(self, panel_url=move(self.panel_url), webhooks={k: move(v) for k, v in self.webhooks.items()})

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
class OperatorConfig:
    """``listen.operator``: what the listener does as the panel after each accepted message.

    ``fetch`` lists the webhooks called first, in order; ``reply`` is the operator's answer
    (``{message}``, ``{user}``, ``{bot}``, ``{name}`` filled in) or None for none; ``delay``
    seconds pass before the first call; each call gives up after ``timeout`` seconds.
    """

    fetch: tuple[str, ...] = ("user_info", "user_media")
    reply: str | None = "Re: {message}"
    delay: float = 0.0
    timeout: float = 4.0  # the deployed panel's: it gives up after 4 s and does not retry

    #: what ``reply`` may name; anything else in braces is a config error
    PLACEHOLDERS: ClassVar[tuple[str, ...]] = ("message", "user", "bot", "name")

    def reply_text(self, values: dict[str, str]) -> str:
        """The reply template with the placeholders filled (plain replacement: no format-string surprises)."""
        text = self.reply or ""
        return re.sub(r"\{(message|user|bot|name)\}", lambda m: values[m.group(1)], text)


@dataclass(frozen=True)
class Timeouts:
    """``listen.timeouts``: how long the listener waits on a client before it gives up on it."""

    idle: float = 5.0  # a connection with no request under way (before the first, between two)
    headers: float = 10.0  # from a request's first byte to the end of its headers
    body: float = 30.0  # a body that stalls: no byte for this long


@dataclass(frozen=True)
class ListenConfig:
    """The ``listen:`` section, interpolated, with canned replies checked against the contract."""

    host: str | None = None
    port: int | None = None
    max_body_bytes: int = 100 * 1024 * 1024
    max_field_bytes: int = 1024 * 1024
    keep: int = 10000
    strict: bool = False
    unknown_user: str | int = "template"
    user_template: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_TEMPLATE))
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    media: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)  # --fault SPECs, checked by config/checks.py
    seed: int | None = None  # for the faults' rate
    operator: OperatorConfig | None = None  # present: the operator loop is on
    timeouts: Timeouts = field(default_factory=Timeouts)


def fill_template(value: Any, user_id: int) -> Any:
    if isinstance(value, str):
        return value.replace("{id}", str(user_id))
    if isinstance(value, dict):
        return {k: fill_template(v, user_id) for k, v in value.items()}
    if isinstance(value, list):
        return [fill_template(v, user_id) for v in value]
    return value


@dataclass
class Config:
    """A loaded config file with its selected site; ``listen`` is resolved on first use."""

    path: str
    site: Site
    site_names: list[str]
    _raw: Any = None
    _listen: ListenConfig | None = None
    site_from: str = "default_site"  # what chose the site: --site, $OPCLI_SITE, default_site, the only site

    @property
    def listen(self) -> ListenConfig:
        if self._listen is None:
            errors: list[str] = []
            raw = self._raw.get("listen") if isinstance(self._raw, dict) else None
            from opcli.config.checks import listen_section

            self._listen = listen_section(raw, self.path, errors, strict=True)
            if errors:
                raise ConfigError(errors)
        return self._listen
