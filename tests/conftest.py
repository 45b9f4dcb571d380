"""Shared fixtures: an isolated environment, the CLI runner, and real servers on loopback."""

from __future__ import annotations

import email.parser
import email.policy
import http.server
import json
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from opcli.cli import app


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep every test away from the real user config dir, the environment and the cwd."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NO_COLOR", "1")
    for var in ("OPCLI_CONFIG", "OPCLI_SITE", "OPCLI_TOKEN", "OPCLI_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def cli() -> Callable[..., Any]:
    """Run opcli in-process; the result has separate ``stdout`` and ``stderr``."""
    runner = CliRunner()

    def run(*args: str, input: str | bytes | None = None) -> Any:
        return runner.invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)

    return run


def half_closed(url: str, request: bytes) -> bytes:
    """Send ``request`` to the server at ``url``, close our side (``nc -N``), and read the answer to its end."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    return response


def form_request(body: bytes, path: str = "/hooks/user-info") -> bytes:
    """A raw HTTP/1.1 POST of an urlencoded ``body``."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(
    path: Path,
    panel_url: str = "http://127.0.0.1:9/operator-api",
    hooks: str | None = None,
    extra_site: str = "",
    listen: str = "",
    token: str = "secret-token-123456",
) -> Path:
    """A one-site config file pointing at a test server."""
    hooks = hooks or panel_url.rsplit("/", 1)[0] + "/hooks"
    path.write_text(
        f"""\
default_site: test
sites:
  test:
    panel_url: {panel_url}
    token: {token}
    webhooks:
      send_message: {hooks}/send-message
      user_info: {hooks}/user-info
      user_media: {hooks}/user-media
    timeout: 5
{extra_site}{listen}""",
        encoding="utf-8",
    )
    return path


# --- an independent HTTP server: the standard library parses what arrives -----------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    fields: list[tuple[str, str]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)

    def field(self, name: str) -> str | None:
        return next((v for k, v in self.fields if k == name), None)


def parse_multipart(content_type: str, body: bytes) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    """Parse multipart/form-data with the standard library's email parser."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    assert message.is_multipart(), "body is not multipart"
    fields, files = [], []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        filename = part.get_filename()
        if filename is None:
            fields.append((name, payload.decode("utf-8")))
        else:
            files.append(
                {"field": name, "filename": filename, "content": payload, "content_type": part.get_content_type()}
            )
    return fields, files


class StdlibServer:
    """A ThreadingHTTPServer on a free loopback port; ``respond`` decides each answer."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.respond: Callable[[Received], tuple[int, dict[str, str], bytes]] = lambda r: (
            200,
            {"Content-Type": "application/json"},
            b'{"status": 1, "message": "", "data": {"message_id": 777}}',
        )
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = b""
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        body += self.rfile.read(size)
                        self.rfile.readline()
                else:
                    body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                got = Received("POST", self.path, dict(self.headers), body)
                ctype = self.headers.get("Content-Type", "")
                if ctype.startswith("multipart/form-data"):
                    got.fields, got.files = parse_multipart(ctype, body)
                server.received.append(got)
                status, headers, reply = server.respond(got)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        # a short poll interval: shutdown() waits for the next poll (0.5 s by default, per test)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def reply_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self.respond = lambda r: (
            status,
            {"Content-Type": "application/json", **(headers or {})},
            json.dumps(obj).encode(),
        )

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def stdlib_server() -> Iterator[StdlibServer]:
    server = StdlibServer()
    yield server
    server.close()


# --- uvicorn in a thread: for Starlette apps (the listener, deliberately broken sites) ----


@pytest.fixture
def serve() -> Iterator[Callable[[Any], Any]]:
    """Start an ASGI app under uvicorn on a free port; stopped after the test."""
    from opcli.listener import ServerThread

    started: list[ServerThread] = []

    def start(asgi_app: Any) -> ServerThread:
        server = ServerThread(asgi_app).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def lines_of(app: Any) -> list[dict[str, Any]]:
    """The listener app's journal lines as dicts, a list that grows as calls are journaled.

    A call's line is written before its reply is sent, so it is there when the client has the reply.
    """
    lines: list[dict[str, Any]] = []
    app.journal.subscribe(lambda line: lines.append(line.as_json()))
    return lines


class CallLines(Sequence):
    """The ``opcli_listener`` fixture's calls as journal lines (dicts), live: ``lines_of`` for the plugin."""

    def __init__(self, listener: Any) -> None:
        self.listener = listener

    def __getitem__(self, index: Any) -> Any:
        return [call.as_json() for call in self.listener.calls][index]

    def __len__(self) -> int:
        return len(self.listener.calls)

    def __eq__(self, other: object) -> bool:
        return list(self) == other

    __hash__ = None  # type: ignore[assignment]


# --- `opcli listen` as a real subprocess --------------------------------------------------


class ListenProc:
    """``python -m opcli listen ...`` in a subprocess; ``url`` is known once it is ready."""

    def __init__(self, *args: str, cwd: Path | None = None) -> None:
        import queue
        import subprocess
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "opcli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd
        )
        self.stdout_lines: queue.Queue[str | None] = queue.Queue()
        self.stderr_text: list[str] = []
        self.pumps = [threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout_lines.put), daemon=True)]
        ready = threading.Event()

        def err_line(line: str | None) -> None:
            if line is not None:
                self.stderr_text.append(line)
                if line.startswith("Ready: "):
                    self.url = line.split()[1]
                    ready.set()
            else:
                ready.set()

        self.pumps.append(threading.Thread(target=self._pump, args=(self.proc.stderr, err_line), daemon=True))
        self.url = ""
        for pump in self.pumps:
            pump.start()
        ready.wait(30)
        if not self.url:
            self.proc.kill()
            raise AssertionError(f"listener never got ready: {''.join(self.stderr_text)}")

    @staticmethod
    def _pump(stream: Any, put: Callable[[str | None], None]) -> None:
        for line in stream:
            put(line)
        put(None)

    def wait(self, timeout: float = 30) -> int:
        code = self.proc.wait(timeout)
        for pump in self.pumps:
            pump.join(10)
        return code

    @property
    def stdout(self) -> list[str]:
        """Every stdout line so far (call after wait())."""
        out = []
        while not self.stdout_lines.empty():
            line = self.stdout_lines.get()
            if line is not None:
                out.append(line)
        return out

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_text)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait(10)
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def listen_proc() -> Iterator[Callable[..., ListenProc]]:
    started: list[ListenProc] = []

    def start(*args: str, cwd: Path | None = None) -> ListenProc:
        proc = ListenProc(*args, cwd=cwd)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.close()


INSPECTED_TOKEN = "inspected-secret-token-0123456789"


@pytest.fixture
def inspected(tmp_path: Path) -> Iterator[Any]:
    """A ListenerThread with a long token (``INSPECTED_TOKEN``), saving files to ``tmp_path/saved``."""
    from opcli.config import load_config
    from opcli.listener import ListenerThread

    config = load_config(write_config(tmp_path / "c.yaml", token=INSPECTED_TOKEN), listen=True)
    (tmp_path / "saved").mkdir()
    with ListenerThread(config, save_dir=tmp_path / "saved") as running:
        yield running


def curl(*args: str) -> str:
    """Run the real curl; returns its stdout."""
    import subprocess

    done = subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout
