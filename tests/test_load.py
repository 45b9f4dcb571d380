"""``opcli load``: real Locust runs in subprocesses against ``opcli listen`` and a stub panel on loopback."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from opcli.load_runner import INSTALL, parse_ids, parse_run_time, parse_weights
from opcli.protocol import KINDS
from tests.conftest import free_port
from tests.conftest import write_config as _write_config

USERS = 3


def write_config(path: Path, panel_url: str = "http://127.0.0.1:9/operator-api") -> Path:
    """A one-site config with the ids load draws by default (check.user 42, check.bot 7)."""
    return _write_config(path, panel_url, extra_site="    check: {user: 42, bot: 7}\n")


def opcli(*args: Any, timeout: float = 90) -> subprocess.CompletedProcess:
    """``python -m opcli ARGS`` to its end."""
    return subprocess.run(
        [sys.executable, "-m", "opcli", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def start(*args: Any) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "opcli", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def stop(proc: subprocess.Popen) -> None:
    """End an ``opcli load`` still running: SIGTERM, which it passes on to Locust (SIGKILL would orphan it)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def calls(journal: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in journal.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line["event"] == "call"]


@pytest.fixture
def listener(listen_proc, tmp_path):
    """``opcli listen --port 0 --journal FILE``, and a config whose site is that listener."""
    journal = tmp_path / "journal.jsonl"
    proc = listen_proc("-c", write_config(tmp_path / "listen.yaml"), "listen", "--port", "0", "--journal", journal)
    config = write_config(tmp_path / "load.yaml", panel_url=f"{proc.url}/operator-api")
    return proc, config, journal


def test_a_run_counts_what_the_listener_journaled_every_kind_and_content(listener, tmp_path):
    proc, config, journal = listener
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff" + bytes(2000))
    done = opcli(
        "-c", config, "load", "--users", USERS, "--spawn-rate", 100, "--run-time", "2s", "--processes", 2,
        "--mix", "message_sent=3,user-info=1,user_media=1,send-message=1",  # - or _
        "--content", "text=1,photos=1,file=1", "--photo", "https://cdn.example.com/1.jpg", "--attach", photo,
        "--user-ids", "1000-1009", "--bot-ids", "7",
        "--csv", tmp_path / "run", "--html", tmp_path / "report.html", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    total = summary["total"]
    assert total["failures"] == 0 and total["requests"] > 0, summary["errors"]
    assert list(summary["kinds"]) == list(KINDS)  # every kind of the mix ran, in the protocol's order
    assert summary["role"] == "local" and summary["workers"] == 2 and summary["processes"] == 2
    assert summary["ok"] is True and summary["fail_ratio"] == 0
    for figures in [total, *summary["kinds"].values()]:
        assert figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"]  # Locust rounds them: not vs max
    assert sum(k["requests"] for k in summary["kinds"].values()) == total["requests"]
    # every request Locust counted was journaled before its reply; the rest were in flight at the stop
    journaled = calls(journal)
    assert total["requests"] <= len(journaled) <= total["requests"] + USERS
    for kind, figures in summary["kinds"].items():
        of_kind = sum(c["kind"] == kind for c in journaled)
        assert figures["requests"] <= of_kind <= figures["requests"] + USERS
    assert all(c["status"] == 200 and c["token_ok"] for c in journaled)
    sent = [c for c in journaled if c["kind"] == "message_sent"]
    assert {c["fields"]["contact_id"] for c in sent} == {"7"}
    assert all(1000 <= int(c["fields"]["user_id"]) <= 1009 for c in sent)
    assert all(c["fields"]["message"] == "Hello from opcli load" for c in sent)
    with_photos = [c for c in sent if c["attaches"]]
    with_files = [c for c in sent if c["files"]]
    assert with_photos and with_files and len(with_photos) + len(with_files) < len(sent)
    assert with_photos[0]["attaches"] == [
        {"file_url": "https://cdn.example.com/1.jpg", "big": "https://cdn.example.com/1.jpg"}
    ]
    assert {f["size"] for c in with_files for f in c["files"]} == {2003}
    assert (tmp_path / "run_stats.csv").read_text().count("message_sent") == 1
    assert "message_sent" in (tmp_path / "report.html").read_text()
    assert "secret-token-123456" not in done.stdout + done.stderr


def test_a_master_sums_up_the_requests_of_its_two_workers(listener):
    proc, config, journal = listener
    port = free_port()
    master = start(
        "-c", config, "load", "--master", "--expect-workers", 2, "--master-bind-host", "127.0.0.1",
        "--master-port", port, "--users", 4, "--spawn-rate", 100, "--run-time", "2s", "--json",
    )  # fmt: skip
    workers = [
        start("-c", config, "load", "--worker", "--master-host", "127.0.0.1", "--master-port", port, "--user-ids", ids)
        for ids in ("1000-1099", "2000-2099")
    ]
    try:
        out, err = master.communicate(timeout=90)
        ends = [w.communicate(timeout=60) for w in workers]
    finally:
        for p in [master, *workers]:
            stop(p)
    assert master.returncode == 0, err
    assert [w.returncode for w in workers] == [0, 0], [e for _, e in ends]
    summary = json.loads(out)
    assert summary["role"] == "master" and summary["workers"] == 2
    total = summary["total"]
    assert total["failures"] == 0 and total["requests"] > 0
    journaled = calls(journal)
    assert total["requests"] <= len(journaled) <= total["requests"] + 4
    by_worker = [sum(lo <= int(c["fields"]["user_id"]) < lo + 100 for c in journaled) for lo in (1000, 2000)]
    assert all(by_worker) and sum(by_worker) == len(journaled)  # both workers sent; the master counts them all


def test_failures_are_counted_and_over_the_ratio_exit_1(stdlib_server, tmp_path):
    answers = itertools.count()

    def half_refused(received: Any) -> tuple[int, dict[str, str], bytes]:
        ok = next(answers) % 2 == 0
        body = {"status": 1, "message": "", "data": {"message_id": 1}} if ok else {"status": 0, "message": "no bot"}
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()

    stdlib_server.respond = half_refused
    config = write_config(tmp_path / "c.yaml", panel_url=f"{stdlib_server.url}/operator-api")
    done = opcli(
        "-c", config, "load", "--users", 2, "--spawn-rate", 100, "--run-time", 2, "--max-fail-ratio", 0.2, "--json"
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)
    total = summary["total"]
    assert total["requests"] > 10
    assert 0.3 <= total["failures"] / total["requests"] <= 0.7
    assert summary["ok"] is False and summary["fail_ratio"] > summary["max_fail_ratio"] == 0.2
    assert summary["errors"] == [
        {"kind": "message_sent", "error": "HTTP 200, status 0: no bot", "count": total["failures"]}
    ]
    assert f"{total['failures']} of {total['requests']} requests failed" in done.stderr
    assert len(stdlib_server.received) >= total["requests"]
    assert stdlib_server.received[0].field("action") == "message_sent"


def test_failures_against_a_listener_refusing_half_the_messages(listen_proc, tmp_path):
    """The deployed panel's refusal (HTTP 200, "status": 0) as a fault of the listener: failures, exit 1."""
    journal = tmp_path / "journal.jsonl"
    proc = listen_proc(
        "-c", write_config(tmp_path / "listen.yaml"), "listen", "--port", "0", "--journal", journal,
        "--fault", "message_sent:status0,rate=0.5", "--seed", "1",
    )  # fmt: skip
    config = write_config(tmp_path / "load.yaml", panel_url=f"{proc.url}/operator-api")
    done = opcli("-c", config, "load", "--users", 2, "--spawn-rate", 100, "--run-time", 2, "--json")
    assert done.returncode == 1, done.stderr
    total = json.loads(done.stdout)["total"]
    assert total["requests"] > 10 and 0.3 <= total["failures"] / total["requests"] <= 0.7
    faulted = sum(c["fault"] is not None for c in calls(journal))
    assert total["failures"] <= faulted <= total["failures"] + 2  # (calls in flight when the run stopped)


def test_ctrl_c_stops_the_run_with_the_summary_of_what_ran(listen_proc, tmp_path):
    proc = listen_proc("-c", write_config(tmp_path / "listen.yaml"), "listen", "--port", "0", "--json")
    config = write_config(tmp_path / "load.yaml", panel_url=f"{proc.url}/operator-api")
    run = start("-c", config, "load", "--users", 2, "--spawn-rate", 100, "--json")
    try:
        seen = 0
        while seen < 30:  # the listener's stdout: one line per call, as it comes
            line = proc.stdout_lines.get(timeout=60)
            seen += json.loads(line)["event"] == "call"
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=60)
    finally:
        stop(run)
    assert run.returncode == 130, err
    summary = json.loads(out)
    assert summary["interrupted"] is True and summary["run_time"] is None
    assert summary["total"]["requests"] >= 1 and summary["total"]["failures"] == 0


def test_an_unreachable_site_is_exit_3_with_nothing_on_stdout(tmp_path):
    config = write_config(tmp_path / "c.yaml", panel_url=f"http://127.0.0.1:{free_port()}/operator-api")
    done = opcli("-c", config, "load", "--users", 1, "--run-time", 1, "--json")
    assert done.returncode == 3, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines()[-1].startswith("opcli: error: no request reached the site: cannot reach http://")


def test_your_own_locustfile_subclasses_the_panel_user(listener, tmp_path):
    proc, config, journal = listener
    mine = tmp_path / "mine.py"
    mine.write_text(
        "from opcli.load import PanelUser\n\n"
        "class Operator(PanelUser):\n"
        "    mix = {'user-info': 1}\n"  # - or _, as on the command line
        "    user_ids = range(42, 44)\n"
    )
    done = opcli("-c", config, "load", "--locustfile", mine, "--users", 2, "--spawn-rate", 100, "--run-time", 2)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("user_info: ") and lines[-1].startswith("total: ") and len(lines) == 2
    assert ", 0 failures, " in lines[-1]
    assert {c["fields"]["user_id"] for c in calls(journal)} == {"42", "43"}


def test_without_locust_it_says_how_to_install_it():
    code = (
        "import sys\n"
        "sys.modules['locust'] = None  # what Python does for a package that is not there: import fails\n"
        "from opcli.cli import main\n"
        "sys.argv = ['opcli', 'load', '--json']\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == f"opcli: error: {INSTALL}\n"
    assert "pip install 'opcli[load]'" in INSTALL


@pytest.mark.parametrize(
    "args, says",
    [
        (["--mix", "message_sent=1,fetch=2"], "--mix 'message_sent=1,fetch=2': expected NAME=WEIGHT"),
        (["--mix", "user_info"], "expected NAME=WEIGHT,... with NAME one of message_sent"),
        (["--mix", "user_info=-1"], "the weight of user_info must be a number >= 0"),
        (["--mix", "user_info=0,user_media=0"], "at least one weight must be above 0"),
        (["--mix", "user_info=1,user_info=2"], "user_info is given twice"),
        (["--content", "text=1,photos=1"], "give the photos with --photo URL"),
        (["--content", "file=1"], "give the file with --attach FILE"),
        (["--photo", "ftp://x/1.jpg"], "must start with http:// or https://"),
        (["--run-time", "soon"], "--run-time 'soon': expected seconds or a span"),
        (["--user-ids", "9-3"], "--user-ids 9-3: the first id is above the last"),
        (["--bot-ids", "x"], "--bot-ids: 'x' is not a whole number"),
        (["--locustfile", "missing.py"], "--locustfile missing.py: no such file"),
        (["--attach", "missing.bin"], "cannot read file missing.bin: No such file or directory"),
    ],
)
def test_bad_input_is_exit_2_before_locust_starts(cli, tmp_path, args, says):
    result = cli("-c", write_config(tmp_path / "c.yaml"), "load", *args, "--json")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("opcli: error: ") and says in result.stderr


@pytest.mark.parametrize(
    "args, says",
    [
        (["--master", "--worker"], "choose --master or --worker"),
        (["--processes", "0"], "give -1 (one per core) or a number of processes"),
        (["--master", "--processes", "2"], "a --master runs no users itself"),
        (["--expect-workers", "2"], "--expect-workers only go with --master"),
        (["--master-host", "10.0.0.1"], "--master-host only go with --worker"),
        (["--worker", "--users", "5", "--run-time", "1m"], "a worker takes --users, --run-time from its master"),
    ],
)
def test_options_of_another_role_are_usage_errors(cli, tmp_path, args, says):
    result = cli("-c", write_config(tmp_path / "c.yaml"), "load", *args)
    assert result.exit_code == 2
    assert says in " ".join(result.stderr.split())


def test_a_webhook_in_the_mix_needs_its_url(cli, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("sites:\n  s:\n    panel_url: http://127.0.0.1:9/p\n    token: t\n")
    result = cli("-c", config, "load", "--mix", "user_info=1", "--user-ids", "1")
    assert result.exit_code == 2
    assert "site 's' has no webhooks.user_info" in result.stderr


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("2m", 120), ("1h30m", 5400), ("1m 5s", 65)])
def test_run_time_reads_locust_spans(text, seconds):
    assert parse_run_time(text) == seconds


def test_weights_keep_the_kinds_above_zero_and_ids_read_one_or_a_range():
    assert parse_weights("message_sent=8, user_info=1,user_media=0.5,send_message=0", KINDS, "--mix") == {
        "message_sent": 8.0,
        "user_info": 1.0,
        "user_media": 0.5,
    }
    assert parse_ids("1000-1999", "--user-ids") == (1000, 1999)
    assert parse_ids("7", "--bot-ids") == (7, 7)
