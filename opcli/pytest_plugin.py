"""opcli's pytest plugin: the ``opcli_listener`` fixture, a listener that a test sends to and asserts on.

Installing opcli registers this module as the ``pytest11`` plugin ``opcli`` (``-p no:opcli``
turns it off), so it is imported by every pytest run where opcli is installed: it imports only
pytest itself, and the listener (uvicorn, starlette, httpx) when a test first asks for it.

One listener serves a whole session (each pytest-xdist worker its own, on its own free port);
each test gets it reset: no calls, no faults, the built-in users and media, no operator. When a
test that used it fails, its report gets a section ``opcli listener`` listing the test's calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from opcli.config import Site
    from opcli.listener import Call, Callback, ListenerThread
    from opcli.listener.canned import IdMap

SECTION = "opcli listener"
_IN_USE = pytest.StashKey["OpcliListener"]()


class OpcliListener:
    """The session's listener as one test sees it (the ``opcli_listener`` fixture).

    ``url``, ``endpoints`` (``{kind: URL}``), ``token`` and ``site`` (an ``opcli.Site`` pointing
    here) say where to send; ``calls`` and ``callbacks`` are this test's, oldest first;
    ``users[ID]`` and ``media[ID]`` override the canned data for this test (missing user-info
    fields come from the template; ID is ``42`` or ``"42"``, anything else raises ValueError).
    ``fault`` and ``operator`` last until the test ends.
    """

    def __init__(self, server: ListenerThread) -> None:
        self._server = server
        self.url: str = server.url
        self.endpoints: dict[str, str] = dict(server.endpoints)
        self.token: str = server.token
        self.site: Site = server.site
        self.users: IdMap[dict[str, Any]] = server.users
        self.media: IdMap[list[dict[str, Any]]] = server.media
        self._kept: list[Call | Callback] | None = None  # the test's journal, once it ended

    def __repr__(self) -> str:
        return f"<opcli_listener {self.url}>"

    @property
    def calls(self) -> list[Call]:
        """The calls this test received so far, oldest first."""
        return [e for e in self._entries() if e.event == "call"]  # type: ignore[misc]

    @property
    def callbacks(self) -> list[Callback]:
        """The callbacks the operator made during this test (see ``operator``), oldest first."""
        return [e for e in self._entries() if e.event == "callback"]  # type: ignore[misc]

    def _entries(self) -> list[Call | Callback]:
        """Calls and callbacks of this test in journal order."""
        return self._kept if self._kept is not None else self._server.journal.entries()

    def wait_for(self, kind: str | None = None, count: int = 1, timeout: float = 5.0) -> list[Call]:
        """Wait until ``count`` calls (of ``kind``) came during this test; the first ``count`` of them.

        On timeout raises AssertionError whose message lists the calls that did come (seq, kind,
        status, key fields). Blocks the calling thread: from an async test, the request must
        have been answered already, or use ``await asyncio.to_thread(opcli_listener.wait_for, ...)``.
        """
        __tracebackhide__ = True  # a failed wait points at the test's line, not at opcli's
        return self._server.wait_for(kind, count, timeout)  # type: ignore[return-value]

    def fault(self, spec: str) -> None:
        """Add a fault rule (``opcli listen --fault`` grammar, e.g. ``user_info:delay=5,times=1``) for this test.

        A bad SPEC raises ValueError naming the part that is wrong.
        """
        self._server.fault(spec)

    def operator(self, **options: Any) -> None:
        """Act as the panel for this test (``opcli listen --operator``): ``fetch``, ``reply``, ``delay``, ``timeout``.

        Unset options take the ``listen.operator`` defaults; the callbacks appear in ``callbacks``.
        """
        self._server.operator(**options)

    def _summary(self) -> str:
        """The report section: where the listener was, then one line per call or callback."""
        from opcli.listener.journal import entry_summary

        entries = self._entries()
        calls = sum(e.event == "call" for e in entries)
        head = f"listener at {self.url}: {calls} call{'s' * (calls != 1)} during this test"
        return "\n".join([head, *(entry_summary(e) for e in entries)])

    def _end(self) -> None:
        """The test is over: keep its journal for the report, then reset the shared server."""
        self._kept = self._server.journal.entries()
        self._server.reset()


@pytest.fixture(scope="session")
def _opcli_server() -> Iterator[ListenerThread]:
    """The session's listener (one per xdist worker): built-in config, a free loopback port."""
    from opcli.listener import ListenerThread

    with ListenerThread() as server:
        yield server


@pytest.fixture
def opcli_listener(_opcli_server: ListenerThread, request: pytest.FixtureRequest) -> Iterator[OpcliListener]:
    """A listener on 127.0.0.1 with the built-in canned data, fresh for this test.

    Token ``$OPCLI_TOKEN`` or ``dev-token`` (read once per session). See ``OpcliListener``.
    """
    _opcli_server.reset()
    listener = OpcliListener(_opcli_server)
    request.node.stash[_IN_USE] = listener
    yield listener
    listener._end()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test that used ``opcli_listener`` gets the section ``opcli listener``, as captured output does."""
    outcome = yield
    listener = item.stash.get(_IN_USE, None)
    if listener is not None:
        report = outcome.get_result()
        if report.failed:
            report.sections.append((SECTION, listener._summary()))
