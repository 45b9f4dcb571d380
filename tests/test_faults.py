"""Faults on demand (`--fault SPEC`, `listen.faults`): each action as a real client sees it.

The listener runs for real (a ListenerThread, or `opcli listen` as a subprocess); the clients are
curl, httpx and opcli's own commands. Timings are only ever bounded from below.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from opcli.listener import ListenerThread
from opcli.listener.faults import Faults, parse_rule
from tests.conftest import write_config

INFO = ["-d", "token=dev-token", "-d", "user_id=42"]


def run_curl(*args: str) -> subprocess.CompletedProcess:
    """The real curl, whatever its exit code."""
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def listener():
    with ListenerThread() as running:
        yield running


@pytest.fixture
def site_config(listener, isolated) -> Path:
    """A config whose site is the running listener (the built-in token)."""
    return write_config(isolated / "site.yaml", panel_url=f"{listener.url}/operator-api", token="dev-token")


# --- the grammar ------------------------------------------------------------------------------


def test_specs_parse_as_written():
    rule = parse_rule("user-media:malformed,user=42,times=2,rate=0.5,delay=1.5")
    assert (rule.kind, rule.action, rule.user, rule.times, rule.rate, rule.delay) == (
        "user_media",
        "malformed",
        42,
        2,
        0.5,
        1.5,
    )
    assert rule.spec == "user-media:malformed,user=42,times=2,rate=0.5,delay=1.5"
    assert parse_rule("*:reset").kind is None
    assert parse_rule("message_sent:status0").value == "Invalid API token"
    assert parse_rule("message_sent:status0=Try later").value == "Try later"
    assert parse_rule("user_info:status=503").value == 503
    assert parse_rule("user_info:dribble=2").value == 2.0


@pytest.mark.parametrize(
    "spec, problem",
    [
        ("x:y", "unknown kind 'x' (expected one of message_sent, send_message, user_info, user_media, *)"),
        ("user_info:y", "unknown action 'y' (expected one of delay, status, html, status0, malformed, empty,"),
        ("user_info", "expected KIND:ACTION[,OPTION]..."),
        ("user_info:delay", "action 'delay' needs seconds (delay=SECONDS)"),
        ("user_info:delay=soon", "delay: expected seconds (a number, 0 or more), got 'soon'"),
        ("user_info:status=204", "status: expected an HTTP status from 200 to 599"),
        ("user_info:reset=1", "action 'reset' takes no value"),
        ("user_info:reset,rate=0", "rate: expected a fraction above 0 and at most 1, got '0'"),
        ("user_info:reset,times=0", "times: expected a whole number of at least 1, got '0'"),
        ("user_info:reset,user=abc", "user: 'abc' is not a whole number"),
        ("user_info:reset,times=1,times=2", "option 'times' is given twice"),
        ("user_info:reset,often=1", "unknown option 'often' (expected one of rate, times, user, delay)"),
        ("user_info:reset,", "an empty option"),
    ],
)
def test_a_bad_spec_names_the_bad_part(cli, spec, problem):
    with pytest.raises(ValueError, match="^" + re.escape(repr(spec))):
        Faults([spec])
    result = cli("listen", "--port", "0", "--fault", "user_info:delay=1", "--fault", spec)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"opcli: error: --fault {spec!r}: {problem}")
    assert "Traceback" not in result.stderr and "Ready" not in result.stderr


def test_bad_faults_in_the_config_have_positions(cli, isolated):
    config = write_config(
        isolated / "c.yaml", listen="listen:\n  seed: -1\n  faults:\n    - user_info:delay=1\n    - 'user_info:nap'\n"
    )
    result = cli("-c", config, "config", "validate")
    assert result.exit_code == 2
    assert f"{config}:12:9: listen.seed: expected a whole number of at least 0, got -1" in result.stderr
    assert f"{config}:15:7: listen.faults[1]: unknown action 'nap' (expected one of delay," in result.stderr


def test_config_show_lists_the_faults(cli, isolated):
    config = write_config(isolated / "c.yaml", listen="listen:\n  seed: 3\n  faults: ['*:reset,rate=0.5']\n")
    shown = json.loads(cli("-c", config, "config", "show", "--json").stdout)["listen"]
    assert (shown["faults"], shown["seed"]) == (["*:reset,rate=0.5"], 3)


def test_replace_is_all_or_nothing_and_add_appends():
    faults = Faults(["user_info:empty"])
    with pytest.raises(ValueError, match="'nope': expected KIND:ACTION"):
        faults.replace(["user_media:reset", "nope"])
    assert faults.specs() == ["user_info:empty"]
    faults.add("*:hang")
    assert faults.specs() == ["user_info:empty", "*:hang"]
    faults.clear()
    assert faults.specs() == []


# --- each action, as a real client sees it ----------------------------------------------------


def test_empty_is_curls_empty_reply_and_reset_its_connection_reset(listener):
    listener.fault("user_info:empty,times=1")
    listener.fault("user_info:reset,times=1")
    empty = run_curl(*INFO, listener.endpoints["user_info"])
    reset = run_curl(*INFO, listener.endpoints["user_info"])
    after = run_curl(*INFO, listener.endpoints["user_info"])
    assert (empty.returncode, reset.returncode, after.returncode) == (52, 56, 0)
    assert "Empty reply from server" in empty.stderr and "Connection reset by peer" in reset.stderr
    assert json.loads(after.stdout)["name"] == "Olga"
    lines = [call.as_json() for call in listener.calls]
    assert [(c["fault"], c["status"], c["reply"]) for c in lines[:2]] == [
        ("user_info:empty,times=1", None, None),
        ("user_info:reset,times=1", None, None),
    ]
    assert lines[2]["fault"] is None and lines[2]["status"] == 200


def test_answers_that_replace_the_listeners(listener):
    url = listener.endpoints["user_info"]
    shapes = {}
    for spec in ("user_info:status=503", "user_info:status0", "user_info:status0=Site is down", "user_info:html"):
        listener.reset()
        listener.fault(spec)
        reply = httpx.post(url, data={"token": "dev-token", "user_id": "42"})
        shapes[spec] = (reply.status_code, reply.headers["content-type"], reply.text)
    assert shapes["user_info:status=503"][:2] == (503, "application/json")
    assert json.loads(shapes["user_info:status=503"][2]) == {"status": 0, "message": "fault: HTTP 503"}
    assert json.loads(shapes["user_info:status0"][2]) == {"status": 0, "message": "Invalid API token"}
    assert shapes["user_info:status0"][0] == 200
    assert json.loads(shapes["user_info:status0=Site is down"][2]) == {"status": 0, "message": "Site is down"}
    status, content_type, page = shapes["user_info:html"]
    assert status == 500 and content_type.startswith("text/html") and "<title>500 Internal Server Error</title>" in page
    [call] = listener.calls
    assert call.fault == "user_info:html" and call.status == 500 and not call.rejected


def test_malformed_is_json_cut_short(listener):
    listener.fault("*:malformed")
    reply = run_curl("-i", *INFO, listener.endpoints["user_media"])
    head, body = reply.stdout.split("\n\n", 1)  # text mode: CRLF read as LF
    assert head.startswith("HTTP/1.1 200") and "content-type: application/json" in head
    assert body.startswith("{")
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)


def test_a_fault_comes_before_the_token_check(listener):
    listener.fault("user_info:status0")
    reply = httpx.post(listener.endpoints["user_info"], data={"token": "wrong", "user_id": "42"})
    assert reply.json() == {"status": 0, "message": "Invalid API token"}
    [call] = listener.calls
    assert call.token_ok is False and call.fault == "user_info:status0"


def test_delay_dribble_and_hang_take_at_least_their_time(listener):
    listener.fault("user_info:delay=0.5,times=1")
    listener.fault("user_info:dribble=0.5,times=1")
    listener.fault("user_info:hang")
    url = listener.endpoints["user_info"]
    started = time.monotonic()
    late = httpx.post(url, data={"token": "dev-token", "user_id": "42"})
    assert time.monotonic() - started >= 0.45 and late.json()["name"] == "Olga"
    with httpx.stream("POST", url, data={"token": "dev-token", "user_id": "42"}) as slow:
        headers_at = time.monotonic()
        pieces = list(slow.iter_raw())
        assert time.monotonic() - headers_at >= 0.4
    assert len(pieces) >= 3 and json.loads(b"".join(pieces))["name"] == "Olga"
    started = time.monotonic()
    hung = run_curl("--max-time", "0.5", *INFO, url)
    assert hung.returncode == 28 and time.monotonic() - started >= 0.45  # curl gave up: timeout
    assert [c.status for c in listener.calls] == [200, 200, None]
    assert listener.calls[0].ms >= 450


def test_a_reply_the_client_gave_up_on_is_journaled_as_not_sent(listener):
    listener.fault("user_info:delay=5,times=1")
    listener.fault("user_info:status=500,delay=5")
    for _ in range(2):
        gave_up = run_curl("--max-time", "0.5", *INFO, listener.endpoints["user_info"])
        assert gave_up.returncode == 28  # curl's timeout, as the panel gives up after 4 s
    calls = listener.wait_for(count=2)
    assert [(c.status, c.reply) for c in calls] == [(None, None), (None, None)]
    assert calls[0].warnings == ["the client closed the connection before the reply (200) was sent"]
    assert calls[1].warnings == ["the client closed the connection before the reply (500: fault: HTTP 500) was sent"]
    assert calls[0].ms >= 400


def test_the_option_delay_comes_before_the_action(listener):
    listener.fault("user_info:reset,delay=0.5")
    started = time.monotonic()
    assert run_curl(*INFO, listener.endpoints["user_info"]).returncode == 56
    assert time.monotonic() - started >= 0.45


def test_h11_protocol_does_the_same(isolated):
    """opcli runs uvicorn's httptools protocol; its h11 one gives clients the same view."""
    from opcli.config import BUILTIN, load_config
    from opcli.listener import Listener, ServerThread
    from opcli.listener.http import H11Protocol

    app = Listener(load_config(BUILTIN, listen=True), faults=["user_info:empty,times=1", "user_info:reset,times=1"])
    with ServerThread(app, http=H11Protocol) as server:
        url = f"{server.url}/hooks/user-info"
        codes = [run_curl(*INFO, url).returncode for _ in range(3)]
    assert codes == [52, 56, 0]


# --- which calls: times, user, rate, order ----------------------------------------------------


def test_times_user_and_first_match_order(listener):
    listener.fault("user_info:status=500,times=1")
    listener.fault("user_info:status=404,user=43")
    listener.fault("*:status=502,times=2")
    with httpx.Client() as client:

        def ask(kind: str, user: str) -> int:
            return client.post(listener.endpoints[kind], data={"token": "dev-token", "user_id": user}).status_code

        got = [ask("user_info", "42"), ask("user_info", "43"), ask("user_info", "42"), ask("user_media", "43")]
        got += [ask("user_info", "42"), ask("user_info", "43")]
    assert got == [500, 404, 502, 502, 200, 404]
    assert [c.fault for c in listener.calls][-2:] == [None, "user_info:status=404,user=43"]


def test_rate_faults_about_that_fraction_and_a_seed_repeats_it(isolated):
    config = write_config(isolated / "c.yaml", token="dev-token", listen="listen:\n  seed: 7\n")
    from opcli.config import load_config

    def run(calls: int) -> list[int]:
        with ListenerThread(load_config(config, listen=True)) as running, httpx.Client() as client:
            running.fault("user_info:status=503,rate=0.3")
            url = running.endpoints["user_info"]
            return [client.post(url, data={"token": "dev-token", "user_id": "1"}).status_code for _ in range(calls)]

    first, again = run(300), run(100)
    assert 45 <= Counter(first)[503] <= 135  # 90 expected
    assert set(first) == {200, 503}
    assert again == first[:100]  # the same seed faults the same calls


def test_reset_forgets_the_faults(listener):
    listener.fault("*:empty")
    listener.reset()
    assert listener.app.faults.specs() == []
    assert run_curl(*INFO, listener.endpoints["user_info"]).returncode == 0


# --- opcli's own clients against faults -------------------------------------------------------


def test_send_against_status0_and_reset(cli, listener, site_config):
    listener.fault("message_sent:status0,times=1")
    listener.fault("message_sent:reset,times=1")
    refused = cli("-c", site_config, "send", "--user", 42, "--bot", 7, "-m", "hi")
    dropped = cli("-c", site_config, "send", "--user", 42, "--bot", 7, "-m", "hi")
    sent = cli("-c", site_config, "send", "--user", 42, "--bot", 7, "-m", "hi")
    assert refused.exit_code == 1 and "Invalid API token" in refused.stderr
    assert dropped.exit_code == 3 and dropped.stderr.startswith("opcli: error: ")
    assert sent.exit_code == 0, sent.stderr


def test_user_info_gives_up_on_a_slow_site(cli, listener, site_config):
    listener.fault("user_info:delay=3")
    result = cli("-c", site_config, "user-info", 42, "--timeout", 1)
    assert result.exit_code == 3
    assert "timeout" in result.stderr


def test_user_media_names_a_reply_that_is_not_json(cli, listener, site_config):
    listener.fault("user_media:malformed")
    result = cli("-c", site_config, "user-media", 42)
    assert result.exit_code == 1
    assert "not JSON" in result.stderr


def test_check_fails_the_checks_that_met_a_fault(cli, listener, site_config):
    listener.fault("user_media:malformed")
    listener.fault("user_info:status=500,user=42")
    result = cli("-c", site_config, "check", "--user", 42, "--bot", 7, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    failed = {c["name"] for c in report["checks"] if not c["ok"]}
    assert failed == {
        "user-info-valid",
        "user-info-urlencoded",
        "user-info-multipart",
        "user-media-valid",
        "user-media-rejects-wrong-token",
    }


def test_check_says_which_calls_got_no_answer_rather_than_blame_slowness(cli, listener, site_config):
    listener.fault("user_media:reset")
    result = cli("-c", site_config, "check", "--user", 42, "--bot", 7, "--json")
    assert result.exit_code == 1
    (latency,) = [c for c in json.loads(result.stdout)["checks"] if c["name"] == "every-call-within-timeout"]
    assert not latency["ok"] and latency["detail"].startswith("no answer to user-media-valid, ")


# --- `opcli listen --fault` -------------------------------------------------------------------


def test_done_when_a_refusal_then_the_retry(listen_proc, cli, isolated):
    """The issue's example: the panel refuses the first message, as the deployed panel does."""
    proc = listen_proc("listen", "--port", "0", "--count", "2", "--json", "--fault", "message_sent:status0,times=1")
    config = write_config(isolated / "site.yaml", panel_url=f"{proc.url}/operator-api", token="dev-token")
    first = cli("-c", config, "send", "--user", 42, "--bot", 7, "-m", "hello")
    retry = cli("-c", config, "send", "--user", 42, "--bot", 7, "-m", "hello")
    assert first.exit_code == 1 and "status 0: Invalid API token" in first.stderr
    assert retry.exit_code == 0, retry.stderr
    assert proc.wait() == 0  # a faulted call is not a rejected one
    calls = [json.loads(line) for line in proc.stdout[1:]]
    assert [(c["status"], c["fault"]) for c in calls] == [(200, "message_sent:status0,times=1"), (200, None)]
    assert calls[0]["reply"] == {"status": 0, "message": "Invalid API token"}


def test_flags_come_before_the_config_rules(listen_proc, isolated):
    config = write_config(
        isolated / "c.yaml",
        panel_url="http://127.0.0.1:9/operator-api",
        token="dev-token",
        listen="listen:\n  faults: ['user_info:status=502', 'user-media:status0=from the config']\n",
    )
    proc = listen_proc("-c", str(config), "listen", "--port", "0", "--count", "2", "--fault", "user_info:status=501")
    info = run_curl("-w", " %{http_code}", *INFO, f"{proc.url}/hooks/user-info")
    media = run_curl(*INFO, f"{proc.url}/hooks/user-media")
    assert info.stdout == '{"status":0,"message":"fault: HTTP 501"} 501'
    assert json.loads(media.stdout) == {"status": 0, "message": "from the config"}
    assert proc.wait() == 0  # a 501 sent by a fault is not a rejection
    out = "".join(proc.stdout)
    assert "fault: user_info:status=501" in out and "fault: user-media:status0=from the config" in out
    assert "Stopped (count): 2 calls, 0 rejected" in proc.stderr


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_hanging_call_does_not_hold_a_signal_up(listen_proc, signum, code):
    proc = listen_proc("listen", "--port", "0", "--json", "--fault", "*:hang")
    client = subprocess.Popen(["curl", "-sS", *INFO, f"{proc.url}/hooks/user-info"], stderr=subprocess.PIPE, text=True)
    try:
        assert json.loads(proc.stdout_lines.get(timeout=20))["event"] == "ready"
        hung = json.loads(proc.stdout_lines.get(timeout=20))  # journaled before it hangs
        assert hung["fault"] == "*:hang" and hung["status"] is None
        proc.proc.send_signal(signum)
        assert proc.wait() == code
        # closed by the listener as it stopped: not cancelled after uvicorn's graceful timeout (a 500)
        assert client.wait(20) == 52
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        client.stderr.close()
    assert "Traceback" not in proc.stderr and "Cancel" not in proc.stderr


@pytest.mark.parametrize("args, code", [(["--count", "1"], 0), (["--count", "2", "--timeout", "0.5"], 124)])
def test_a_hanging_call_ends_with_the_run(listen_proc, args, code):
    proc = listen_proc("listen", "--port", "0", "--fault", "user_info:hang", *args)
    hung = run_curl(*INFO, f"{proc.url}/hooks/user-info")
    assert hung.returncode == 52  # the listener closed it as it stopped
    assert proc.wait() == code
    out = "".join(proc.stdout)
    assert " ! - user_info " in out and "fault: user_info:hang" in out  # no status: nothing was sent
    assert "Cancel" not in proc.stderr and "Traceback" not in proc.stderr
