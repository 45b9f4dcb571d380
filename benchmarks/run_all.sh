#!/usr/bin/env bash
# Run every benchmark; exit non-zero when any budget is missed. Not part of the test suite.
set -u
cd "$(dirname "$0")"
status=0
for bench in bench_startup.py bench_batch.py bench_listener.py bench_memory.py bench_load.py; do
  python3 "$bench" || status=1
done
exit $status
