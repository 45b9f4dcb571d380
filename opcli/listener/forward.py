"""``listen --forward SITE``: each checked call sent on to another site, its reply passed back unchanged.

The body goes as it came -- the raw bytes the listener kept (``bodies.RawBody``) with only the
token's value replaced by SITE's token, so a multipart body keeps its boundary and every other
byte, and a file is streamed from disk, never held whole -- to the same kind's URL of SITE (its
``panel_url`` for ``message_sent``), with an async client on the listener's own loop. The
upstream's status, content type and body go back to the caller as they came; the journal line
gets the reply (JSON when it is JSON, else its text), ``forwarded_to``, ``upstream_ms`` and, for
user-info and user-media, the contract's ``findings``. An upstream that cannot be reached gets
the caller a 502 envelope naming the URL.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from typing import Any

import httpx

from opcli.client import Outgoing, tls, to_reply, unreachable, within
from opcli.config import Config, Site, load_config
from opcli.errors import ConfigError
from opcli.listener.app import Answer, Raw
from opcli.listener.bodies import RawBody
from opcli.listener.call import Call
from opcli.listener.forms import header
from opcli.multipart import SavedBody, token_bytes
from opcli.panel import judge

#: Sent upstream with a forwarded call: a listener that gets its own id back is forwarding to itself.
LOOP_HEADER = "X-Opcli-Forwarded-By"


def forward_site(config: Config, name: str) -> Site:
    """The config's site ``name``, to forward to; an unknown one is a ConfigError naming the sites."""
    if name not in config.site_names:
        raise ConfigError(f"{config.path}: --forward {name}: no such site; sites: {', '.join(config.site_names)}")
    return load_config(config.path, name).site


class Forwarder:
    """Sends checked calls on to ``site``; the listener awaits it instead of its own answers.

    Raises ConfigError when ``site`` has no URL for one of the ``kinds`` the listener serves.
    """

    def __init__(self, site: Site, kinds: Iterable[str]) -> None:
        self.site = site
        for kind in kinds:
            site.url(kind)
        self.tls = tls(site)
        self.id = uuid.uuid4().hex

    def looped(self, kind: str, scope: Any) -> Answer | None:
        """508 for a call this listener forwarded, come back to it (whatever token it carries), else None."""
        if header(scope, LOOP_HEADER.lower().encode()) == self.id:
            return 508, {"status": 0, "message": f"forwarding loop: {self.site.url(kind)} leads back to this listener"}
        return None

    async def __call__(self, call: Call, kind: str, ids: dict[str, int], raw: RawBody | None, scope: Any) -> Answer:
        url = self.site.url(kind)
        call.forwarded_to = url
        assert raw is not None, "the listener keeps the raw body of every call it forwards"
        content_type = header(scope, b"content-type")
        body = SavedBody(raw.source, raw.size, raw.token_at, token_bytes(self.site.token, content_type), content_type)
        out = Outgoing(url, [], raw=body, headers={LOOP_HEADER: self.id})
        started = time.perf_counter()
        try:
            async with httpx.AsyncClient(verify=self.tls, timeout=self.site.timeout, follow_redirects=False) as http:
                response = await within(http.send(out.build()), self.site.timeout)
        except (httpx.TransportError, asyncio.TimeoutError) as exc:
            return 502, {"status": 0, "message": str(unreachable(url, exc, self.site.timeout))}
        finally:
            call.upstream_ms = round((time.perf_counter() - started) * 1000, 2)
        reply = to_reply(out, response.status_code, response.headers.items(), response.content, started)
        if kind in ("user_info", "user_media"):
            call.findings = [f.as_json() for f in judge(kind, reply, ids["user_id"]).findings]
        shown = reply.data if reply.is_json else reply.body.decode("utf-8", "replace")
        content = next((v for k, v in response.headers.raw if k.lower() == b"content-type"), None)
        return reply.status, Raw(reply.body, content, shown)
