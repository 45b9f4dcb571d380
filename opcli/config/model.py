"""The resolved config: sites and the listener's settings, interpolated and validated."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any
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
        """The URL of a call: ``message_sent`` (the panel) or one of the three webhooks."""
        url = self.panel_url if kind == "message_sent" else self.webhooks.get(kind)
        if not url:
            key = "panel_url" if kind == "message_sent" else f"webhooks.{kind}"
            raise ConfigError(f"{self.source}: site '{self.name}' has no {key}")
        return url

    def rebased(self, base_url: str) -> Site:
        """The same site with every URL moved to ``base_url`` (scheme, host, port), paths kept.

        What a listener on a free port serves: ``opcli demo``, ``ListenerThread`` and tests use it.
        """
        base = urlsplit(base_url)

        def move(url: str | None) -> str | None:
            return urlunsplit(urlsplit(url)._replace(scheme=base.scheme, netloc=base.netloc)) if url else url

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
class ListenConfig:
    """The ``listen:`` section, interpolated, with canned replies checked against the contract."""

    host: str | None = None
    port: int | None = None
    max_body_bytes: int = 100 * 1024 * 1024
    keep: int = 10000
    strict: bool = False
    unknown_user: str | int = "template"
    user_template: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_TEMPLATE))
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    media: dict[int, list[dict[str, Any]]] = field(default_factory=dict)


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
