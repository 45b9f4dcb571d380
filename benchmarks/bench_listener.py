"""Listener: wrk (32 connections) POSTing urlencoded user-info calls to `opcli listen --journal`,
against a plain Starlette app doing the same work the obvious way (`await request.form()`, a
JSON reply, one journal line) and a bare ASGI app, all under the same uvicorn settings.

Budget: opcli at least 0.8x the plain app's requests/s; zero non-2xx and zero socket errors;
the journal holds every request wrk counted (up to one more per connection). Run:
    python3 benchmarks/bench_listener.py
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, Table, config_for, free_port, need, venv, wait_port

DURATION, CONNECTIONS, ROUNDS = 8, 32, 3


def wrk(wrk_bin: str, url: str, script: Path, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        [wrk_bin, "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "non2xx": int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0,
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
    }


def lines(path: Path) -> int:
    """Journal lines once they stop growing (calls in flight when wrk stopped are still served)."""
    count, stable_since = -1, time.monotonic()
    while time.monotonic() - stable_since < 0.5:
        now = sum(1 for _ in path.open()) if path.exists() else 0
        if now != count:
            count, stable_since = now, time.monotonic()
        time.sleep(0.1)
    return count


def serve(kind: str, bin_dir: Path, work: Path, port: int) -> tuple[subprocess.Popen, Path]:
    journal = work / f"{kind}-{port}.jsonl"
    if kind == "opcli":
        cmd = [str(bin_dir / "opcli"), "-c", str(config_for(port, work)), "listen", "--journal", str(journal)]
    else:
        cmd = [str(bin_dir / "python"), str(ROOT / "benchmarks" / "baseline_apps.py"), kind, str(port), str(journal)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, journal


def main() -> None:
    bin_dir = venv()
    wrk_bin = need("wrk", "wrk")
    work = Path(tempfile.mkdtemp(prefix="opcli-bench-listen-"))
    script = work / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.body = "token=dev-token&user_id=42"\n'
        'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
    )
    results: dict[str, list[dict[str, float]]] = {"bare": [], "plain": [], "opcli": []}
    journal_ok = True
    for _ in range(ROUNDS):
        for kind in results:
            port = free_port()
            proc, journal = serve(kind, bin_dir, work, port)
            try:
                wrk(wrk_bin, f"http://127.0.0.1:{port}/hooks/user-info", script, 1)  # warm-up
                before = lines(journal)
                result = wrk(wrk_bin, f"http://127.0.0.1:{port}/hooks/user-info", script, DURATION)
                if kind == "opcli":
                    journaled = lines(journal) - before
                    result["journaled"] = journaled
                    journal_ok &= result["requests"] <= journaled <= result["requests"] + CONNECTIONS
            finally:
                proc.terminate()
                proc.wait(30)
            results[kind].append(result)
            print(
                f"{kind:>5}: {result['rps']:9.1f} req/s, {result['requests']} requests, "
                f"non-2xx {result['non2xx']}, socket errors {result['socket_errors']}"
                + (f", journaled {result['journaled']}" if "journaled" in result else ""),
                file=sys.stderr,
            )
    rps = {kind: statistics.median(r["rps"] for r in rounds) for kind, rounds in results.items()}
    table = Table(f"Listener: wrk -c{CONNECTIONS} -d{DURATION}s, urlencoded user-info, median of {ROUNDS} (req/s)")
    table.add(
        "opcli listen --journal",
        rps["opcli"],
        "req/s",
        "plain Starlette",
        rps["plain"],
        ">= 0.80x",
        higher_is_better=True,
        limit=0.8,
    )
    table.add("opcli listen --journal", rps["opcli"], "req/s", "bare ASGI", rps["bare"])
    bad = sum(r["non2xx"] + r["socket_errors"] for r in results["opcli"])
    table.check("zero non-2xx, zero socket errors", bad == 0, f"{bad} in {ROUNDS} runs")
    table.check(
        "journal holds every request",
        journal_ok,
        ", ".join(f"{r['journaled']}/{r['requests']}" for r in results["opcli"]),
    )
    table.finish()


if __name__ == "__main__":
    main()
