"""``opcli load``: Locust in a subprocess, running opcli's locustfile, and the summary it leaves.

Locust patches the standard library with gevent when it is imported, which breaks asyncio code
in the same process (locust issues 2250 and 2383), so opcli never imports it: ``run_load`` starts
``python -m locust`` headless with ``opcli/locustfile.py`` (or the user's own), hands it the
config file, the site and what the users do through the environment (a token never goes on a
command line), and reads the summary that ``opcli.load`` writes from Locust's own statistics
when the run ends. Ctrl-C and SIGTERM are passed on once, so that Locust stops its users and
still writes the summary of what ran.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from opcli.client import check_file
from opcli.config import Config
from opcli.errors import OpcliError, Signalled, UsageError, raise_on
from opcli.protocol import mask_token, parse_id

#: What a ``message_sent`` of a load test carries besides its text, in ``--content`` weights.
CONTENTS = ("text", "photos", "file")
#: The environment variable that carries ``LoadSettings`` (JSON) to the Locust processes.
SETTINGS_ENV = "OPCLI_LOAD"
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
INSTALL = "opcli load runs on Locust, which is not installed: pip install 'opcli[load]'"

Log = Callable[[str], None]


def locust_installed() -> bool:
    """True when ``python -m locust`` can run here; Locust itself is not imported."""
    import importlib.util

    try:
        return importlib.util.find_spec("locust") is not None
    except (ImportError, ValueError):
        return False


def parse_weights(
    text: str, names: Sequence[str], option: str, name_of: Callable[[str, Sequence[str]], str] | None = None
) -> dict[str, float]:
    """``NAME=WEIGHT,...`` as ``{name: weight}`` with the weights above 0; raises UsageError otherwise.

    ``name_of(written, names)`` reads a name as written (``kind_name``: ``user-info`` is ``user_info``).
    """
    weights: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = (part.strip() for part in item.partition("="))
        if name_of is not None:
            with contextlib.suppress(ValueError):  # refused just below, with the other mistakes
                name = name_of(name, names)
        if not sep or name not in names:
            raise UsageError(f"{option} {text!r}: expected NAME=WEIGHT,... with NAME one of {', '.join(names)}")
        if name in weights:
            raise UsageError(f"{option} {text!r}: {name} is given twice")
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if not math.isfinite(weight) or weight < 0:
            raise UsageError(f"{option} {text!r}: the weight of {name} must be a number >= 0, got {value!r}")
        weights[name] = weight
    if not any(weights.values()):
        raise UsageError(f"{option} {text!r}: at least one weight must be above 0")
    return {name: weight for name, weight in weights.items() if weight > 0}


def parse_ids(text: str, option: str) -> tuple[int, int]:
    """``A-B`` (or one id ``A``) as ``(A, B)``: ids drawn uniformly from A to B, both included."""
    low, _, high = text.partition("-")
    try:
        first, last = parse_id(low.strip(), option), parse_id((high or low).strip(), option)
    except ValueError as exc:
        raise UsageError(f"{exc} (expected ID or FIRST-LAST)") from None
    if first > last:
        raise UsageError(f"{option} {text}: the first id is above the last")
    return first, last


_SPAN = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_run_time(text: str) -> int:
    """Locust's time spans: ``90``, ``90s``, ``2m``, ``1h30m``; returns whole seconds (at least 1)."""
    cleaned = text.strip().lower().replace(" ", "")
    match = _SPAN.fullmatch(cleaned) if not cleaned.isdigit() else None
    if cleaned.isdigit():
        seconds = int(cleaned)
    elif cleaned and match:
        hours, minutes, secs = (int(g or 0) for g in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    else:
        raise UsageError(f"--run-time {text!r}: expected seconds or a span such as 90s, 2m, 1h30m")
    if seconds < 1:
        raise UsageError(f"--run-time {text!r}: must be at least 1 second")
    return seconds


@dataclass
class LoadSettings:
    """What the users of ``opcli/locustfile.py`` do; travels to every Locust process as JSON."""

    mix: dict[str, float] = field(default_factory=lambda: {"message_sent": 1.0})
    content: dict[str, float] = field(default_factory=lambda: {"text": 1.0})
    user_ids: tuple[int, int] = (42, 42)
    bot_ids: tuple[int, int] = (7, 7)
    message: str = "Hello from opcli load"
    photos: list[tuple[str, str]] = field(default_factory=list)
    attach: str | None = None
    timeout: float | None = None
    summary: str | None = None  # where the master (or the only process) writes the summary

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> LoadSettings:
        """The settings ``opcli load`` gave this process, or the defaults (a plain ``locust`` run)."""
        raw = environ.get(SETTINGS_ENV)
        if not raw:
            return cls()
        data = json.loads(raw)
        for key in ("user_ids", "bot_ids"):
            data[key] = tuple(data[key])
        data["photos"] = [tuple(p) for p in data["photos"]]
        return cls(**data)


@dataclass
class LoadPlan:
    """How Locust runs: users, time, and where the processes are (this one, cores, machines)."""

    users: int = 1
    spawn_rate: float = 1.0
    run_time: int | None = None  # seconds; None runs until Ctrl-C
    processes: int | None = None  # -1: one per core
    master: bool = False
    expect_workers: int = 1
    master_bind_host: str | None = None
    worker: bool = False
    master_host: str = "127.0.0.1"
    master_port: int | None = None
    csv: str | None = None
    html: str | None = None
    locustfile: Path | None = None
    max_fail_ratio: float = 0.0
    verbose: bool = False

    @property
    def role(self) -> str:
        return "worker" if self.worker else "master" if self.master else "local"

    def argv(self) -> list[str]:
        """Locust's command line (no secret ever goes on it)."""
        argv = [sys.executable, "-m", "locust", "-f", str(self.locustfile or LOCUSTFILE), "--headless"]
        # without -v, Locust's INFO chatter (and its own stats tables) stays quiet; warnings still show
        argv += ["--loglevel", "INFO"] if self.verbose else ["--skip-log-setup"]
        if not self.verbose:
            argv.append("--only-summary")
        if self.processes is not None:
            argv += ["--processes", str(self.processes)]
        if self.worker:
            argv += ["--worker", "--master-host", self.master_host, "--master-port", str(self.master_port or 5557)]
            return argv
        argv += ["--users", str(self.users), "--spawn-rate", f"{self.spawn_rate:g}"]
        if self.run_time is not None:
            argv += ["--run-time", f"{self.run_time}s"]
        if self.master:
            argv += ["--master", "--expect-workers", str(self.expect_workers)]
            argv += ["--master-bind-port", str(self.master_port or 5557)]
            if self.master_bind_host:
                argv += ["--master-bind-host", self.master_bind_host]
        elif self.processes is not None:
            # the forked workers meet their master on a free loopback port, so that two runs
            # on one machine never collide on Locust's default 5557
            port = _free_port()
            argv += ["--master-bind-host", "127.0.0.1", "--master-bind-port", str(port), "--master-port", str(port)]
        if self.csv:
            argv += ["--csv", self.csv]
        if self.html:
            argv += ["--html", self.html]
        return argv


@dataclass
class LoadResult:
    """How the run ended: the summary, Locust's exit code, a signal that stopped it.

    ``summary`` is None on a worker (its master has the figures) and when a signal stopped
    Locust before it ran.
    """

    summary: dict[str, Any] | None
    locust_exit: int
    interrupted: int | None = None  # 130 (Ctrl-C) or 143 (SIGTERM)

    @property
    def unreachable(self) -> bool:
        """Every request failed because the other side could not be reached."""
        total = (self.summary or {}).get("total") or {}
        cannot = sum(
            e["count"] for e in (self.summary or {}).get("errors", []) if e["error"].startswith("cannot reach")
        )
        return bool(total.get("requests")) and cannot == total["requests"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_settings(config: Config, plan: LoadPlan, settings: LoadSettings) -> None:
    """Refuse, before anything starts, what the shipped locustfile could not send (exit 2)."""
    if plan.locustfile is not None:
        if not plan.locustfile.is_file():
            raise UsageError(f"--locustfile {plan.locustfile}: no such file")
        return
    for kind in settings.mix:
        config.site.url(kind)  # a ConfigError names the missing URL
    if settings.content.get("photos") and not settings.photos:
        raise UsageError("--content gives photos a weight: give the photos with --photo URL")
    if settings.content.get("file") and not settings.attach:
        raise UsageError("--content gives file a weight: give the file with --attach FILE")
    if settings.attach:  # named as the user gave it, then absolute for Locust's processes
        settings.attach = str(check_file(Path(settings.attach)).resolve())


def run_load(config: Config, plan: LoadPlan, settings: LoadSettings, *, log: Log | None = None) -> LoadResult:
    """Run Locust headless in a subprocess until ``plan.run_time`` ends or a signal stops it.

    Locust's own messages go to ``log``, line by line, the token masked. Returns the summary
    computed from Locust's statistics with the plan's figures, ``fail_ratio`` and ``ok`` added
    (a worker has none: its master has the figures). Raises UsageError for settings the
    locustfile cannot use and OpcliError when Locust stops without leaving a summary.
    """
    if not locust_installed():
        raise UsageError(INSTALL)
    check_settings(config, plan, settings)
    work = Path(tempfile.mkdtemp(prefix="opcli-load-"))
    summary_path = work / "summary.json"
    settings.summary = None if plan.worker else str(summary_path)
    env = {
        **os.environ,
        "OPCLI_CONFIG": str(Path(config.path).resolve()),
        "OPCLI_SITE": config.site.name,
        SETTINGS_ENV: settings.to_json(),
        "PYTHONUNBUFFERED": "1",
    }
    try:
        code, interrupted = _run(plan.argv(), env, config.site.token, log)
        summary = _read(summary_path) if not plan.worker else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if summary is None and interrupted is not None:
        return LoadResult(None, code, interrupted)  # stopped before Locust could run anything
    if summary is None and not plan.worker:
        raise OpcliError(
            f"Locust stopped (exit code {code}) without a summary"
            + (": its messages are above" if log else "")
            + ("" if plan.locustfile is None else f" (does {plan.locustfile} import opcli.load?)")
        )
    if summary is None and code != 0:
        raise OpcliError(f"the Locust worker stopped with exit code {code}")
    if summary is not None:
        total = summary["total"]
        ratio = total["failures"] / total["requests"] if total["requests"] else 0.0
        summary = {
            "role": plan.role,
            "users": plan.users,
            "spawn_rate": plan.spawn_rate,
            "run_time": plan.run_time,
            "processes": plan.processes,
            **summary,
            "interrupted": interrupted is not None,
            "fail_ratio": round(ratio, 4),
            "max_fail_ratio": plan.max_fail_ratio,
            "ok": bool(total["requests"]) and ratio <= plan.max_fail_ratio,
        }
    return LoadResult(summary, code, interrupted)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _run(argv: list[str], env: dict[str, str], token: str, log: Log | None) -> tuple[int, int | None]:
    """Run Locust; returns its exit code and 130/143 when a signal stopped the run."""
    proc = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,  # Locust reads keys from a terminal on stdin; never ours
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        # its own session: a Ctrl-C at the terminal reaches opcli only, which passes it on once
        # (a second SIGINT would cut Locust's shutdown, and the summary with it)
        start_new_session=True,
    )
    pump = threading.Thread(target=_pump, args=(proc.stdout, token, log), daemon=True)
    pump.start()
    undo_signals = raise_on(signal.SIGTERM)
    interrupted = None
    try:
        try:
            code = proc.wait()
        except Signalled as exc:
            interrupted, sent = exc.exit_code, exc.signum
        except KeyboardInterrupt:
            interrupted, sent = 130, signal.SIGINT
        if interrupted is not None:
            proc.send_signal(sent)
            try:
                code = proc.wait(60)
            except (KeyboardInterrupt, subprocess.TimeoutExpired):  # (Signalled is a KeyboardInterrupt)
                os.killpg(proc.pid, signal.SIGKILL)  # asked twice: stop now, summary or not
                code = proc.wait()
    finally:
        undo_signals()
        if proc.poll() is None:  # an exception of ours: never leave a load generator running
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        pump.join(10)
        proc.stdout.close()
    return code, interrupted


def _pump(stream: Any, token: str, log: Log | None) -> None:
    masked = mask_token(token)
    for line in stream:
        if log is not None:
            log(line.rstrip("\n").replace(token, masked) if token else line.rstrip("\n"))
