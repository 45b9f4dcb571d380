"""Listener throughput: wrk (1 thread, 32 connections) against `opcli listen --journal`, a plain
Starlette app doing the same work the obvious way (`await request.form()`, a JSON reply, one
journal line), and a bare ASGI app, all under the same uvicorn settings, in the same run.

Two workloads: urlencoded user-info calls, and multipart `message_sent` with two bracket photos.
Budgets (issue 18), per workload, medians of ROUNDS runs: opcli at least 0.40x the bare app and
at least 1.5x the plain app; zero non-2xx and zero socket errors; the journal holds every request
wrk counted (up to one more per connection, in flight when wrk stopped); and with an inspector
event stream (`/_opcli/events`) open during the run, at most 10% slower. p50/p99 latency beside
throughput. Run:
    python3 benchmarks/bench_listener.py
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, Table, config_for, free_port, need, scratch, venv, wait_port

DURATION, CONNECTIONS, ROUNDS = 8, 32, 3
BOUNDARY = "opclibenchboundary"


def multipart_body() -> str:
    fields = [
        ("token", "dev-token"),
        ("action", "message_sent"),
        ("user_id", "42"),
        ("contact_id", "7"),
        ("message", "Hello, how are you today?"),
        ("attaches[0][file_url]", "https://cdn.example.com/p/1.jpg"),
        ("attaches[0][big]", "https://cdn.example.com/p/1_200.jpg"),
        ("attaches[1][file_url]", "https://cdn.example.com/p/2.jpg"),
        ("attaches[1][big]", "https://cdn.example.com/p/2_200.jpg"),
    ]
    parts = "".join(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields)
    return parts + f"--{BOUNDARY}--\r\n"


WORKLOADS = {
    "user-info urlencoded": ("/hooks/user-info", "application/x-www-form-urlencoded", "token=dev-token&user_id=42"),
    "message_sent multipart, 2 photos": (
        "/operator-api",
        f"multipart/form-data; boundary={BOUNDARY}",
        multipart_body(),
    ),
}


def lua(path: Path, content_type: str, body: str) -> Path:
    escaped = body.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "\\r").replace("\n", "\\n")
    path.write_text(f'wrk.method = "POST"\nwrk.body = "{escaped}"\nwrk.headers["Content-Type"] = "{content_type}"\n')
    return path


def wrk(wrk_bin: str, url: str, script: Path, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        [wrk_bin, "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)

    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "non2xx": int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0,
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
        "p50": ms("50"),
        "p99": ms("99"),
    }


def lines(path: Path) -> int:
    """Journal lines once they stop growing (calls in flight when wrk stopped are still served)."""
    count, stable_since = -1, time.monotonic()
    while time.monotonic() - stable_since < 0.5:
        with path.open("rb") if path.exists() else open(os.devnull, "rb") as journal:
            now = sum(1 for _ in journal)
        if now != count:
            count, stable_since = now, time.monotonic()
        time.sleep(0.1)
    return count


def serve(kind: str, bin_dir: Path, work: Path, port: int) -> tuple[subprocess.Popen, Path]:
    journal = work / f"{kind}-{port}.jsonl"
    if kind.startswith("opcli"):
        cmd = [str(bin_dir / "opcli"), "-c", str(config_for(port, work)), "listen", "--journal", str(journal)]
    else:
        cmd = [str(bin_dir / "python"), str(ROOT / "benchmarks" / "baseline_apps.py"), kind, str(port), str(journal)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, journal


def measure(kind: str, bin_dir: Path, work: Path, wrk_bin: str, path: str, script: Path) -> dict[str, float]:
    port = free_port()
    proc, journal = serve(kind, bin_dir, work, port)
    stream = None
    try:
        url = f"http://127.0.0.1:{port}{path}"
        wrk(wrk_bin, url, script, 1)  # warm-up
        if kind == "opcli+events":  # a browser's inspector following the journal live
            stream = subprocess.Popen(
                ["curl", "-sN", f"http://127.0.0.1:{port}/_opcli/events"], stdout=subprocess.DEVNULL
            )
            time.sleep(0.3)
        before = lines(journal)
        result = wrk(wrk_bin, url, script, DURATION)
        if kind.startswith("opcli"):
            result["journaled"] = lines(journal) - before
    finally:
        if stream is not None:
            stream.terminate()
            stream.wait(10)
        proc.terminate()
        proc.wait(30)
        journal.unlink(missing_ok=True)  # tens of MB each: not left for the next runs' disk to write back
    return result


def main() -> None:
    bin_dir = venv()
    wrk_bin = need("wrk", "wrk")
    need("curl", "curl")
    work = scratch("opcli-bench-listen-")
    table = Table(f"Listener: wrk -t1 -c{CONNECTIONS} -d{DURATION}s, median of {ROUNDS} rounds (req/s)")
    kinds = ("bare", "plain", "opcli", "opcli+events")
    for name, (path, content_type, body) in WORKLOADS.items():
        script = lua(work / f"{path.strip('/').replace('/', '-')}.lua", content_type, body)
        results: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
        for _ in range(ROUNDS):
            for kind in kinds:  # interleaved, so that noise hits them alike
                result = measure(kind, bin_dir, work, wrk_bin, path, script)
                results[kind].append(result)
                print(
                    f"{name} | {kind:>12}: {result['rps']:9.1f} req/s, p50 {result['p50']:.2f} ms, "
                    f"p99 {result['p99']:.2f} ms, {result['requests']} requests, non-2xx {result['non2xx']}, "
                    f"socket errors {result['socket_errors']}"
                    + (f", journaled {result['journaled']}" if "journaled" in result else ""),
                    file=sys.stderr,
                )
        med = {
            kind: {k: statistics.median(r[k] for r in rounds) for k in ("rps", "p50", "p99")}
            for kind, rounds in results.items()
        }
        opcli = med["opcli"]["rps"]
        table.add(f"{name}: opcli", opcli, "req/s", "bare ASGI", med["bare"]["rps"], ">= 0.40x", True, 0.40)
        table.add(f"{name}: opcli", opcli, "req/s", "plain Starlette", med["plain"]["rps"], ">= 1.50x", True, 1.5)
        table.add(
            f"{name}: opcli, events open", med["opcli+events"]["rps"], "req/s", "opcli", opcli, ">= 0.90x", True, 0.9
        )
        for kind in kinds:
            table.add(f"{name}: {kind} p50 / p99", med[kind]["p50"], "ms", f"p99 {med[kind]['p99']:.2f} ms", None)
        runs = results["opcli"] + results["opcli+events"]
        bad = sum(r["non2xx"] + r["socket_errors"] for r in runs)
        table.check(f"{name}: zero non-2xx, zero socket errors", bad == 0, f"{bad} in {len(runs)} runs")
        table.check(
            f"{name}: journal holds every request",
            all(r["requests"] <= r["journaled"] <= r["requests"] + CONNECTIONS for r in runs),
            ", ".join(f"{int(r['journaled'])}/{int(r['requests'])}" for r in runs),
        )
    table.finish()


if __name__ == "__main__":
    main()
