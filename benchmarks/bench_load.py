"""Load: messages/s of `opcli load` (one process, --processes 1, --processes 2) against `opcli listen
--journal` and against a bare ASGI sink, side by side with `send --batch` on the same target in the
same run, with the CPU each side used, to tell where the bottleneck is.

No budget: the figures are reported. Checks: no failed request, and the listener journaled every
request Locust counted (plus at most one in flight per user when the run stopped). Run:
    python3 benchmarks/bench_load.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, Table, config_for, free_port, scratch, venv, wait_port

SECONDS, USERS, MESSAGES = 10, 16, 30000
WINDOW = (4.0, 8.0)  # seconds after a sender started: CPU is sampled in between, at full speed
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int) -> float:
    """CPU seconds a running process used so far (user + system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def tree_cpu(root: int) -> float:
    """CPU seconds used so far by a process and its descendants (opcli, Locust, its forked workers)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue  # gone meanwhile
    tree, total = {root}, 0.0
    while grown := {pid for pid, parent in parents.items() if parent in tree} - tree:
        tree |= grown
    for pid in tree:
        try:
            total += cpu_of(pid)
        except OSError:
            pass
    return total


def journaled(path: Path | None) -> int:
    return sum(1 for _ in path.open()) if path and path.exists() else 0


def measure(cmd: list[str], env: dict[str, str], server: subprocess.Popen, journal: Path | None) -> dict[str, float]:
    """Run one sender to its end: its summary, and the cores each side used in a steady window."""
    before = journaled(journal)
    out_file, err_file = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    # files, not pipes: a sender blocked on a full pipe would sit idle in the window
    sender = subprocess.Popen(cmd, env=env, stdout=out_file, stderr=err_file, text=True)
    time.sleep(WINDOW[0])  # past start-up (imports, Locust's workers joining)
    start = (tree_cpu(sender.pid), cpu_of(server.pid), time.perf_counter())
    time.sleep(WINDOW[1] - WINDOW[0])
    end = (tree_cpu(sender.pid), cpu_of(server.pid), time.perf_counter())
    sender.wait()
    out_file.seek(0)
    err_file.seek(0)
    out, err = out_file.read(), err_file.read()
    if sender.returncode not in (0, 1):  # 1: some requests failed, reported below
        sys.exit(f"{' '.join(cmd[1:3])} failed ({sender.returncode}): {err[-2000:]}")
    lines = out.splitlines()
    summary = json.loads(lines[-1])
    for line in lines[:-1]:
        if '"ok": false' in line:
            print(f"failed: {line}", file=sys.stderr)
    for error in summary.get("errors", []):
        print(f"failed: {error}", file=sys.stderr)
    window = end[2] - start[2]
    return {
        "summary": summary.get("summary", summary),
        "sender_cores": (end[0] - start[0]) / window,
        "server_cores": (end[1] - start[1]) / window,
        "journaled": journaled(journal) - before,
    }


def main() -> None:
    bin_dir = venv(f"{ROOT}[load]")
    opcli = str(bin_dir / "opcli")
    work = scratch("opcli-bench-load-")
    batch = work / "messages.jsonl"
    batch.write_text(
        "".join(
            json.dumps(
                {
                    "user": 1000 + i % 1000,
                    "bot": 7,
                    "message": "Hello from opcli load",
                    "photos": [{"file_url": "https://cdn.example.com/1.jpg"}] if i % 4 == 0 else [],
                }
            )
            + "\n"
            for i in range(MESSAGES)
        )
    )
    same_messages = [
        "--mix",
        "message_sent=1",
        "--content",
        "text=3,photos=1",
        "--photo",
        "https://cdn.example.com/1.jpg",
    ]
    load = [opcli, "load", "--users", str(USERS), "--spawn-rate", "1000", "--run-time", f"{SECONDS}s"]
    load += ["--user-ids", "1000-1999", "--bot-ids", "7", *same_messages, "--json"]
    senders = {
        "send --batch": [opcli, "send", "--batch", str(batch), "--concurrency", str(USERS), "--json"],
        "load, one process": load,
        "load --processes 1": [*load, "--processes", "1"],
        "load --processes 2": [*load, "--processes", "2"],
    }
    results: dict[tuple[str, str], dict[str, float]] = {}
    for target in ("opcli listen --journal", "bare ASGI sink"):
        port = free_port()
        config = config_for(port, work)
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "OPCLI_CONFIG": str(config), "HOME": str(work)}
        journal = work / f"journal-{port}.jsonl" if target.startswith("opcli") else None
        if journal:
            server_cmd = [opcli, "listen", "--journal", str(journal)]
        else:
            server_cmd = [str(bin_dir / "python"), str(ROOT / "benchmarks" / "baseline_apps.py"), "bare", str(port)]
        server = subprocess.Popen(server_cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            for name, cmd in senders.items():
                result = measure(cmd, env, server, journal)
                results[target, name] = result
                s = result["summary"]
                rate = s["messages_per_second"] if "messages_per_second" in s else s["total"]["requests_per_second"]
                sent = s["sent"] if "sent" in s else s["total"]["requests"]
                failed = s["failed"] if "failed" in s else s["total"]["failures"]
                result.update(rate=rate, sent=sent, failed=failed)
                print(
                    f"{target:>22} <- {name:<19} {rate:8.1f} msg/s  {sent:6} sent, {failed} failed in "
                    f"{s['seconds']:5.1f} s; cores used: sender {result['sender_cores']:.2f}, "
                    f"server {result['server_cores']:.2f}",
                    file=sys.stderr,
                )
        finally:
            server.terminate()
            server.wait(30)
    table = Table(
        f"Load: {USERS} users for {SECONDS} s (send --batch: {MESSAGES} messages at concurrency {USERS}); "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end"
    )
    for target in ("opcli listen --journal", "bare ASGI sink"):
        baseline = results[target, "send --batch"]["rate"]
        for name in senders:
            if name != "send --batch":
                table.add(f"{name} -> {target}", results[target, name]["rate"], "msg/s", "send --batch", baseline)
        for name in senders:
            r = results[target, name]
            table.add(f"  cores used: {name}", r["sender_cores"], "sender", f"server {r['server_cores']:.2f}", None)
    table.check(
        "no failed request",
        all(r["failed"] == 0 for r in results.values()),
        f"{sum(r['failed'] for r in results.values())} failed",
    )
    counted = [
        (r["sent"], r["journaled"])
        for (target, name), r in results.items()
        if target.startswith("opcli") and "load" in name
    ]
    table.check(
        "the journal holds what Locust counted",
        all(sent <= got <= sent + USERS for sent, got in counted),
        ", ".join(f"{got}/{sent}" for sent, got in counted),
    )
    table.finish()


if __name__ == "__main__":
    main()
