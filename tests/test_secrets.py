"""No token anywhere: not in URLs, error lines, --dry-run, -v, config show, batch output, JUnit."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET

import pytest

from opcli.errors import ConfigError
from opcli.protocol import mask_token, redact
from tests.conftest import free_port, write_config

TOKEN = "tok-SECRET-value-98765"  # 22 characters: shown as …8765


def config_with_token_in_urls(path, base: str, password: bool = False) -> None:
    userinfo = "opcli:${PANEL_TOKEN}@" if password else ""
    path.write_text(
        f"""\
sites:
  s:
    token: ${{PANEL_TOKEN}}
    panel_url: "http://{userinfo}{base}/api?token=${{PANEL_TOKEN}}&v=1"
    webhooks:
      user_info: "http://{base}/hooks/user-info?key=${{PANEL_TOKEN}}"
      user_media: "http://{base}/hooks/user-media"
      send_message: "http://{base}/hooks/send-message"
    check: {{user: 42, bot: 7}}
""",
        encoding="utf-8",
    )


@pytest.fixture
def token_env(monkeypatch):
    monkeypatch.setenv("PANEL_TOKEN", TOKEN)


def assert_no_token(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text, text
        assert "SECRET" not in text, text


def test_masking_rules():
    assert mask_token("abcdefghijkl") == "***"  # 12 characters: too short to show any of it
    assert mask_token("abcdefghijklmnop") == "…mnop"
    assert mask_token("") == "(empty)"
    assert redact(f"https://x/a?token={TOKEN}", [TOKEN]) == "https://x/a?token=…8765"
    assert (
        redact("http://me:pa%24ss@host/x and http://host:80/y@z", []) == "http://me:***@host/x and http://host:80/y@z"
    )
    assert redact("abc abcdef", ["abc"]) == "*** abcdef"  # a short secret only where it stands alone


def test_error_lines_hide_the_token(cli, isolated, token_env):
    config_with_token_in_urls(isolated / "opcli.yaml", f"127.0.0.1:{free_port()}")
    for argv in (["send", "--user", 1, "--bot", 2, "-m", "x"], ["user-info", 42], ["check"]):
        result = cli(*argv)
        assert result.exit_code == 3, result.stderr
        assert "connection refused" in result.stderr and "=…8765" in result.stderr
        assert_no_token(result.stdout, result.stderr)


def test_errors_in_the_options_hide_the_token_though_no_config_was_loaded_yet(cli, isolated, token_env):
    config_with_token_in_urls(isolated / "opcli.yaml", "127.0.0.1:9")
    for argv in (
        ["send", "--user", 1, "--bot", 2, "--photo", f"ftp://x/{TOKEN}.jpg"],
        ["send", "--user", 1, "--bot", 2, "-m", "x", "--attach", f"/nope/{TOKEN}"],
        ["send", "--user", TOKEN, "--bot", 2, "-m", "x"],
        ["user-info", TOKEN],
        ["-s", TOKEN, "send", "--user", 1, "--bot", 2, "-m", "x"],
        ["send", f"--bogus-{TOKEN}"],
    ):
        result = cli(*argv)
        assert result.exit_code == 2 and "…8765" in result.stderr, (argv, result.stderr)
        assert_no_token(result.stdout, result.stderr)
    (isolated / "number.yaml").write_text("sites:\n  s:\n    token: 98765432109876543\n    panel_url: http://x/p\n")
    result = cli("-c", isolated / "number.yaml", "config", "show")  # a token written unquoted: never quoted back
    assert result.exit_code == 2 and "number.yaml:3:12: sites.s.token: expected a string, got a number" in result.stderr
    assert "98765432109876543" not in result.stderr


def test_dry_run_hides_the_token_and_its_curl_line_still_works(cli, isolated, stdlib_server, token_env):
    base = stdlib_server.url.removeprefix("http://")
    config_with_token_in_urls(isolated / "opcli.yaml", base)
    result = cli("send", "--user", 1, "--bot", 2, "-m", "x", "--dry-run")
    as_json = cli("send", "--user", 1, "--bot", 2, "-m", "x", "--dry-run", "--json")
    assert result.exit_code == as_json.exit_code == 0
    assert_no_token(result.stdout, result.stderr, as_json.stdout)
    assert f'"http://{base}/api?token=$OPCLI_TOKEN&v=1"' in result.stdout
    curl = next(line for line in result.stdout.splitlines() if line.startswith("curl "))
    assert json.loads(as_json.stdout)["curl"] == curl
    env = {"OPCLI_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(["bash", "-c", curl], env=env, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    [got] = stdlib_server.received
    assert got.path == f"/api?token={TOKEN}&v=1" and got.field("token") == TOKEN


def test_verbose_and_config_show_hide_the_token(cli, isolated, stdlib_server, token_env):
    config_with_token_in_urls(isolated / "opcli.yaml", stdlib_server.url.removeprefix("http://"), password=True)
    verbose = cli("send", "--user", 1, "--bot", 2, "-m", "x", "-v")
    assert verbose.exit_code == 0, verbose.stderr
    assert "> POST http://opcli:***@" in verbose.stderr
    assert stdlib_server.received[0].path == f"/api?token={TOKEN}&v=1"  # what was sent is the real thing
    shown = cli("config", "show")
    shown_json = cli("config", "show", "--json")
    assert "token=…8765" in shown.stdout and "opcli:***@" in shown.stdout
    assert json.loads(shown_json.stdout)["token"] == "…8765"
    assert_no_token(verbose.stdout, verbose.stderr, shown.stdout, shown_json.stdout)


def test_batch_warnings_json_lines_and_junit_hide_the_token(cli, isolated, token_env):
    config_with_token_in_urls(isolated / "opcli.yaml", f"127.0.0.1:{free_port()}", password=True)
    (isolated / "m.jsonl").write_text(json.dumps({"user": 1, "bot": 2, "message": "m"}) + "\n")
    human = cli("send", "--batch", isolated / "m.jsonl")
    lines = cli("send", "--batch", isolated / "m.jsonl", "--json")
    check = cli("check", "--junit", isolated / "r.xml")
    assert human.exit_code == lines.exit_code == check.exit_code == 3
    assert "warning: line 1: cannot reach http://opcli:***@127.0.0.1" in human.stderr
    assert lines.stdout == "" and "token=…8765" in lines.stderr  # (exit 3: stdout stays empty)
    report = (isolated / "r.xml").read_text()
    assert ET.fromstring(report).find("testsuite").get("failures") == "9"
    assert_no_token(human.stdout, human.stderr, lines.stdout, lines.stderr, check.stderr, report)


def test_config_errors_quote_the_url_as_written(cli, isolated, token_env):
    (isolated / "opcli.yaml").write_text(
        'sites:\n  s:\n    token: ${PANEL_TOKEN}\n    panel_url: "ftp://host/api?token=${PANEL_TOKEN}"\n'
    )
    result = cli("config", "validate")
    assert result.exit_code == 2
    assert "got 'ftp://host/api?token=${PANEL_TOKEN}'" in result.stderr
    assert_no_token(result.stderr)


# --- empty variables (item 5) ------------------------------------------------------------------


def test_an_empty_variable_takes_the_default_as_posix_says(monkeypatch):
    from opcli.config import load_config

    monkeypatch.setenv("OPCLI_TOKEN", "")
    assert load_config().site.token == "dev-token"


@pytest.mark.parametrize(
    "token, env",
    [("${SITE_TOKEN}", {"SITE_TOKEN": ""}), ("${SITE_TOKEN:-}", {}), ('""', {})],
)
def test_an_empty_token_is_a_config_error_naming_the_variable(cli, isolated, monkeypatch, token, env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    (isolated / "opcli.yaml").write_text(f"sites:\n  s:\n    token: {token}\n    panel_url: http://127.0.0.1:9/api\n")
    from opcli.config import load_config

    with pytest.raises(ConfigError) as caught:
        load_config()
    [problem] = caught.value.problems
    assert problem.startswith("opcli.yaml:3:12: sites.s.token: the token is empty")
    assert ("$SITE_TOKEN" in problem) == ("SITE_TOKEN" in token)
    for argv in (["config", "validate"], ["listen", "--port", "0", "--timeout", "0.1"]):
        result = cli(*argv)
        assert result.exit_code == 2 and "the token is empty" in result.stderr


def test_a_token_as_the_url_password_dry_run_curl_uses_the_variable(cli, isolated, monkeypatch, stdlib_server):
    """The curl line must work: the password is $OPCLI_TOKEN, not a masked ***; -v shows the auth header masked."""
    import base64
    import os

    secret = "TOKxyz-very-secret-123456"
    monkeypatch.setenv("TOK", secret)
    where = stdlib_server.url.replace("http://", "")
    write_config(isolated / "opcli.yaml", panel_url=f"http://u:${{TOK}}@{where}/api", token="${TOK}")
    result = cli("send", "--user", 42, "--bot", 7, "-m", "hi", "--dry-run")
    assert result.exit_code == 0 and secret not in result.stdout + result.stderr
    curl = result.stdout.strip().splitlines()[-1]
    assert f'"http://u:$OPCLI_TOKEN@{where}/api"' in curl
    done = subprocess.run(["bash", "-c", curl], env={**os.environ, "OPCLI_TOKEN": secret}, capture_output=True)
    assert done.returncode == 0
    assert (
        stdlib_server.received[-1].headers["Authorization"]
        == "Basic " + base64.b64encode(f"u:{secret}".encode()).decode()
    )
    verbose = cli("send", "--user", 42, "--bot", 7, "-m", "hi", "-v")
    assert "> authorization: Basic ***" in verbose.stderr and secret not in verbose.stderr


def test_hiding_in_json_values_covers_numbers_and_php_escaped_slashes():
    from opcli.protocol import hide_secrets_in

    token = "AbC+dEf/GhI=xyz-1"
    value = {"n": 123456789012, "s": "AbC+dEf\\/GhI=xyz-1", "q": "AbC%2BdEf/GhI%3Dxyz-1", "ok": 5, token: [True]}
    hidden = hide_secrets_in(value, (token, "123456789012"))
    assert hidden == {"n": "***", "s": "…yz-1", "q": "…yz-1", "ok": 5, "…yz-1": [True]}


def test_a_secret_is_found_in_any_mix_of_its_forms():
    from opcli.protocol import hide_secrets

    token = "Ab+cd/ef=GH 1234567890xyz"
    encoded = "".join(f"%{b:02X}" for b in token.encode())  # every character %-encoded
    mixed = "%41b%2bcd\\/ef%3dGH+1234567890\\u0078yz"  # upper and lower hex, JSON escapes, + for the space
    for text in (token, encoded, encoded.lower(), mixed, f"?token={encoded}&x=1"):
        assert hide_secrets(text, (token,)).count("…0xyz") == 1, text
    assert hide_secrets("Ab+cd/ef=GH 1234567890xy", (token,)) == "Ab+cd/ef=GH 1234567890xy"  # not the whole token
    # a short secret only where it stands alone, in any form
    assert hide_secrets("abcdef, abc and %61bc", ("abc",)) == "abcdef, *** and ***"


def test_the_listener_keeps_an_encoded_token_out_of_journal_saved_body_and_answers(tmp_path):
    from starlette.testclient import TestClient

    from opcli.config import load_config
    from opcli.listener import create_app
    from opcli.protocol import secret_bytes_pattern
    from tests.conftest import lines_of

    token = "Ab+cd/ef=GH1234567890xyz"
    saved = tmp_path / "saved"
    saved.mkdir()
    app = create_app(load_config(write_config(tmp_path / "c.yaml", token=f'"{token}"'), listen=True), save_dir=saved)
    journal, client = lines_of(app), TestClient(app)
    percent = "".join(f"%{b:02x}" for b in token.encode())
    escaped = "".join(f"\\u{ord(c):04x}" for c in token)
    boundary = "b0und"

    def part(name: str, value: str, filename: str = "") -> str:
        extra = f'; filename="{filename}"' if filename else ""
        return f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n\r\n{value}\r\n'

    body = "".join(
        [
            part("token", token),
            part("action", "message_sent"),
            part("user_id", "42"),
            part("contact_id", "7"),
            part("message", f"see https://x.example/?token={percent}"),
            part("attaches", f'[{{"file_url": "https://a.example/{escaped}.jpg"}}]'),
            part("attach", "data", filename=f"{percent}.jpg"),
            f"--{boundary}--\r\n",
        ]
    )
    r = client.post(
        "/operator-api", content=body.encode(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    assert r.status_code == 200, r.text
    line = json.dumps(journal[-1])
    assert "…0xyz" in journal[-1]["fields"]["message"] and journal[-1]["attaches"][0]["file_url"].count("…0xyz") == 1
    assert journal[-1]["files"][0]["filename"] == "…0xyz.jpg"
    pattern = secret_bytes_pattern(token)
    assert not pattern.search(line.encode())
    files = list(saved.iterdir())
    assert files and not any(pattern.search(path.read_bytes()) for path in files)
    # its first two characters typed as \u escapes, the only form of it in the call: in the journal's
    # line each escape's backslash is doubled
    r = client.post("/hooks/user-info", data={"token": token, "user_id": "42", "note": f"{escaped[:12]}{token[2:]}"})
    assert r.status_code == 200 and journal[-1]["fields"]["note"] == "…0xyz"
    # answers that quote the request: a path, a content type; the journal keeps the client's spelling to mask it
    for path, content_type, status in [
        (f"/x/{percent}", "text/plain", 404),
        ("/hooks/user-info", f"text/{token}", 415),
    ]:
        r = client.post(path, content=b"x", headers={"content-type": content_type})
        assert r.status_code == status and not pattern.search(r.content), r.text
        assert not pattern.search(json.dumps(journal[-1]).encode())
    assert journal[-1]["content_type"] == "text/…0xyz"
    # a boundary that is the token: the body cannot be saved without it
    r = client.post(
        "/hooks/user-info",
        content=f'--{token}\r\nContent-Disposition: form-data; name="user_id"\r\n\r\n42\r\n'
        f'--{token}\r\nContent-Disposition: form-data; name="token"\r\n\r\n{token}\r\n--{token}--\r\n'.encode(),
        headers={"content-type": f'multipart/form-data; boundary="{token}"'},
    )
    assert r.status_code == 200 and "body" not in journal[-1]
    assert journal[-1]["warnings"] == ["the Content-Type holds the token: the body is not saved"]
    assert not any(pattern.search(path.read_bytes()) for path in saved.iterdir())


def test_a_short_token_found_in_the_media_type_does_not_keep_bodies_from_being_saved(tmp_path):
    from starlette.testclient import TestClient

    from opcli.config import load_config
    from opcli.listener import create_app
    from tests.conftest import lines_of

    (tmp_path / "saved").mkdir()
    app = create_app(
        load_config(write_config(tmp_path / "c.yaml", token="form"), listen=True), save_dir=tmp_path / "saved"
    )
    journal = lines_of(app)
    r = TestClient(app).post(
        "/hooks/user-info", data={"token": "form", "user_id": "42"}, files={"attach": ("a.txt", b"x")}
    )
    assert r.status_code == 200 and journal[-1]["warnings"] == [] and journal[-1]["body"]["token_at"]
