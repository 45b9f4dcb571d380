"""Kind names: ``user-info`` is ``user_info`` wherever a kind is given (protocol.kind_name)."""

from __future__ import annotations

import threading

import httpx
import pytest

from opcli.config.checks import operator_settings
from opcli.listener import ListenerThread
from opcli.listener.faults import parse_rule
from opcli.load_runner import parse_weights
from opcli.protocol import KINDS, kind_name
from tests.conftest import write_config


@pytest.mark.parametrize(
    "written, kind",
    [
        ("user-info", "user_info"),
        ("user_info", "user_info"),
        ("message-sent", "message_sent"),
        ("send_message", "send_message"),
    ],
)
def test_either_spelling_is_the_journal_s_name(written, kind):
    assert kind_name(written) == kind


@pytest.mark.parametrize("written", ["user-infos", "User_Info", "", " user_info", None, 3, "unknown", "*"])
def test_anything_else_is_refused_listing_the_kinds(written):
    with pytest.raises(
        ValueError, match=r"^unknown kind .* \(expected one of message_sent, send_message, user_info, user_media\)$"
    ):
        kind_name(written)


def test_the_caller_says_which_names_it_takes():
    assert kind_name("unknown", (*KINDS, "unknown")) == "unknown"
    assert kind_name("user-media", ("user_info", "user_media")) == "user_media"
    with pytest.raises(ValueError, match=r"expected one of user_info, user_media\)"):
        kind_name("send-message", ("user_info", "user_media"))


def test_wait_for_takes_a_dashed_kind_and_refuses_a_bad_one_at_once():
    with ListenerThread() as listener:
        reply = httpx.post(listener.endpoints["user_info"], data={"token": listener.token, "user_id": "42"})
        assert reply.status_code == 200
        [call] = listener.wait_for("user-info", timeout=5)
        assert call.kind == "user_info" and call.fields == {"user_id": "42"}
        with pytest.raises(ValueError, match=r"unknown kind 'user-infos' \(expected one of .*user_media, unknown\)"):
            listener.wait_for("user-infos", timeout=60)
        # and it still waits for one that has not come: the dashed name is not a shortcut to "done"
        sender = threading.Timer(
            0.2, lambda: httpx.post(listener.endpoints["user_media"], data={"token": listener.token, "user_id": "7"})
        )
        sender.start()
        try:
            [media] = listener.wait_for("user-media", timeout=5)
        finally:
            sender.join()
        assert media.kind == "user_media"
        with pytest.raises(AssertionError, match="waited 0.2s for 1 send_message call"):
            listener.wait_for("send-message", timeout=0.2)


def test_faults_and_the_operator_s_fetch_take_either_spelling():
    assert parse_rule("user-info:status=500").kind == "user_info"
    assert parse_rule("send_message:reset").kind == "send_message"
    with pytest.raises(ValueError, match=r"unknown kind 'user-infos' \(expected one of .*user_media, \*\)"):
        parse_rule("user-infos:reset")
    assert operator_settings(fetch=["user-media", "user_info"]).fetch == ("user_media", "user_info")
    with pytest.raises(ValueError, match="each webhook may be listed once"):
        operator_settings(fetch=["user-info", "user_info"])
    with pytest.raises(ValueError, match="expected user_info or user_media in the list, got 'send-message'"):
        operator_settings(fetch=["send-message"])


def test_load_mix_reads_either_spelling(cli, tmp_path):
    assert parse_weights("user-media=1, message-sent=2,send_message=0", KINDS, "--mix", kind_name) == {
        "user_media": 1.0,
        "message_sent": 2.0,
    }
    config = tmp_path / "c.yaml"
    config.write_text("sites:\n  s:\n    panel_url: http://127.0.0.1:9/p\n    token: t\n")
    # read as user_media: the site lacks its URL (exit 2 before Locust starts, as for user_media=1)
    result = cli("-c", config, "load", "--mix", "user-media=1", "--user-ids", "1")
    assert result.exit_code == 2
    assert "site 's' has no webhooks.user_media" in result.stderr
    result = cli("-c", config, "load", "--mix", "user-info=1,user_info=2", "--user-ids", "1")
    assert result.exit_code == 2 and "user_info is given twice" in result.stderr
    result = cli("-c", write_config(tmp_path / "w.yaml"), "load", "--mix", "user-infos=1", "--user-ids", "1")
    assert result.exit_code == 2
    assert "--mix 'user-infos=1': expected NAME=WEIGHT,... with NAME one of message_sent" in result.stderr


def test_the_library_takes_either_spelling_and_names_a_bad_kind():
    from opcli import fetch

    with ListenerThread() as listener:
        judged = fetch(listener.site, "user-info", 42)
        assert judged.reply.status == 200 and judged.data["id"] == 42 and not judged.violations
        assert fetch(listener.site, "user-media", 42).reply.url.endswith("/hooks/user-media")
        with pytest.raises(ValueError, match="unknown kind 'user-infos'"):
            fetch(listener.site, "user-infos", 42)
        with pytest.raises(ValueError, match="unknown kind 'message_sent'"):
            fetch(listener.site, "message_sent", 42)  # a kind, but no webhook the panel fetches
        assert listener.site.url("send-message").endswith("/hooks/send-message")
