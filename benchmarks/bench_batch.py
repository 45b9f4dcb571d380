"""Batch: 2,000 messages to `opcli listen` (journal on), `opcli send --batch` against a shell
loop of `curl -F` sending the same messages. Budget: at least 10x the loop's throughput.

Throughput is messages over the whole command's wall time, start-up included. Run:
    python3 benchmarks/bench_batch.py
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time

from common import Table, config_for, free_port, median_seconds, need, scratch, venv, wait_port

MESSAGES = 2000


def main() -> None:
    bin_dir = venv()
    need("curl", "curl")
    work = scratch("opcli-bench-batch-")
    port = free_port()
    config = config_for(port, work)
    url = f"http://127.0.0.1:{port}/operator-api"
    messages = [
        {
            "user": 1000 + i,
            "bot": 7,
            "message": f"Hello #{i}, how are you today?",
            "photos": [
                {"file_url": f"https://cdn.example.com/p/{i}.jpg", "big": f"https://cdn.example.com/p/{i}_200.jpg"}
            ]
            if i % 4 == 0
            else [],
        }
        for i in range(MESSAGES)
    ]
    batch = work / "messages.jsonl"
    batch.write_text("".join(json.dumps(m) + "\n" for m in messages))
    loop = work / "curl-loop.sh"
    lines = ["#!/bin/bash", "set -e"]
    for m in messages:
        fields = [
            "token=dev-token",
            "action=message_sent",
            f"user_id={m['user']}",
            f"contact_id={m['bot']}",
            f"message={m['message']}",
        ]
        for k, p in enumerate(m["photos"]):
            fields += [f"attaches[{k}][file_url]={p['file_url']}", f"attaches[{k}][big]={p['big']}"]
        args = " ".join(f"--form-string {shlex.quote(f)}" for f in fields)
        lines.append(f"curl -sS -o /dev/null --fail {args} {url}")
    loop.write_text("\n".join(lines) + "\n")

    journal = work / "journal.jsonl"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "OPCLI_CONFIG": str(config)}
    listener = subprocess.Popen(
        [str(bin_dir / "opcli"), "listen", "--journal", str(journal)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        wait_port(port)
        started = time.perf_counter()
        subprocess.run(["bash", str(loop)], check=True)
        curl_seconds = time.perf_counter() - started
        opcli_seconds = median_seconds([str(bin_dir / "opcli"), "send", "--batch", str(batch)], 3, env=env)
    finally:
        listener.terminate()
        listener.wait(30)
    calls = [json.loads(line) for line in journal.read_text().splitlines()[1:]]
    table = Table(f"Batch: {MESSAGES} messages to opcli listen with --journal (messages/s, whole command)")
    table.add(
        "send --batch (median of 3)",
        MESSAGES / opcli_seconds,
        "msg/s",
        "curl -F loop",
        MESSAGES / curl_seconds,
        ">= 10x",
        higher_is_better=True,
        limit=10,
    )
    table.check(
        "every message arrived",
        len(calls) == MESSAGES * 4 and all(c["status"] == 200 for c in calls),
        f"{len(calls)} calls journaled, {sum(c['status'] != 200 for c in calls)} rejected",
    )
    print(f"(curl loop {curl_seconds:.2f} s; send --batch {opcli_seconds:.2f} s; files in {work})", file=sys.stderr)
    table.finish()


if __name__ == "__main__":
    main()
