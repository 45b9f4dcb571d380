"""``ListenerThread``: the listener under uvicorn in a background thread, as tests use it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from opcli.config import Config, Site
from opcli.listener.app import Listener
from opcli.listener.call import Call, Callback
from opcli.listener.inspector import PREFIX as INSPECTOR
from opcli.listener.journal import Entry
from opcli.listener.operator import Operator
from opcli.listener.runner import endpoints_of, served_site
from opcli.listener.server import ServerThread


class ListenerThread:
    """The listener under uvicorn in a background thread, on a free loopback port.

    A context manager with what the pytest fixture offers: ``url``, ``endpoints``, ``inspector``, ``token``,
    ``site`` (an ``opcli.Site`` pointing at it), ``calls``, ``callbacks``, ``wait_for``,
    ``users``, ``media``, ``fault(SPEC)``, ``operator(...)``; ``reset()`` forgets calls, overrides
    and faults and turns the operator loop off. Raises RuntimeError when the server does not start.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        save_dir: Path | None = None,
        strict: bool | None = None,
    ) -> None:
        if config is None:
            from opcli.config import BUILTIN, load_config

            config = load_config(BUILTIN, site="local", listen=True)  # whatever $OPCLI_SITE says
        self.config = config
        if save_dir is not None:
            save_dir.mkdir(parents=True, exist_ok=True)
        self.app = Listener(config, save_dir=save_dir, strict=strict)
        self.journal = self.app.journal
        self._server = ServerThread(self.app, host, port)
        self.url = self._server.url
        self.endpoints = endpoints_of(self.app, self.url)
        self.inspector = self.url + INSPECTOR
        self.token = config.site.token
        self.site = config.site.rebased(self.url)
        self.users = self.app.canned.users
        self.media = self.app.canned.media
        self._operator: Operator | None = None

    def start(self) -> ListenerThread:
        self._server.start()
        return self

    def stop(self) -> None:
        self.operator_off()
        self._server.stop()

    def operator(
        self,
        fetch: Sequence[str] = ("user_info", "user_media"),
        reply: str | None = "Re: {message}",
        delay: float = 0.0,
        timeout: float = 4.0,
        site: Site | None = None,
    ) -> None:
        """Turn the operator loop on (``listen --operator``) with these settings; callbacks go to ``callbacks``.

        The calls go to ``site``, by default the config's site with the URLs that name the
        listener's configured address moved to where it serves (the built-in site: itself).
        Raises ValueError for a bad setting.
        """
        from opcli.config.checks import operator_settings

        settings = operator_settings(fetch=list(fetch), reply=reply, delay=delay, timeout=timeout)
        if site is None:
            site = served_site(self.config, self.url)
        self.operator_off()
        self._operator = Operator(self.app, settings, site).attach()

    def operator_off(self) -> None:
        """Turn the operator loop off: callbacks under way are cancelled (journaled ``cancelled``)."""
        panel, self._operator = self._operator, None
        if panel is None:
            return
        panel.detach()
        if panel.loop is not None and self._server.thread.is_alive():
            asyncio.run_coroutine_threadsafe(panel.close(), panel.loop).result(10)

    def __enter__(self) -> ListenerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def calls(self) -> list[Call]:
        """The calls kept so far, oldest first."""
        return self.journal.entries(event="call")  # type: ignore[return-value]

    @property
    def callbacks(self) -> list[Callback]:
        """The callbacks (``--operator``) kept so far, oldest first."""
        return self.journal.entries(event="callback")  # type: ignore[return-value]

    def wait_for(self, kind: str | None = None, count: int = 1, timeout: float = 5.0) -> list[Entry]:
        """Wait until ``count`` calls (of ``kind``) came; the first ``count`` of them.

        ``kind`` is written with ``_`` or ``-`` (``user-info``). On timeout raises AssertionError
        listing the calls that did come; an unknown ``kind`` raises ValueError at once rather than
        wait for a call that cannot come.
        """
        __tracebackhide__ = True  # pytest: the failure points at the caller's line
        from opcli.listener.journal import entry_summary
        from opcli.protocol import KINDS, kind_name

        if kind is not None:
            kind = kind_name(kind, (*KINDS, "unknown"))  # user-info is user_info
        found, complete = self.journal.wait_for(kind, count, timeout)
        if not complete:
            came = self.journal.entries()
            listing = "".join(f"\n  {entry_summary(e)}" for e in came) or " none"
            wanted = f"{count} {kind} call{'s' * (count != 1)}" if kind else f"{count} call{'s' * (count != 1)}"
            raise AssertionError(
                f"waited {timeout:g}s for {wanted} at {self.url}; {len(found)} came. Calls received:{listing}"
            )
        return found

    def fault(self, spec: str) -> None:
        """Add a fault rule (``--fault``'s grammar) after those in force; ValueError for a bad one."""
        self.app.faults.add(spec)

    def reset(self) -> None:
        """Forget the calls, the canned overrides and the faults, turn the operator loop off: a fresh state."""
        self.operator_off()
        self.journal.clear()
        self.app.canned.reset()
        self.app.faults.clear()
