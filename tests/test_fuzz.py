"""``opcli check --fuzz``: hostile calls against two sites that are not opcli, and against the listener."""

from __future__ import annotations

import json
import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from opcli.config import load_config
from opcli.listener import ListenerThread
from tests.conftest import write_config
from tests.fuzz_sites import TOKEN, site
from tests.terminal import run_on

FUZZ_CHECKS = ["fuzz-user-info", "fuzz-user-media"]


@pytest.fixture(scope="session")
def hypothesis_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Hypothesis cache for the session: its Unicode tables take seconds to build."""
    return tmp_path_factory.mktemp("hypothesis")


@pytest.fixture
def shared_cache(hypothesis_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPOTHESIS_STORAGE_DIRECTORY", str(hypothesis_dir))


def config_for(isolated: Path, url: str) -> Path:
    return write_config(
        isolated / "opcli.yaml",
        panel_url=f"{url}/operator-api",
        hooks=f"{url}/hooks",
        token=TOKEN,
        extra_site="    check: {user: 42, bot: 7}\n",
    )


def fuzz_json(cli, config: Path, *args: str) -> tuple[int, dict]:
    result = cli("-c", config, "check", "--json", "--fuzz", *args)
    return result.exit_code, json.loads(result.stdout)


def test_a_careful_site_passes_and_gets_every_kind_of_hostile_call(cli, isolated, serve, shared_cache):
    app = site()
    server = serve(app)
    code, report = fuzz_json(cli, config_for(isolated, server.url), "60", "--fuzz-seed", "7", "--send")
    checks = {c["name"]: c for c in report["checks"]}
    assert code == 0, report
    for name in [*FUZZ_CHECKS, "fuzz-send-message"]:
        assert checks[name]["ok"] and "hostile calls, none failed (--fuzz-seed 7)" in checks[name]["detail"]
        assert "failures" not in checks[name]
    user_info = [call for call in app.state.calls if call[0] == "user-info"]
    assert len(user_info) == int(checks["fuzz-user-info"]["detail"].split()[0]) + 7  # fuzz calls, fixed checks
    sent = [(ctype, fields) for _, ctype, fields in app.state.calls]

    def seen(test) -> bool:
        return any(test(ctype, dict(fields), [n for n, _ in fields]) for ctype, fields in sent)

    assert seen(lambda ctype, last, names: ctype == "multipart/form-data")
    assert seen(lambda ctype, last, names: ctype == "application/x-www-form-urlencoded")
    assert seen(lambda ctype, last, names: "token" not in names)
    assert seen(lambda ctype, last, names: last.get("token") == "")
    assert seen(lambda ctype, last, names: last.get("token") not in (None, "", TOKEN))
    assert seen(lambda ctype, last, names: len(set(names)) < len(names))  # a repeated field
    assert seen(lambda ctype, last, names: "user_id" not in names)
    assert seen(lambda ctype, last, names: str(last.get("user_id", "")).startswith("-"))
    assert seen(lambda ctype, last, names: not str(last.get("user_id", "0")).isascii())
    assert seen(lambda ctype, last, names: any(len(str(v)) >= 1000 for v in last.values()))
    assert seen(lambda ctype, last, names: any(n not in ("token", "user_id", "contact_id", "message") for n in names))


def test_a_fragile_site_fails_with_the_smallest_inputs_as_curl_lines(cli, isolated, serve, shared_cache):
    server = serve(site(fragile=True))
    config = config_for(isolated, server.url)
    code, report = fuzz_json(cli, config, "60", "--fuzz-seed", "0", "--junit", "fuzz.xml")
    assert code == 1
    checks = {c["name"]: c for c in report["checks"]}
    assert all(c["ok"] for c in report["checks"] if not c["name"].startswith("fuzz-")), report
    failures = {}
    for name in FUZZ_CHECKS:
        assert not checks[name]["ok"] and "(--fuzz-seed 0 repeats them)" in checks[name]["detail"]
        failures.update({(name, f["kind"]): f for f in checks[name]["failures"]})
    # each webhook breaks both ways: a 500 for ids above 2^31, a PHP error page for non-ASCII names
    assert set(failures) == {(name, kind) for name in FUZZ_CHECKS for kind in ("server-error", "error-page")}
    for (_, kind), failure in failures.items():
        curl = failure["curl"]
        assert curl.startswith("curl -sS -X POST ") and '"token=$OPCLI_TOKEN"' in curl
        status, body = run_curl(curl)
        if kind == "server-error":
            # the smallest input: a valid call whose only change is a user_id above 2^31
            assert failure["reason"] == "HTTP 500"
            [user_id] = [arg.split("=", 1)[1] for arg in curl.split() if arg.startswith("user_id=")]
            assert 2**31 < int(user_id) <= 2**32
            assert failure["input"] == f"token=(the token) 'user_id'='{user_id}' (urlencoded)"
            assert status == "500"
        else:
            # the smallest input: a valid call plus one empty field named by one non-ASCII character
            assert failure["reason"].startswith("HTTP 200 with a PHP error: Fatal error: Uncaught ValueError")
            assert failure["input"] == "token=(the token) 'user_id'='42' '\\x80'='' (urlencoded)"
            assert status == "200" and "<b>Fatal error</b>" in body
    junit = ET.parse(isolated / "fuzz.xml").getroot()
    [case] = [c for c in junit.iter("testcase") if c.get("name") == "fuzz-user-info"]
    assert "curl -sS -X POST" in case.find("failure").text
    # the same seed, the same findings
    again = {c["name"]: c for c in fuzz_json(cli, config, "60", "--fuzz-seed", "0")[1]["checks"]}
    for name in FUZZ_CHECKS:
        assert (again[name]["detail"], again[name]["failures"]) == (checks[name]["detail"], checks[name]["failures"])


@pytest.mark.parametrize("tty", [False, True], ids=["pipe", "terminal"])
def test_a_failures_smallest_inputs_show_a_line_each(isolated, serve, shared_cache, tty):
    config_for(isolated, serve(site(fragile=True)).url)  # ./opcli.yaml: the config run_on finds
    run = run_on("check", "--fuzz", "60", "--fuzz-seed", "0", stdout_tty=tty, environ={"NO_COLOR": "1"})
    assert run.code == 1, run.stderr
    lines = run.plain_stdout.splitlines()
    assert not any("\\n" in line for line in lines)  # no escaped line break anywhere
    for name in FUZZ_CHECKS:
        at = next(k for k, line in enumerate(lines) if line.startswith(f"FAIL  {name} "))
        assert lines[at].endswith("(--fuzz-seed 0 repeats them); smallest inputs:")
        for k in (1, 2):  # README's layout: the reason, the input, the curl line
            reason, given, curl = lines[at + 3 * k - 2 : at + 3 * k + 1]
            assert reason.startswith(f"  {k}. HTTP ")
            assert given.startswith("     input: token=(the token) 'user_id'=")
            assert curl.startswith("     curl -sS -X POST http://127.0.0.1:") and '"token=$OPCLI_TOKEN"' in curl


@pytest.mark.parametrize("tty", [False, True], ids=["pipe", "terminal"])
def test_a_received_value_cannot_break_or_forge_a_line_of_a_failure(tty):
    import io

    from opcli.cli.common import Env
    from opcli.cli.render import Output
    from opcli.conformance import Check
    from tests.terminal import Terminal

    env = Env(Terminal() if tty else io.StringIO(), io.StringIO(), io.StringIO(), {"NO_COLOR": "1"})
    lines = ["1 kind(s) of failure in 9 calls", "  1. HTTP 200 with \x1b[2Jgone\nPASS  forged", "     curl x"]
    Output(env).check_row(Check("fuzz-user-info", False, "\n".join(lines), 5.0, lines=lines))
    shown = env.stdout.getvalue().splitlines()
    assert len(shown) == 3 and shown[0].startswith("FAIL  fuzz-user-info ") and shown[2] == "     curl x"
    assert shown[1] == "  1. HTTP 200 with \\x1b[2Jgone\\nPASS  forged"


ODD_FIELDS = (
    ("\x80", ""),
    ("_", "\x80"),
    ('odd\x01 \x1b[2J\u202e "name"\\', 'a\x01b\x7f\u202e\n\r\t it\'s \\ "q" $HOME `id` é中😀'),
    ("@x", "@/etc/passwd;type=text/plain"),
    ("token", "wrong\x1b[0m"),  # a wrong token is shown as it was sent
)


@pytest.mark.parametrize("multipart", [False, True], ids=["urlencoded", "multipart"])
def test_a_failures_curl_line_as_printed_and_in_junit_sends_what_the_fuzzer_sent(isolated, stdlib_server, multipart):
    import io

    import httpx

    from opcli.cli.common import Env
    from opcli.cli.render import Output
    from opcli.conformance import Report, junit_xml
    from opcli.fuzz import Probe, _report, _verdict

    page = b"<b>Fatal error</b>: boom\x1b[2J on line <b>1</b>"  # an ESC that XML cannot hold either
    stdlib_server.respond = lambda r: (500, {"Content-Type": "text/html"}, page)
    config = load_config(config_for(isolated, stdlib_server.url))
    probe = Probe((("token", TOKEN), ("user_id", "42"), *ODD_FIELDS), multipart)
    with httpx.Client() as client:
        failure = _verdict(config.site, "user_info", probe, client)
    assert failure is not None and failure.kind == "server-error"
    [sent] = stdlib_server.received
    check = _report("user_info", 1, [failure], 0, 1.0)
    env = Env(io.StringIO(), io.StringIO(), io.StringIO(), {})
    Output(env, secrets={TOKEN}).check_row(check)
    printed = env.stdout.getvalue().splitlines()[-1].strip()
    junit = ET.fromstring(junit_xml(Report("test", [check])))
    in_junit = junit.find(".//failure").text.splitlines()[-1].strip()
    reason = "1. HTTP 500 with a PHP error: Fatal error: boom\\x1b[2J on line 1"
    assert reason in env.stdout.getvalue() and reason in junit.find(".//failure").text
    # escaping control characters for a terminal, a pipe or XML changed nothing: there were none
    assert printed == in_junit == failure.curl and TOKEN not in printed
    for line in (printed, in_junit):
        status, _ = run_curl(line)
        assert status == "500"
        again = stdlib_server.received[-1]
        assert again.headers["Content-Type"].split(";")[0] == sent.headers["Content-Type"].split(";")[0]
        assert body_parts(again) == body_parts(sent)
    assert len(stdlib_server.received) == 3


def body_parts(received) -> list[bytes]:
    """A body as bytes: urlencoded whole, multipart as its parts (headers and content), boundary left out."""
    ctype = received.headers["Content-Type"]
    if not ctype.startswith("multipart/"):
        return [received.body]
    boundary = ctype.split("boundary=", 1)[1].strip('"').encode()
    pieces = received.body.split(b"--" + boundary)
    assert pieces[0] == b"" and pieces[-1] == b"--\r\n"
    return pieces[1:-1]


def run_curl(line: str) -> tuple[str, str]:
    """Run a reported curl line with the real curl; returns the status and the body."""
    done = subprocess.run(
        ["bash", "-c", line + " -w '\\n%{http_code}'"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "OPCLI_TOKEN": TOKEN},
    )
    assert done.returncode == 0, done.stderr
    body, _, status = done.stdout.rpartition("\n")
    return status, body


def test_a_lax_site_fails_the_token_and_id_rules(cli, isolated, serve, shared_cache):
    server = serve(site(lax=True))
    code, report = fuzz_json(cli, config_for(isolated, server.url), "40", "--fuzz-seed", "3")
    assert code == 1
    [info] = [c for c in report["checks"] if c["name"] == "fuzz-user-info"]
    kinds = {f["kind"]: f for f in info["failures"]}
    assert {"profile-for-bad-token", "bad-id-accepted"} <= set(kinds)
    assert kinds["profile-for-bad-token"]["input"].startswith("token='' 'user_id'='42'")
    assert "token= " in kinds["profile-for-bad-token"]["curl"]  # the empty token as sent, not $OPCLI_TOKEN
    assert TOKEN not in json.dumps(report)


def test_negative_and_huge_integer_ids_may_be_accepted_with_their_own_profile(isolated, serve):
    """cli.md's invalid input is a missing or non-integer id: any integer may be a user, with its profile."""
    import httpx

    from opcli.config import load_config
    from opcli.fuzz import Probe, _verdict

    server = serve(site(any_integer=True))
    config = load_config(config_for(isolated, server.url))
    with httpx.Client() as client:
        for user_id in ("-1", str(2**64), "0"):
            probe = Probe((("token", config.site.token), ("user_id", user_id)), False)
            assert _verdict(config.site, "user_info", probe, client) is None, user_id


def test_fuzzing_leaves_no_hypothesis_directory_and_prints_only_the_report(cli, isolated, serve, monkeypatch):
    monkeypatch.delenv("HYPOTHESIS_STORAGE_DIRECTORY", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    server = serve(site())
    result = cli("-c", config_for(isolated, server.url), "check", "--fuzz", "10", "--fuzz-seed", "1")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.stderr == "12 checks passed, 0 failed\n"
    rows = [line.split()[:2] for line in result.stdout.splitlines()]
    assert ["PASS", "fuzz-user-info"] in rows and ["PASS", "fuzz-user-media"] in rows
    assert not (isolated / ".hypothesis").exists()


def test_the_listener_passes_its_own_fuzzing(cli, isolated, shared_cache):
    with ListenerThread(load_config(listen=True)) as listener:
        (isolated / "opcli.yaml").write_text(
            f"sites:\n  here:\n    token: {listener.token}\n    check: {{user: 42, bot: 7}}\n    webhooks:\n"
            + "".join(f"      {kind}: {url}\n" for kind, url in listener.endpoints.items() if kind != "message_sent")
        )
        code, report = fuzz_json(cli, isolated / "opcli.yaml", "25", "--send")
    assert code == 0, report
    assert [c["name"] for c in report["checks"][-3:]] == [*FUZZ_CHECKS, "fuzz-send-message"]
    assert "--fuzz-seed " in report["checks"][-1]["detail"]  # a seed was drawn, and is shown to repeat the run


def test_fuzz_seed_needs_fuzz(cli):
    result = cli("check", "--fuzz-seed", "1")
    assert result.exit_code == 2 and "--fuzz-seed needs --fuzz N" in result.stderr


def test_an_id_longer_than_int_takes_is_still_an_integer_to_the_fuzzer():
    """Hypothesis once drew a 4,301-digit user_id: `check --fuzz` stopped with an internal error."""
    from opcli.fuzz import _PAST_INT_DIGITS, _lenient_id

    assert _lenient_id("9" * 5000) is _PAST_INT_DIGITS  # an id the site may refuse or accept
    assert _lenient_id(" +42 ") == 42 and _lenient_id("4x2") is None
