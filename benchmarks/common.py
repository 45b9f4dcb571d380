"""Shared by the benchmark scripts: a venv with opcli and HTTPie, wrk, servers, the result table.

Benchmarks are run by hand (not by the test suite); each prints every figure next to its
baseline, measured in the same run, and exits 1 when a budget is missed.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("OPCLI_BENCH_VENV", Path(tempfile.gettempdir()) / "opcli-bench-venv"))
BIN = VENV / "bin"


def venv(*extra: str) -> Path:
    """A venv holding this project (installed as a user would) and HTTPie; reused between runs."""
    if not (BIN / "python").exists():
        print(f"creating {VENV} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run(
        [str(BIN / "pip"), "install", "-q", "--disable-pip-version-check", str(ROOT), "httpie", *extra], check=True
    )
    return BIN


def scratch(prefix: str) -> Path:
    """A work folder for this run, removed when the script exits (a listener run's journals take gigabytes)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, work, True)
    return work


def need(command: str, package: str) -> str:
    """A command from Debian's packages, installed when missing."""
    found = shutil.which(command)
    if found:
        return found
    print(f"installing {package} ...", file=sys.stderr)
    subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, stdout=subprocess.DEVNULL)
    return shutil.which(command) or sys.exit(f"{command} did not install")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    sys.exit(f"nothing listens on port {port}")


def config_for(port: int, directory: Path, max_body_bytes: int | None = None) -> Path:
    """The built-in config, served on ``port`` instead of 8765 (and a larger body limit if asked)."""
    text = (ROOT / "opcli" / "defaults.yaml").read_text().replace(":8765/", f":{port}/")
    if max_body_bytes:
        text = text.replace("max_body_bytes: 104857600", f"max_body_bytes: {max_body_bytes}")
    path = directory / "opcli.yaml"
    path.write_text(text)
    return path


def median_seconds(cmd: list[str], runs: int, env: dict | None = None) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


class Table:
    """Rows of ``figure, value, baseline, ratio, budget``; ``finish()`` exits 1 on a missed budget."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.rows: list[tuple[str, str, str, str, str, str]] = []
        self.missed = False

    def add(
        self,
        name: str,
        value: float,
        unit: str,
        baseline_name: str,
        baseline: float | None,
        budget: str | None = None,
        higher_is_better: bool = False,
        limit: float | None = None,
    ) -> None:
        ratio = value / baseline if baseline else None
        ok = "-"
        if budget is not None and limit is not None:
            measured = ratio if baseline else value
            good = measured >= limit if higher_is_better else measured <= limit
            ok = "PASS" if good else "MISS"
            self.missed |= not good
        self.rows.append(
            (
                name,
                f"{value:,.1f} {unit}",
                f"{baseline_name} {baseline:,.1f} {unit}" if baseline else baseline_name,
                f"{ratio:.2f}x" if ratio else "-",
                budget or "-",
                ok,
            )
        )

    def check(self, name: str, good: bool, detail: str) -> None:
        self.rows.append((name, detail, "-", "-", "must hold", "PASS" if good else "MISS"))
        self.missed |= not good

    def finish(self) -> None:
        headers = ("figure", "opcli", "baseline (same run)", "ratio", "budget", "")
        widths = [max(len(str(r[i])) for r in [headers, *self.rows]) for i in range(6)]
        print(f"\n{self.title}")
        for row in [headers, *self.rows]:
            print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        sys.exit(1 if self.missed else 0)
