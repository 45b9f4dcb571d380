"""Start-up: `opcli --version` and `--help` against HTTPie's `http --version`, from one venv.

Budgets: --version at most 0.5x, --help at most 0.8x the baseline's median. Run:
    python3 benchmarks/bench_startup.py
"""

from __future__ import annotations

from common import Table, median_seconds, venv

RUNS = 21


def main() -> None:
    bin_dir = venv()
    opcli, http = str(bin_dir / "opcli"), str(bin_dir / "http")
    for cmd in ([opcli, "--version"], [http, "--version"]):  # warm the page cache first
        median_seconds(cmd, 3)
    # interleave the contenders so that noise hits them alike
    results: dict[str, list[float]] = {"http": [], "version": [], "help": []}
    for _ in range(3):
        results["http"].append(median_seconds([http, "--version"], RUNS // 3))
        results["version"].append(median_seconds([opcli, "--version"], RUNS // 3))
        results["help"].append(median_seconds([opcli, "--help"], RUNS // 3))
    baseline = sorted(results["http"])[1] * 1000
    table = Table(f"Start-up, median of {RUNS} runs each (ms)")
    table.add(
        "opcli --version", sorted(results["version"])[1] * 1000, "ms", "http --version", baseline, "<= 0.50x", limit=0.5
    )
    table.add(
        "opcli --help", sorted(results["help"])[1] * 1000, "ms", "http --version", baseline, "<= 0.80x", limit=0.8
    )
    table.finish()


if __name__ == "__main__":
    main()
