"""The small things a newcomer trips on: check's reports, warnings, config messages, TLS hints."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests import test_batch, test_panel
from tests.conftest import free_port, write_config
from tests.test_panel import GOOD, broken_site

# fixtures: the listener over https with a test CA; the config at a server; the listener as the site
tls_panel, site_at, listener = test_batch.tls_panel, test_panel.site_at, test_panel.listener

# --- check (item 10) ---------------------------------------------------------------------------


def test_a_bad_junit_path_is_refused_before_anything_is_sent(cli, listener, isolated):
    for junit in (isolated / "no" / "r.xml", isolated):
        result = cli("check", "--send", "--junit", junit)
        assert result.exit_code == 2
        assert result.stderr.startswith(f"opcli: error: cannot write --junit {junit}: ")
    assert listener == []  # no message was delivered


def test_check_stopped_before_its_report_leaves_no_empty_junit_file(listen_proc, isolated):
    import signal
    import subprocess
    import sys

    listener = listen_proc("listen", "--port", "0", "--json", "--fault", "*:hang")  # nothing is ever answered
    listener.stdout_lines.get(timeout=10)  # the ready line
    write_config(isolated / "opcli.yaml", panel_url=f"{listener.url}/operator-api", token="dev-token")
    (isolated / "old.xml").write_text("<testsuites/>")
    for report in ("new.xml", "old.xml"):
        check = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "opcli",
                "check",
                "--user",
                "42",
                "--bot",
                "7",
                "--junit",
                report,
                "--timeout",
                "30",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert '"event":"call"' in listener.stdout_lines.get(timeout=30)  # check is waiting for its first call
        check.send_signal(signal.SIGINT)
        assert check.wait(20) == 130, check.stderr.read()
        check.stderr.close()
    assert not (isolated / "new.xml").exists()  # an empty file is no report: CI would choke on it
    assert (isolated / "old.xml").read_text() == "<testsuites/>"  # the last report stays as it was


def test_spec_to_dash_is_stdout(cli, isolated):
    result = cli("spec", "-o", "-")
    assert result.exit_code == 0 and result.stdout.startswith("openapi: 3.1") and not (isolated / "-").exists()


def test_every_violation_is_in_json_and_junit_the_row_shows_the_first(cli, serve, site_at, isolated):
    broken = {**GOOD, "id": "42", "balance": 9.5, "gender": None}
    site_at(serve(broken_site(profile=broken)).url)
    junit = isolated / "r.xml"
    as_json = json.loads(cli("check", "--json", "--junit", junit).stdout)
    detail = next(c["detail"] for c in as_json["checks"] if c["name"] == "user-info-valid")
    expected = [
        'id: expected an integer, found string "42"',
        "gender: expected a string, found null",
        "balance: expected a string, found number 9.5",
    ]
    assert detail == "; ".join(expected)
    case = next(c for c in ET.parse(junit).getroot().iter("testcase") if c.get("name") == "user-info-valid")
    assert case.find("failure").get("message") == detail
    rows = cli("check").stdout
    assert f"{expected[0]} (+2 more; -v or --json shows all)" in rows
    assert "more" not in cli("check", "-v").stdout.split("user-info-valid", 1)[1].split("\n")[0]


def test_check_verbose_shows_request_and_reply_of_failing_checks(cli, serve, site_at):
    site_at(serve(broken_site(check_token=False)).url)
    result = cli("check", "-v")
    assert result.exit_code == 1
    blocks = result.stderr.split("> POST ")
    assert len(blocks) == 1 + 4  # one request per failing check: the four token checks
    assert all("< HTTP 200" in block for block in blocks[1:])  # the site accepted what it must refuse
    assert [block.split("\n", 1)[0].rsplit("/", 1)[1] for block in blocks[1:]] == ["user-info"] * 3 + ["user-media"]
    assert all('< {"id":42,' in block for block in blocks[1:4]) and '< {"media":' in blocks[4]
    assert ">   token=(empty)" in result.stderr and "secret-token" not in result.stderr


# --- warnings in every mode (item 11) -----------------------------------------------------------


def test_send_json_warns_about_an_html_reply(cli, stdlib_server, isolated):
    write_config(isolated / "opcli.yaml", panel_url=f"{stdlib_server.url}/api")
    stdlib_server.respond = lambda r: (200, {"Content-Type": "text/html"}, b"<html><title>Hi</title></html>")
    result = cli("send", "--user", 1, "--bot", 2, "-m", "x", "--json")
    assert result.exit_code == 0
    assert result.stdout == "null\n"
    assert "warning: the reply is an HTML page ('Hi')" in result.stderr


# --- config (item 18) -------------------------------------------------------------------------


def test_no_config_file_says_what_was_searched_and_where_the_listener_serves(cli):
    for command in ("validate", "show"):
        result = cli("config", command)
        assert result.exit_code == 0
        assert result.stderr.startswith("no config file found (searched: ./opcli.yaml, ")
        assert "using the built-in defaults" in result.stderr
    assert "opcli listen serves http://127.0.0.1:8765" in cli("config", "validate").stdout
    shown = json.loads(cli("config", "show", "--json").stdout)
    assert shown["listen"]["host"] == "127.0.0.1" and shown["listen"]["port"] == 8765


def test_opcli_site_is_named_as_the_source(cli, isolated, monkeypatch):
    write_config(isolated / "opcli.yaml")
    monkeypatch.setenv("OPCLI_SITE", "test")
    assert "selected: test, from $OPCLI_SITE" in cli("config", "validate").stdout
    monkeypatch.setenv("OPCLI_SITE", "nope")
    result = cli("config", "validate")
    assert result.exit_code == 2 and "no site 'nope' (from $OPCLI_SITE)" in result.stderr
    assert "no site 'other' (from --site)" in cli("-s", "other", "config", "validate").stderr


def test_a_directory_as_config_says_so(cli, isolated):
    result = cli("-c", isolated, "config", "show")
    assert result.exit_code == 2
    assert result.stderr == f"opcli: error: {isolated}: is a directory, not a config file (from --config)\n"


def test_a_repeated_attach_is_refused(cli, stdlib_server, isolated):
    write_config(isolated / "opcli.yaml", panel_url=f"{stdlib_server.url}/api")
    (isolated / "a").write_bytes(b"a")
    (isolated / "b").write_bytes(b"b")
    for command in (["send", "--user", 1, "--bot", 2], ["reply", "--bot", 2, "--user", 1]):
        result = cli(*command, "--attach", "a", "--attach", "b")
        assert result.exit_code == 2
        assert result.stderr == "opcli: error: --attach given 2 times: a message carries one file\n"
    assert stdlib_server.received == []


def test_python_none_never_shows_in_config_errors(cli, isolated):
    write_config(isolated / "opcli.yaml", extra_site="    attaches_encoding:\n")
    result = cli("config", "validate")
    assert result.exit_code == 2 and "got nothing" in result.stderr and "None" not in result.stderr


# --- TLS hints (item 18) ------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [False, True])
def test_https_to_a_plain_http_server_hints_at_http(cli, stdlib_server, isolated, batch):
    write_config(isolated / "opcli.yaml", panel_url=stdlib_server.url.replace("http:", "https:") + "/api")
    (isolated / "m.jsonl").write_text(json.dumps({"user": 1, "bot": 2, "message": "m"}) + "\n")
    result = cli("send", *(["--batch", "m.jsonl"] if batch else ["--user", 1, "--bot", 2, "-m", "m"]))
    assert result.exit_code == 3
    assert "does the server speak plain HTTP? use an http:// URL" in result.stderr


def test_an_unknown_ca_hints_at_verify(cli, tls_panel, isolated):
    url, _, _ = tls_panel
    write_config(isolated / "opcli.yaml", panel_url=f"{url}/api", hooks=f"{url}/hooks")
    result = cli("user-info", 42)
    assert result.exit_code == 3
    assert "a self-signed or private CA? set the site's `verify: /path/to/CA.pem`" in result.stderr


def test_unreachable_port_hint_is_unchanged(cli, isolated):
    write_config(isolated / "opcli.yaml", panel_url=f"http://127.0.0.1:{free_port()}/api")
    assert "(is `opcli listen` running?)" in cli("send", "--user", 1, "--bot", 2, "-m", "m").stderr


def test_check_junit_to_a_symlink_or_a_device_writes_through_it(cli, listener, isolated):
    (isolated / "reports").mkdir()
    (isolated / "r.xml").symlink_to(isolated / "reports" / "real.xml")  # dangling until the report is written
    assert cli("check", "--junit", isolated / "r.xml").exit_code == 0
    assert (isolated / "r.xml").is_symlink() and ET.parse(
        isolated / "reports" / "real.xml"
    ).getroot().tag == "testsuites"
    result = cli("check", "--junit", "/dev/null")  # a device is written to, never replaced
    assert result.exit_code == 0 and Path("/dev/null").is_char_device() and not Path("/dev/.null.part").exists()
