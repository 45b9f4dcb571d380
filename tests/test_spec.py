"""``opcli spec``: a valid OpenAPI 3.1 document, made of the contract models, that real tools can drive."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest
import yaml
from openapi_spec_validator import validate

from opcli.config import BUILTIN, load_config
from opcli.listener import ListenerThread
from opcli.protocol import ID_FIELDS, KNOWN_FIELDS, MAX_ID, check_reply
from opcli.spec import build_spec, render, reply_schemas
from tests.conftest import write_config


@pytest.mark.parametrize("side", [None, "panel", "site"])
@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_the_document_is_valid_openapi_31_in_both_formats(side, fmt):
    text = render(build_spec(load_config().site, side), fmt)
    doc = yaml.safe_load(text) if fmt == "yaml" else json.loads(text)
    validate(doc)
    assert doc["openapi"] == "3.1.0"


def test_paths_are_the_selected_sites_and_webhooks_are_listed_for_documentation():
    doc = build_spec(load_config().site)
    assert set(doc["paths"]) == {"/operator-api", "/hooks/send-message", "/hooks/user-info", "/hooks/user-media"}
    assert doc["servers"][0]["variables"]["host"]["default"] == "127.0.0.1:8765"
    assert doc["webhooks"]["user_info"] == {"$ref": "#/paths/~1hooks~1user-info"}
    site_only = build_spec(load_config().site, "site")
    assert set(site_only["paths"]) == {"/hooks/send-message", "/hooks/user-info", "/hooks/user-media"}
    assert "webhooks" not in site_only and "MessageSentCall" not in site_only["components"]["schemas"]
    panel = build_spec(load_config().site, "panel")
    assert list(panel["paths"]) == ["/operator-api"] and "UserInfo" not in panel["components"]["schemas"]


def test_another_sites_paths_and_hosts(isolated):
    config = write_config(
        isolated / "opcli.yaml", panel_url="https://panel.example.com/start/api", hooks="https://site.example/op"
    )
    doc = build_spec(load_config(config).site)
    assert set(doc["paths"]) == {"/start/api", "/op/send-message", "/op/user-info", "/op/user-media"}
    assert doc["servers"][0]["variables"]["host"]["default"] == "site.example"
    panel_servers = doc["paths"]["/start/api"]["servers"]
    assert panel_servers[0]["variables"]["host"]["default"] == "panel.example.com"


def test_the_replies_are_the_contract_models_json_schema():
    doc = build_spec(load_config().site, "site")
    schemas = doc["components"]["schemas"]
    assert schemas["UserInfo"] == reply_schemas()["UserInfo"]
    assert schemas["UserInfo"]["properties"]["balance"]["type"] == "string"
    assert schemas["UserInfo"]["properties"]["id"]["maximum"] == MAX_ID
    info = doc["paths"]["/hooks/user-info"]["post"]
    assert info["responses"]["200"]["content"]["application/json"]["schema"]["anyOf"][0] == {
        "$ref": "#/components/schemas/UserInfo"
    }
    assert info["responses"]["401"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Refusal"}


PROFILE = {
    "id": 42,
    "name": "A",
    "gender": "f",
    "avatar": "",
    "balance": "1.00",
    "location": "",
    "about": "",
    "custom": [],
}


@pytest.mark.parametrize(
    "reply",
    [
        PROFILE,
        {**PROFILE, "avatar": "https://x.example/a.jpg", "extra": 1,
         "custom": [{"name": "eyes", "value": "green"}, {"name": "age", "value": 30}]},
        {**PROFILE, "id": "42"},
        {**PROFILE, "balance": 12.5},
        {**PROFILE, "avatar": "me.jpg"},
        {**PROFILE, "custom": [{"name": "eyes"}]},
        {"id": 42, "name": "A"},
        {"media": [{"url": "https://x.example/1.jpg", "big": "https://x.example/1b.jpg"}, {"url": "https://x/2"}]},
        {"media": [{"url": "1.jpg"}]},
        {"media": "none"},
    ],
)  # fmt: skip
def test_the_schema_and_check_reply_agree(reply):
    kind = "user_media" if "media" in reply else "user_info"
    defs = reply_schemas("#/$defs/{model}")
    validator = jsonschema.Draft202012Validator(
        {**defs["UserInfo" if kind == "user_info" else "MediaReply"], "$defs": defs}
    )
    violations = [f for f in check_reply(kind, reply, 42)[1] if f.level == "violation"]
    assert validator.is_valid(reply) == (not violations)


def test_every_call_has_its_known_fields_and_integer_ids():
    schemas = build_spec(load_config().site)["components"]["schemas"]
    for kind, name in (
        ("message_sent", "MessageSentCall"),
        ("send_message", "SendMessageCall"),
        ("user_info", "UserInfoCall"),
        ("user_media", "UserMediaCall"),
    ):
        form = schemas[name]
        assert set(form["properties"]) >= KNOWN_FIELDS[kind]
        assert set(form["required"]) >= {"token", *ID_FIELDS[kind]}
        for field in ID_FIELDS[kind]:
            assert form["properties"][field]["type"] == "integer"
            assert (form["properties"][field]["minimum"], form["properties"][field]["maximum"]) == (0, MAX_ID)
    assert "attach" not in schemas["SendMessageCall"]["properties"]  # urlencoded: no file
    assert schemas["SendMessageCallWithFile"]["properties"]["attach"]["format"] == "binary"
    message = schemas["MessageSentCall"]
    assert message["properties"]["attach"]["format"] == "binary"
    attaches = message["properties"]["attaches"]
    assert (attaches["type"], attaches["contentMediaType"]) == ("string", "application/json")
    assert attaches["contentSchema"]["items"] == {"$ref": "#/components/schemas/Photo"}
    [pattern] = message["patternProperties"]
    assert jsonschema.Draft202012Validator({"patternProperties": {pattern: {"type": "integer"}}}).is_valid(
        {"attaches[0][file_url]": 1, "attaches[12][big]": 2, "attaches[x][big]": "not a photo field"}
    )


def test_spec_command_writes_a_file_and_picks_json_by_its_name(cli, isolated):
    result = cli("spec", "-o", "operator-api.yaml")
    assert result.exit_code == 0, result.stderr
    assert "wrote operator-api.yaml" in result.stderr and result.stdout == ""
    validate(yaml.safe_load((isolated / "operator-api.yaml").read_text()))
    assert cli("spec", "--side", "panel", "-o", "panel.json").exit_code == 0
    assert list(json.loads((isolated / "panel.json").read_text())["paths"]) == ["/operator-api"]
    shown = cli("spec", "--side", "site", "--format", "json")
    assert json.loads(shown.stdout)["info"]["title"] == "Operator API"
    assert "dev-token" not in shown.stdout and "dev-token" not in (isolated / "operator-api.yaml").read_text()


def test_spec_command_errors(cli, isolated):
    bad = cli("spec", "--side", "both")
    assert bad.exit_code == 2 and "opcli: error: --side: 'both' is not one of 'panel', 'site'" in bad.stderr
    (isolated / "opcli.yaml").write_text(
        "sites:\n  s:\n    token: t\n    webhooks: {user_info: https://s.example/ui}\n"
    )
    missing = cli("spec", "--side", "panel")
    assert missing.exit_code == 2 and "has no panel_url" in missing.stderr
    assert list(yaml.safe_load(cli("spec").stdout)["paths"]) == ["/ui"]
    unwritable = cli("spec", "-o", str(isolated / "no" / "such" / "dir.yaml"))
    assert unwritable.exit_code == 2 and "cannot write" in unwritable.stderr


def test_schemathesis_drives_the_listener_with_the_site_document(isolated):
    """A real consumer: Schemathesis, from the document alone, against the listener on a free port.

    Every check but negative_data_rejection: its "invalid" form bodies are not always invalid on the wire
    (a value of a mutated type travels as text; an extra field it made required is just an unknown field).
    """
    config = load_config(BUILTIN, listen=True)
    (isolated / "operator-api.yaml").write_text(render(build_spec(config.site, "site")))
    # the token is a form field: Schemathesis sends the real one from the environment
    (isolated / "schemathesis.toml").write_text('[parameters]\n"body.token" = "${OPCLI_TOKEN}"\n')
    with ListenerThread(config) as listener:
        done = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run", "operator-api.yaml", "--url", listener.url,
             "--checks", "all", "--exclude-checks", "negative_data_rejection",
             "--phases", "examples,fuzzing", "--max-examples", "15", "--seed", "1", "--workers", "1"],
            capture_output=True, text=True, timeout=300, cwd=isolated,
            env={"OPCLI_TOKEN": listener.token, "PATH": "/usr/bin:/bin", "HOME": str(isolated), "NO_COLOR": "1"},
        )  # fmt: skip
        calls = listener.calls
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "No issues found" in done.stdout
    statuses = {(c.kind, c.status) for c in calls}
    # valid calls were answered with data, invalid ones refused: the document let Schemathesis make both
    assert {("user_info", 200), ("user_media", 200), ("send_message", 200)} <= statuses
    assert any(kind == "user_info" and status == 422 for kind, status in statuses)
