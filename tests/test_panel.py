"""The panel's side: user-info, user-media, reply and check against real servers on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from opcli.config import BUILTIN
from tests.conftest import CallLines, free_port, write_config

TOKEN = "secret-token-123456"
GOOD = {
    "id": 42,
    "name": "Olga",
    "gender": "female",
    "avatar": "https://x/a.jpg",
    "balance": "9.50",
    "location": "Riga",
    "about": "",
    "custom": [{"name": "eyes", "value": "green"}],
}


LISTEN_SECTION = "listen:" + BUILTIN.read_text().split("\nlisten:", 1)[1]


@pytest.fixture
def site_at(isolated):
    """Point the config at a server: returns a function taking the server's base URL."""

    def point(url: str, extra: str = "", token: str = TOKEN) -> None:
        write_config(
            isolated / "opcli.yaml",
            panel_url=f"{url}/operator-api",
            hooks=f"{url}/hooks",
            extra_site=extra + "    check: {user: 42, bot: 7}\n",
            listen=LISTEN_SECTION,
            token=token,
        )

    return point


@pytest.fixture
def listener(opcli_listener, site_at):
    """The plugin's listener, with the config pointing at it; the test's journal lines."""
    site_at(opcli_listener.url, token=opcli_listener.token)
    return CallLines(opcli_listener)


def broken_site(
    profile: Any = GOOD,
    media: Any = None,
    check_token: bool = True,
    status: int = 200,
    delay: float = 0,
    html: str | None = None,
    bad_id_status: int = 422,
) -> Starlette:
    """A site with one deliberate fault, configurable."""

    async def hook(request: Request) -> Response:
        async with request.form() as form:
            return await answer(request, {k: v for k, v in form.items() if isinstance(v, str)})

    async def answer(request: Request, form: dict[str, str]) -> Response:
        if delay:
            await asyncio.sleep(delay)
        if html is not None:
            return HTMLResponse(html, status)
        if check_token and form.get("token") != TOKEN:
            return JSONResponse({"status": 0, "message": "bad token"}, 401)
        if not str(form.get("user_id", "")).isdigit():
            return JSONResponse({"error": "bad id"}, bad_id_status)
        if request.url.path.endswith("user-info"):
            return JSONResponse(profile, status)
        if request.url.path.endswith("user-media"):
            return JSONResponse(
                media if media is not None else {"media": [{"url": "https://x/1", "big": "https://x/b"}]}, status
            )
        return JSONResponse({"status": 1}, status)

    return Starlette(routes=[Route("/hooks/{name}", hook, methods=["POST"])])


# --- against opcli listen -----------------------------------------------------------------


def test_user_info_table_and_json(cli, listener):
    result = cli("user-info", 42)
    assert result.exit_code == 0, result.stderr
    assert "name: Olga" in result.stdout and "custom: eyes: green" in result.stdout
    result = cli("user-info", 43, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["name"] == "Marta"
    assert listener[-1]["content_type"] == "application/x-www-form-urlencoded"


def test_user_media(cli, listener):
    result = cli("user-media", 42)
    assert result.exit_code == 0
    assert "2 media" in result.stdout and "https://cdn.example.com/u/42/p/1.jpg" in result.stdout
    assert json.loads(cli("user-media", 44, "--json").stdout) == {"media": []}


def test_reply_with_a_file_is_multipart_and_reversed(cli, listener, isolated):
    upload = isolated / "note.txt"
    upload.write_bytes("ответ оператора\n".encode() * 100)
    result = cli("reply", "--bot", 7, "--user", 42, "-m", "Hi Olga", "--attach", upload, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["status"] == 1
    entry = listener[-1]
    assert entry["kind"] == "send_message" and entry["content_type"] == "multipart/form-data"
    assert entry["fields"] == {"user_id": "7", "contact_id": "42", "message": "Hi Olga"}
    assert entry["files"][0]["sha256"] == hashlib.sha256(upload.read_bytes()).hexdigest()


def test_reply_text_only_is_urlencoded(cli, listener):
    assert cli("reply", "--bot", 7, "--user", 42, "-m", "plain").exit_code == 0
    assert listener[-1]["content_type"] == "application/x-www-form-urlencoded"


def test_webhook_encoding_multipart(cli, opcli_listener, site_at):
    site_at(opcli_listener.url, "    webhook_encoding: multipart\n", token=opcli_listener.token)
    assert cli("user-info", 42).exit_code == 0
    assert opcli_listener.calls[-1].content_type == "multipart/form-data"


def test_check_send_passes_against_the_listener(cli, listener, isolated):
    junit = isolated / "report.xml"
    result = cli("check", "--send", "--json", "--junit", junit)
    assert result.exit_code == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    names = [c["name"] for c in report["checks"]]
    assert report["failed"] == 0 and report["passed"] == len(names) == 13
    assert {
        "user-info-valid",
        "user-info-rejects-missing-token",
        "send-message-file",
        "every-call-within-timeout",
    } <= set(names)
    assert all(isinstance(c["ms"], float | int) and c["detail"] for c in report["checks"])
    suite = ET.parse(junit).getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == names
    assert suite.get("tests") == "13" and suite.get("failures") == "0"
    listener[-1]  # 12 calls: the latency check makes none of its own
    kinds = {e["kind"] for e in listener}
    assert kinds == {"user_info", "user_media", "send_message"}


def test_check_without_send_does_not_deliver_messages(cli, listener):
    result = cli("check")
    assert result.exit_code == 0
    assert "send_message" not in {e["kind"] for e in listener}
    assert "PASS  user-info-valid" in result.stdout


# --- against deliberately broken sites ----------------------------------------------------


@pytest.mark.parametrize(
    "profile, violation",
    [
        ({**GOOD, "id": "42"}, 'id: expected an integer, found string "42"'),
        ({**GOOD, "balance": 9.5}, "balance: expected a string, found number 9.5"),
        ({**GOOD, "custom": {"eyes": "green"}}, "custom: expected a list, found an object"),
        ({**GOOD, "custom": [{"name": "eyes"}]}, "custom[0].value: missing (required)"),
        ({k: v for k, v in GOOD.items() if k != "gender"}, "gender: missing (required)"),
        ({**GOOD, "id": 43}, "id: expected 42 (the requested user_id), found 43"),
        ({**GOOD, "avatar": "not a url"}, 'avatar: expected a URL or "", found string "not a url"'),
        ([GOOD], "expected a JSON object, found a list"),
        ({"status": 0, "message": "User not found"}, "status: the site answered status 0: User not found"),
    ],
)
def test_user_info_contract_violations(cli, serve, site_at, profile, violation):
    site_at(serve(broken_site(profile=profile)).url)
    result = cli("user-info", 42, "--json")
    assert result.exit_code == 1
    assert f"violation: {violation}" in result.stderr
    assert "breaks the contract" in result.stderr
    assert json.loads(result.stdout) == profile  # --json prints the object even when it is broken


def test_extra_fields_are_warnings_and_envelopes_are_unwrapped(cli, serve, site_at):
    site_at(serve(broken_site(profile={"status": 1, "data": {**GOOD, "vip": True}})).url)
    result = cli("user-info", 42, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {**GOOD, "vip": True}
    assert "notice: reply was wrapped in an envelope" in result.stderr
    assert "warning: vip: unknown field" in result.stderr


def test_media_missing_big_is_a_warning_missing_url_a_violation(cli, serve, site_at):
    site_at(serve(broken_site(media={"media": [{"url": "https://x/1.jpg"}]})).url)
    result = cli("user-media", 42)
    assert result.exit_code == 0 and "warning: media[0].big: missing" in result.stderr
    site_at(serve(broken_site(media={"media": [{"big": "https://x/1.jpg"}]})).url)
    result = cli("user-media", 42)
    assert result.exit_code == 1 and "violation: media[0].url: missing (required)" in result.stderr


def test_html_error_page_is_reported_with_its_title(cli, serve, site_at):
    page = "<!DOCTYPE html>\n<html><head><title>Login required</title></head><body>...</body></html>"
    site_at(serve(broken_site(html=page)).url)
    result = cli("user-info", 42)
    assert result.exit_code == 1
    assert "the reply is an HTML page ('Login required')" in result.stderr


def test_500_is_exit_1(cli, serve, site_at):
    site_at(serve(broken_site(status=500)).url)
    result = cli("user-info", 42)
    assert result.exit_code == 1 and "HTTP 500" in result.stderr


def test_empty_and_non_json_replies(cli, serve, site_at):
    site_at(serve(broken_site(html="")).url)
    assert "the reply is an empty reply" in cli("user-media", 42).stderr
    site_at(serve(broken_site(html="Fatal error: Call to undefined function in /var/www/x.php on line 3")).url)
    result = cli("user-info", 42)
    assert result.exit_code == 1 and "Fatal error: Call to undefined function" in result.stderr


def test_slower_than_the_timeout_is_exit_3(cli, serve, site_at):
    url = serve(broken_site(delay=2)).url
    site_at(url)
    result = cli("user-info", 42, "--timeout", "0.3", "--json")
    assert result.exit_code == 3 and result.stdout == ""
    assert f"cannot reach {url}/hooks/user-info: no answer within 0.3s (timeout)" in result.stderr


def failed_checks(cli, *args: str) -> set[str]:
    result = cli("check", "--json", *args)
    report = json.loads(result.stdout)
    assert result.exit_code == (1 if report["failed"] else 0)
    return {c["name"] for c in report["checks"] if not c["ok"]}


def test_check_fails_exactly_the_token_checks_of_a_site_that_accepts_any_token(cli, serve, site_at):
    site_at(serve(broken_site(check_token=False)).url)
    assert failed_checks(cli, "--send") == {
        "user-info-rejects-wrong-token",
        "user-info-rejects-empty-token",
        "user-info-rejects-missing-token",
        "user-media-rejects-wrong-token",
        "send-message-rejects-wrong-token",
    }


def test_check_fails_the_bad_id_check_of_a_site_that_crashes_on_it(cli, serve, site_at):
    site_at(serve(broken_site(bad_id_status=500)).url)
    assert failed_checks(cli) == {"user-info-non-integer-id"}


def test_check_fails_the_contract_checks_of_a_site_with_string_ids(cli, serve, site_at):
    site_at(serve(broken_site(profile={**GOOD, "id": "42"})).url)
    assert failed_checks(cli) == {"user-info-valid", "user-info-urlencoded", "user-info-multipart"}


def test_check_against_a_slow_site_fails_every_check(cli, serve, site_at):
    site_at(serve(broken_site(delay=1)).url)
    result = cli("check", "--json", "--timeout", "0.2")
    # nothing came back at all: that is "cannot be reached"
    assert result.exit_code == 3 and result.stdout == ""
    assert "no answer within 0.2s" in result.stderr


def test_check_unreachable_is_exit_3_and_still_writes_junit(cli, site_at, isolated):
    site_at(f"http://127.0.0.1:{free_port()}")
    junit = isolated / "r.xml"
    result = cli("check", "--json", "--junit", junit)
    assert result.exit_code == 3 and result.stdout == "" and "connection refused" in result.stderr
    # CI still gets its report: every check failed, as unreachable
    suite = ET.parse(junit).getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == 9 and suite.get("failures") == "9"
    assert all(case.find("failure").get("type") == "unreachable" for case in cases)
    assert all("connection refused" in case.find("failure").get("message") for case in cases)


def test_check_needs_a_user(cli, isolated):
    (isolated / "opcli.yaml").write_text("sites:\n  a: {token: t, webhooks: {user_info: 'http://127.0.0.1:9/x'}}\n")
    result = cli("check")
    assert result.exit_code == 2 and "give --user or set check.user" in result.stderr


def test_demo_runs_every_step(cli):
    result = cli("demo")
    assert result.exit_code == 0, result.stdout + result.stderr
    for expected in (
        "== the site sends a message",
        "message_id",
        "name: Olga",
        "2 media",
        "Delivered to",
        "PASS  send-message-file",
        "== the listener plays the panel",
        'message: "Re: Anyone there?"',
        "Demo finished: all 6 steps worked",
    ):
        assert expected in result.stdout
    assert "FAIL" not in result.stdout


@pytest.mark.parametrize("json_out", [False, True])
def test_an_http_error_is_a_refusal_not_an_empty_profile(cli, serve, site_at, json_out):
    site_at(serve(broken_site(profile={"status": 0, "message": "boom"}, status=500)).url)
    result = cli("user-info", 42, *(["--json"] if json_out else []))
    assert result.exit_code == 1
    assert "/hooks/user-info refused it: HTTP 500" in result.stderr and "breaks the contract" not in result.stderr
    assert (json.loads(result.stdout) == {"status": 0, "message": "boom"}) if json_out else result.stdout == ""


def test_a_reply_nested_past_pythons_limit_is_unreadable_not_an_internal_error(cli, stdlib_server, site_at):
    site_at(stdlib_server.url)
    deep = b"[" * 100_000 + b"]" * 100_000  # valid JSON that json.loads cannot take (RecursionError)
    stdlib_server.respond = lambda r: (200, {"Content-Type": "application/json"}, deep)
    for argv, code in ((["user-info", 42], 1), (["send", "--user", 42, "--bot", 7, "-m", "hi"], 0), (["check"], 1)):
        result = cli(*argv)
        assert result.exit_code == code, (argv, result.stderr)
        assert "internal error" not in result.stderr and "not JSON" in result.stdout + result.stderr, result.stderr


def test_a_verify_file_that_is_no_ca_bundle_is_a_config_error(cli, isolated):
    write_config(isolated / "opcli.yaml", extra_site="    verify: ./not-a-ca.txt\n")
    (isolated / "not-a-ca.txt").write_text("hello\n")
    result = cli("send", "--user", 42, "--bot", 7, "-m", "hi")
    assert result.exit_code == 2
    assert "opcli.yaml:" in result.stderr and "verify: './not-a-ca.txt' is not a CA bundle" in result.stderr


def _streaming_site(pieces: Any) -> Starlette:
    """A site whose every reply is ``pieces()`` (an async iterator of bytes), as it comes."""
    from starlette.responses import StreamingResponse

    async def hook(request: Request) -> Response:
        await request.body()
        return StreamingResponse(pieces(), media_type="application/json")

    return Starlette(routes=[Route("/{path:path}", hook, methods=["POST"])])


def test_the_timeout_is_for_the_whole_call_not_each_read(cli, serve, site_at, isolated):
    async def dribble():  # the whole profile, a byte every 0.05 s: each read is quick, the reply takes 5 s
        for byte in json.dumps(GOOD).encode():
            yield bytes([byte])
            await asyncio.sleep(0.05)

    site_at(serve(_streaming_site(dribble)).url)
    result = cli("user-info", 42, "--timeout", 1)
    assert result.exit_code == 3 and "no answer within 1s (timeout)" in result.stderr, result.stderr
    (isolated / "one.jsonl").write_text('{"user": 42, "bot": 7, "message": "hi"}\n')
    result = cli("send", "--batch", isolated / "one.jsonl", "--timeout", 1, "--json")  # on httpcore: the same
    assert result.exit_code == 3 and "no answer within 1s (timeout)" in result.stdout + result.stderr, result.stderr


def test_a_reply_past_64_mib_is_not_read_on(cli, serve, site_at):
    async def huge():  # 80 MiB of a JSON array that never closes: endless, as far as the client can tell
        yield b"["
        for _ in range(80):
            yield b"0," * (512 * 1024)

    site_at(serve(_streaming_site(huge)).url)
    result = cli("user-info", 42, "--timeout", 60)
    assert result.exit_code == 3 and "its reply is over 64 MiB; stopped reading" in result.stderr, result.stderr
