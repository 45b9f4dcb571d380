"""opcli's servers under uvicorn: a socket bound up front, opcli's HTTP protocol, uvloop, and in a thread.

``bind`` makes a port in use a UsageError (exit 2) instead of uvicorn's exit 3; ``make_server``
builds the uvicorn Server every opcli server runs as; ``ServerThread`` runs any ASGI app in a
background thread (tests, ``opcli demo``, the pytest plugin).
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from opcli.errors import UsageError


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; a port in use is a UsageError (exit 2), not uvicorn's exit 3."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        hint = " (another listener? use --port 0 for a free port)" if exc.errno == errno.EADDRINUSE else ""
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}{hint}") from None
    sock.set_inheritable(False)
    return sock


def base_url(sock: socket.socket, scheme: str = "http") -> str:
    host, port = sock.getsockname()[:2]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def uvicorn_config(app: Any, **options: Any) -> Any:
    """uvicorn's settings for opcli's servers: no logging of its own, no lifespan, uvloop when installed.

    The HTTP protocol is opcli's (``listener/http.py``): uvicorn's httptools one, with each
    request's connection in its scope (``http=`` in ``options`` picks another).
    """
    import uvicorn

    from opcli.listener.http import HttpToolsProtocol

    options.setdefault("http", HttpToolsProtocol)
    return uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
        proxy_headers=False,  # clients are who they are: the inspector answers loopback clients only
        timeout_graceful_shutdown=5,
        **options,
    )


def make_server(app: Any, **options: Any) -> Any:
    """A uvicorn Server for ``app``; an app with ``shutting_down()`` is told when the server begins to stop.

    uvicorn's graceful shutdown waits for open responses: the listener then ends its event
    streams and waits (``/_opcli/``), so that it exits at once.
    """
    import uvicorn

    server = uvicorn.Server(uvicorn_config(app, **options))
    shutting_down = getattr(app, "shutting_down", None)
    if shutting_down is not None:
        shutdown = server.shutdown

        async def tell_then_shutdown(sockets: list[socket.socket] | None = None) -> None:
            shutting_down()
            await shutdown(sockets)

        server.shutdown = tell_then_shutdown
    return server


def run_loop(main: Coroutine[Any, Any, None], loop_factory: Callable[[], asyncio.AbstractEventLoop] | None) -> None:
    """Run ``main`` on the loop uvicorn would pick (uvloop when installed), as ``Server.run`` does."""
    if loop_factory is None:
        asyncio.run(main)
    elif sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(main)
    else:  # pragma: no cover - Python 3.10
        loop = loop_factory()
        try:
            loop.run_until_complete(main)
        finally:
            loop.close()


class ServerThread:
    """An ASGI app under uvicorn in a background thread, on a loopback socket bound up front."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, **uvicorn_options: Any) -> None:
        self.sock = bind(host, port)
        self.url = base_url(self.sock, "https" if uvicorn_options.get("ssl_certfile") else "http")
        self.server = make_server(app, **uvicorn_options)
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"opcli server {self.url}")
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            run_loop(self.server.serve(sockets=[self.sock]), self.server.config.get_loop_factory())
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self.error = exc

    def start(self, timeout: float = 10.0) -> ServerThread:
        """Start serving; raises RuntimeError when the server did not start within ``timeout``."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                why = f"{type(self.error).__name__}: {self.error}" if self.error else f"not within {timeout:g}s"
                raise RuntimeError(f"the server at {self.url} did not start ({why})")
            time.sleep(0.002)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(10)
        self.sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
