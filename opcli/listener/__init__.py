"""``opcli listen``: the site's three webhooks and the panel's endpoint, served locally.

``create_app(config)`` builds the ASGI app, ``serve(...)`` runs it as ``opcli listen`` does,
``ListenerThread`` runs it in a background thread (tests, the pytest plugin). Every request is
a ``Call`` in a ``Journal``; the ``Inspector`` serves them under ``/_opcli/``.
"""

from opcli.listener.app import Listener, create_app, routes_of
from opcli.listener.call import Call, Callback, Ready
from opcli.listener.faults import Faults
from opcli.listener.inspector import Inspector
from opcli.listener.journal import Journal, JournalError
from opcli.listener.operator import Operator
from opcli.listener.runner import Outcome, serve
from opcli.listener.server import ServerThread, bind
from opcli.listener.thread import ListenerThread

__all__ = [
    "Call",
    "Callback",
    "Faults",
    "Inspector",
    "Journal",
    "JournalError",
    "Listener",
    "ListenerThread",
    "Operator",
    "Outcome",
    "Ready",
    "ServerThread",
    "bind",
    "create_app",
    "routes_of",
    "serve",
]
