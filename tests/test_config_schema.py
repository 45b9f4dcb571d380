"""``opcli config schema``: the JSON Schema of the config file, built from the specs that validate it."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import yaml

from opcli.config import BUILTIN, SAMPLE
from opcli.config.checks import _SITE_SPEC, LISTEN_SPEC
from opcli.config.schema import UNDESCRIBED, config_schema


def as_json(text: str) -> Any:
    """A YAML config as a JSON tool (an editor's language server) sees it: keys are strings."""
    return json.loads(json.dumps(yaml.safe_load(text)))


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = config_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def leaves(spec: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    found = []
    for key, conv in spec.items():
        name = f"{prefix}{key}"
        found += leaves(conv, f"{name}.") if isinstance(conv, dict) else [(name, conv)]
    return found


@pytest.mark.parametrize("section, spec", [("site", _SITE_SPEC), ("listen", LISTEN_SPEC)])
def test_every_key_the_loader_knows_is_described(section, spec):
    """A key added to a spec needs a fragment (checks.fragment, or a FreeForm) to pass this test."""
    schema = config_schema()
    root = (
        schema["properties"]["sites"]["additionalProperties"] if section == "site" else schema["properties"]["listen"]
    )
    for dotted, _ in leaves(spec):
        node = root
        for part in dotted.split("."):
            assert node.get("additionalProperties") is False, f"{section}: {dotted}: unknown keys must be refused"
            node = node["properties"][part]
        assert node is not UNDESCRIBED and node, (
            f"{section}.{dotted}: its converter has no schema fragment: decorate it with @fragment({{...}}) in "
            "config/checks.py (or use FreeForm(schema) for a key that listen_section checks itself)"
        )


@pytest.mark.parametrize("path", [SAMPLE, BUILTIN], ids=["sample-config.yaml", "defaults.yaml"])
def test_the_shipped_configs_are_valid(validator, path):
    errors = [e.message for e in validator.iter_errors(as_json(path.read_text()))]
    assert errors == []


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda c: c["sites"]["local"].update(tiemout=5), "'tiemout' was unexpected"),
        (lambda c: c.update(extra=1), "'extra' was unexpected"),
        (lambda c: c["listen"].update(colour="red"), "'colour' was unexpected"),
        (lambda c: c["sites"]["local"]["webhooks"].update(user_infos="https://x.example/"), "'user_infos'"),
        (lambda c: c["sites"]["local"].pop("token"), "'token' is a required property"),
        (lambda c: c["sites"]["local"].update(timeout=-1), "is not valid under any of the given schemas"),
        (lambda c: c["sites"]["local"].update(webhook_encoding="xml"), "is not valid under any of the given schemas"),
        (lambda c: c["listen"].update(strict="yes"), "'yes' is not of type 'boolean'"),
        (lambda c: c["listen"]["users"]["42"].update(balance=9.5), "9.5 is not of type 'string'"),
        (lambda c: c["listen"]["users"].update(abc={}), "'abc' is not valid under any of the given schemas"),
        (lambda c: c["listen"]["media"]["42"].append({"url": "/relative.jpg"}), "does not match"),
    ],
)
def test_a_config_with_a_mistake_is_refused(validator, change, expected):
    config = as_json(SAMPLE.read_text())
    change(config)
    errors = " | ".join(e.message for e in validator.iter_errors(config))
    assert expected in errors


@pytest.mark.parametrize("path", [SAMPLE, BUILTIN], ids=["sample-config.yaml", "defaults.yaml"])
def test_the_shipped_configs_validate_as_a_user_validates_them(cli, path):
    """`opcli config schema > s.json`, then jsonschema on the YAML as PyYAML reads it: `42:` is an int key."""
    schema_text = cli("config", "schema").stdout
    with open(path) as f:
        config = yaml.safe_load(f)
    assert config["listen"]["users"] and all(type(key) is int for key in config["listen"]["users"])
    assert config["listen"]["media"] and all(type(key) is int for key in config["listen"]["media"])
    jsonschema.validate(config, json.loads(schema_text))  # raised TypeError on the int keys


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda users, media: users[42].update(balance=9.5), "9.5 is not of type 'string'"),
        (lambda users, media: users.update({"43": {"name": "Str"}}), "'gender' is a required property"),
        (lambda users, media: media[42].append({"url": "/relative.jpg"}), "does not match"),
        (lambda users, media: users.update({"abc": users[42]}), "'abc' is not valid under any of the given schemas"),
        (lambda users, media: media.update({-1: []}), "-1 is not valid under any of the given schemas"),
        (lambda users, media: media.update({4.5: []}), "4.5 is not valid under any of the given schemas"),
    ],
    ids=["int-key-bad-value", "string-key-bad-value", "int-key-bad-media", "word-key", "negative-key", "float-key"],
)
def test_a_mistake_under_an_int_key_is_still_refused(cli, change, expected):
    schema = json.loads(cli("config", "schema").stdout)
    config = yaml.safe_load(SAMPLE.read_text())
    change(config["listen"]["users"], config["listen"]["media"])
    with pytest.raises(jsonschema.ValidationError) as caught:
        jsonschema.validate(config, schema)
    everything = " | ".join(e.message for e in jsonschema.Draft7Validator(schema).iter_errors(config))
    assert expected in everything, caught.value


def test_a_quoted_id_is_accepted_as_well(validator):
    config = yaml.safe_load(SAMPLE.read_text())
    config["listen"]["users"]["43"] = config["listen"]["users"][42]
    config["listen"]["media"]["43"] = []
    assert list(validator.iter_errors(config)) == []


def test_variables_and_number_strings_are_accepted_where_the_loader_takes_them(validator):
    config = as_json(SAMPLE.read_text())
    config["sites"]["local"].update(timeout="${TIMEOUT:-5}", panel_url="${PANEL_URL}", attaches_encoding="${ENC}")
    config["listen"].update(port="8765", unknown_user="404", keep=100)
    assert list(validator.iter_errors(config)) == []


def test_config_schema_command_prints_it(cli):
    result = cli("config", "schema")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == config_schema()


def test_a_converter_without_a_fragment_is_noticed(monkeypatch):
    """What a helper adding `listen.something` with a bare converter sees: the key, undescribed."""
    monkeypatch.setitem(LISTEN_SPEC, "something", lambda value: value)
    assert config_schema()["properties"]["listen"]["properties"]["something"] is UNDESCRIBED
