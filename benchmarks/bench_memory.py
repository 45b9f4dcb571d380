"""Memory: `opcli send --attach` of a 1 GiB file to `opcli listen --save-dir`.

Budget: peak RSS of each process under 150 MB, and the saved file's sha256 equal to the
source's. Needs about 2.1 GiB of free disk in the temp dir. Run:
    python3 benchmarks/bench_memory.py
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import Table, config_for, free_port, scratch, venv, wait_port

SIZE = 1024**3
BUDGET_MB = 150


def wait_rss(proc: subprocess.Popen) -> tuple[int, float]:
    """Exit code and peak RSS (MB) of a child, from the kernel's own accounting."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024  # KiB on Linux


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> None:
    bin_dir = venv()
    work = scratch("opcli-bench-mem-")
    if shutil.disk_usage(work).free < 2.2 * SIZE:
        sys.exit(f"not enough free disk in {work} for 2 GiB")
    source = work / "big.bin"
    block = os.urandom(4 * 1024 * 1024)
    with open(source, "wb") as f:
        for i in range(SIZE // len(block)):
            f.write(block[i % 7 :] + block[: i % 7])  # no two blocks alike
    expected = sha256(source)
    port = free_port()
    env = {**os.environ, "OPCLI_CONFIG": str(config_for(port, work, max_body_bytes=2 * SIZE))}
    saved, journal = work / "saved", work / "journal.jsonl"
    listener = subprocess.Popen(
        [str(bin_dir / "opcli"), "listen", "--count", "1", "--save-dir", str(saved), "--journal", str(journal)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    wait_port(port)
    started = time.perf_counter()
    sender = subprocess.Popen(
        [
            str(bin_dir / "opcli"),
            "send",
            "--user",
            "42",
            "--bot",
            "7",
            "-m",
            "1 GiB",
            "--attach",
            str(source),
            "--timeout",
            "300",
        ],
        stdout=subprocess.DEVNULL,
        env=env,
    )
    send_code, send_mb = wait_rss(sender)
    seconds = time.perf_counter() - started
    listen_code, listen_mb = wait_rss(listener)
    if send_code or listen_code:
        sys.exit(f"send exited {send_code}, listen {listen_code}; journal: {journal.read_text()}")
    entry = json.loads(journal.read_text().splitlines()[1])
    saved_file = Path(entry["files"][0]["saved_as"])
    table = Table(f"Memory: a 1 GiB attach, sent and saved ({seconds:.1f} s, {SIZE / seconds / 1024**2:.0f} MiB/s)")
    table.add(
        "opcli send --attach, peak RSS",
        send_mb,
        "MB",
        f"budget {BUDGET_MB} MB",
        None,
        f"< {BUDGET_MB} MB",
        limit=BUDGET_MB,
    )
    table.add(
        "opcli listen --save-dir, peak RSS",
        listen_mb,
        "MB",
        f"budget {BUDGET_MB} MB",
        None,
        f"< {BUDGET_MB} MB",
        limit=BUDGET_MB,
    )
    table.check(
        "saved file's sha256 equals the source's",
        sha256(saved_file) == expected == entry["files"][0]["sha256"],
        f"{expected[:16]}… ({entry['files'][0]['size']} bytes)",
    )
    table.finish()


if __name__ == "__main__":
    main()
