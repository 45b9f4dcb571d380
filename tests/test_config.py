"""Config: discovery, interpolation (lazy), validation errors with FILE:LINE:COL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from opcli.config import BUILTIN, SAMPLE, load_config
from opcli.errors import ConfigError
from opcli.listener.canned import Canned
from tests.conftest import write_config


def problems(path: Path, **kwargs) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, **kwargs)
    return info.value.problems


def test_builtin_defaults_work_with_no_config():
    config = load_config()
    assert config.path == str(BUILTIN)
    assert config.site.name == "local"
    assert config.site.token == "dev-token"
    assert config.site.url("message_sent") == "http://127.0.0.1:8765/operator-api"
    assert config.site.url("user_info") == "http://127.0.0.1:8765/hooks/user-info"
    assert config.site.timeout == 10.0 and config.site.verify is True


def test_builtin_token_comes_from_opcli_token(monkeypatch):
    monkeypatch.setenv("OPCLI_TOKEN", "from-the-environment")
    assert load_config().site.token == "from-the-environment"


def test_discovery_order(isolated, tmp_path, monkeypatch):
    user = tmp_path / "xdg" / "opcli" / "config.yaml"
    user.parent.mkdir(parents=True)
    write_config(user, token="user-dir")
    assert load_config().site.token == "user-dir"
    write_config(isolated / "opcli.yaml", token="cwd")
    assert load_config().site.token == "cwd"
    env_file = write_config(tmp_path / "env.yaml", token="env")
    monkeypatch.setenv("OPCLI_CONFIG", str(env_file))
    assert load_config().site.token == "env"
    explicit = write_config(tmp_path / "explicit.yaml", token="explicit")
    assert load_config(explicit).site.token == "explicit"


def test_first_file_found_is_the_whole_config(isolated):
    write_config(isolated / "opcli.yaml")
    config = load_config()
    assert config.site_names == ["test"]  # the built-in 'local' is not merged in
    with pytest.raises(ConfigError, match="no site 'local'"):
        load_config(site="local")


def test_missing_explicit_config_is_an_error(tmp_path, monkeypatch):
    assert problems(tmp_path / "nope.yaml") == [f"{tmp_path / 'nope.yaml'}: config file not found (from --config)"]
    monkeypatch.setenv("OPCLI_CONFIG", str(tmp_path / "gone.yaml"))
    with pytest.raises(ConfigError, match=r"gone.yaml: config file not found \(from \$OPCLI_CONFIG\)"):
        load_config()


def test_site_selection(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("default_site: a\nsites:\n  a: {token: ta}\n  b: {token: tb}\n")
    assert load_config(path).site.token == "ta"
    monkeypatch.setenv("OPCLI_SITE", "b")
    assert load_config(path).site.token == "tb"
    assert load_config(path, site="a").site.token == "ta"
    assert problems(path, site="zz") == [f"{path}:3:3: no site 'zz' (from --site); sites: a, b"]


def test_interpolation_with_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("HOST", "panel.test")
    monkeypatch.setenv("SECRET", "s3cr3t-value-xyz")
    path = tmp_path / "c.yaml"
    path.write_text(
        "sites:\n  a:\n    panel_url: https://${HOST}/start/api\n    token: ${SECRET}\n"
        "    timeout: ${TIMEOUT:-2.5}\n    check: {user: '${CHECK_USER:-11}'}\n"
    )
    site = load_config(path).site
    assert site.panel_url == "https://panel.test/start/api"
    assert site.token == "s3cr3t-value-xyz"
    assert site.timeout == 2.5
    assert site.check == {"user": 11}


def test_unset_variable_is_lazy(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("default_site: local\nsites:\n  local: {token: dev}\n  prod:\n    token: ${PROD_TOKEN}\n")
    assert load_config(path).site.token == "dev"  # a missing PROD_TOKEN does not break 'local'
    assert problems(path, site="prod") == [
        f"{path}:5:12: sites.prod.token: environment variable PROD_TOKEN is not set "
        "(set it, or write ${PROD_TOKEN:-default})"
    ]
    monkeypatch.setenv("PROD_TOKEN", "p")
    assert load_config(path, site="prod").site.token == "p"


def test_unset_variable_in_listen_only_matters_to_the_listener(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sites:\n  a: {token: t}\nlisten:\n  host: ${LISTEN_HOST}\n")
    assert load_config(path).site.token == "t"
    assert problems(path, listen=True) == [
        f"{path}:4:9: listen.host: environment variable LISTEN_HOST is not set "
        "(set it, or write ${LISTEN_HOST:-default})"
    ]


def test_every_error_at_once_with_positions(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("""\
default_site: test
sites:
  test:
    panel_url: ftp://nope
    token: t
    tiemout: 3
    timeout: -1
    verify: /no/such/bundle.pem
    webhooks:
      user_info: not a url
    attaches_encoding: xml
    webhook_encoding: 7
listen:
  port: 99999
  users:
    "7": {name: A, gender: f, avatar: "", balance: 1, location: "", about: "", custom: []}
    7: {name: B}
  media:
    abc: []
""")
    assert problems(path, listen=True) == [
        f"{path}:4:16: sites.test.panel_url: expected an http:// or https:// URL, got 'ftp://nope'",
        f"{path}:6:5: unknown key 'sites.test.tiemout' (expected one of: panel_url, token, webhooks, timeout, "
        "verify, attaches_encoding, webhook_encoding, check)",
        f"{path}:7:14: sites.test.timeout: expected a number of seconds above 0, got -1",
        f"{path}:8:13: sites.test.verify: expected true, false or a CA bundle file, got '/no/such/bundle.pem' "
        "(no such file)",
        f"{path}:10:18: sites.test.webhooks.user_info: expected an http:// or https:// URL, got 'not a url'",
        f"{path}:11:24: sites.test.attaches_encoding: expected one of brackets, json, got 'xml'",
        f"{path}:12:23: sites.test.webhook_encoding: expected one of urlencoded, multipart, got 7",
        f"{path}:14:9: listen.port: expected a whole number from 0 to 65535, got 99999",
        f"{path}:17:5: listen.users: user 7 is listed twice",
        f"{path}:16:10: listen.users.7: balance: expected a string, found number 1 "
        "(canned replies follow the contract)",
        f"{path}:19:5: listen.media: key 'abc' is not a user id (a whole number)",
    ]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("sites:\n  a: [1,\n", ":3:1: YAML syntax error: expected the node content, but found '<stream end>'"),
        ("sites:\n  a: {token: t}\n  a: {token: u}\n", ":3:3: duplicate key 'a'"),
        ("- just\n- a list\n", ":1:1: the config must be a mapping with 'sites:', got a list"),
        ("sites: {}\n", ":1:8: 'sites' must be a mapping with at least one site"),
        ("sites:\n  a: {panel_url: 'http://x'}\n", ":2:6: site 'a' has no token"),
        (
            "sites:\n  a: {token: t}\nlisten: {unknown_user: maybe}\n",
            ":3:24: listen.unknown_user: expected one of template, 404, got 'maybe'",
        ),
        (
            "sitez: {}\nsites:\n  a: {token: t}\n",
            ":1:1: unknown key 'sitez' (expected one of: default_site, sites, listen)",
        ),
        ("sites:\n  a: {token: t, timeout: soon}\n", ":2:26: sites.a.timeout: expected a number, got 'soon'"),
    ],
)
def test_each_error_message(tmp_path, text, expected):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert problems(path, listen=True) == [f"{path}{expected}"]


def test_canned_users_accept_int_and_digit_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "sites:\n  a: {token: t}\nlisten:\n  unknown_user: 404\n  users:\n"
        "    '5': {name: N, gender: m, avatar: '', balance: '1', location: '', about: '', custom: []}\n"
        "  media:\n    6: [{url: 'https://x/1.jpg', big: 'https://x/1b.jpg'}]\n"
    )
    listen = load_config(path, listen=True).listen
    canned = Canned(listen)
    assert canned.user_info(5)["id"] == 5 and canned.user_info(5)["name"] == "N"
    assert canned.user_info(9) is None
    assert listen.media == {6: [{"url": "https://x/1.jpg", "big": "https://x/1b.jpg"}]}


def test_template_fills_id():
    canned = Canned(load_config(listen=True).listen)
    assert canned.user_info(123)["name"] == "User 123"
    assert canned.user_info(123)["id"] == 123


def test_sample_config_is_valid_as_is(cli, isolated):
    top = Path(__file__).resolve().parent.parent / "sample-config.yaml"
    assert top.read_text() == SAMPLE.read_text()
    result = cli("-c", top, "config", "validate")
    assert result.exit_code == 0, result.stderr
    assert "OK" in result.stdout


def test_config_init_refuses_to_overwrite(cli, isolated):
    assert cli("config", "init").exit_code == 0
    assert (isolated / "opcli.yaml").read_text() == SAMPLE.read_text()
    again = cli("config", "init")
    assert again.exit_code == 2 and "--force" in again.stderr
    assert cli("config", "init", "--force").exit_code == 0
    assert cli("config", "validate").exit_code == 0  # ./opcli.yaml is found


def test_config_validate_reports_every_problem_exit_2(cli, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sites:\n  a: {token: t, timeout: x, verify: 3}\n")
    result = cli("-c", path, "config", "validate")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"opcli: error: {path}:2:26: sites.a.timeout: expected a number, got 'x'",
        f"opcli: error: {path}:2:37: sites.a.verify: expected true, false or a CA bundle path, got the number 3",
    ]
    assert result.stdout == ""


def test_config_show_masks_tokens(cli, tmp_path):
    path = write_config(tmp_path / "c.yaml", token="a-very-secret-token")
    result = cli("-c", path, "config", "show", "--json")
    assert result.exit_code == 0
    shown = json.loads(result.stdout)
    assert shown["token"] == "…oken"
    assert "a-very-secret-token" not in result.stdout
    human = cli("-c", path, "config", "show")
    assert "a-very-secret-token" not in human.stdout and "…oken" in human.stdout


def test_command_with_bad_config_is_exit_2_without_traceback(cli, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sites: [\n")
    result = cli("-c", path, "send", "--user", 1, "--bot", 2, "-m", "x", "--json")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"opcli: error: {path}:2:1: YAML syntax error")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["send", "--help"], ["load", "--help"]])
def test_version_and_help_do_not_import_httpx(argv):
    code = (
        "import sys\nfrom opcli.cli import main\nsys.argv = ['opcli', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = ('httpx', 'starlette', 'uvicorn', 'python_multipart', 'locust', 'gevent')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in done.stderr, done.stderr
    if argv == ["--version"]:
        from opcli import __version__

        assert done.stdout == f"opcli {__version__}\n"


def test_a_config_from_a_pipe_is_read(isolated):
    text = write_config(isolated / "c.yaml", token="piped-token-1234567").read_text()
    result = subprocess.run(
        [sys.executable, "-m", "opcli", "-c", "/dev/stdin", "config", "show", "--json"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["file"] == "/dev/stdin" and shown["token"] == "…4567"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (b"", "c.yaml:1:1: 'sites' must be a mapping with at least one site"),
        (b'sites:\n  x:\n    token: "\xff"\n', "c.yaml:3:13: the config is not UTF-8 text (byte 0xff)"),
        (b"sites:\n  x:\n    token: abcdefgh\n    panel_url: http://h/p\n", "c.yaml:3:5: site 'x' has no webhooks"),
    ],
)
def test_config_errors_name_a_line_also_for_an_empty_binary_or_incomplete_file(cli, isolated, text, error):
    (isolated / "c.yaml").write_bytes(text)
    result = cli("-c", isolated / "c.yaml", "user-info", 42)
    assert result.exit_code == 2 and error in result.stderr, result.stderr
