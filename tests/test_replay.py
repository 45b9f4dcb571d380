"""opcli replay: recorded calls sent again byte for byte (token aside), compared, selected, changed."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from opcli.config import load_config
from opcli.errors import UsageError
from opcli.listener import ListenerThread
from opcli.listener.journal import JournalFile
from opcli.replay import first_difference, replay_entry
from tests.conftest import ListenProc, free_port, parse_multipart, write_config
from tests.test_forward import MP, message_body

UNUSUAL = "Zq9-unusual-T0ken-7x7x7x"  # the recording listener's token: grep finds it anywhere it leaked
REPLAY_TOKEN = "replay-site-token-424242"
FORM = "application/x-www-form-urlencoded"
OLGA = (
    "listen:\n  users:\n    42: {name: Olga, gender: female, avatar: '', balance: '9.90', location: Riga, "
    "about: jazz, custom: [{name: eyes, value: green}]}\n"
)


def recorder_config(path: Path, token: str = UNUSUAL, listen: str = OLGA) -> Path:
    return write_config(path, panel_url="http://127.0.0.1:9/operator-api", token=token, listen=listen)


def replay_config(path: Path, base: str, token: str = REPLAY_TOKEN) -> Path:
    """A config whose site ``test`` is at ``base`` (paths as the recorder's)."""
    return write_config(path, panel_url=f"{base}/operator-api", token=token)


URLENCODED = f"user_id=42&token={UNUSUAL}&note=caf%C3%A9+%E2%9C%93".encode()


def send_recorded_calls(url: str) -> list[tuple[str, str, bytes]]:
    """The calls of a session: (path, content type, body) of each, in order."""
    calls = [
        ("/operator-api", MP, message_body(UNUSUAL)),
        ("/hooks/user-info", FORM, URLENCODED),
        ("/hooks/user-media", FORM, f"token={UNUSUAL}&user_id=42".encode()),
        ("/hooks/send-message", FORM, f"token={UNUSUAL}&user_id=7&contact_id=x".encode()),  # rejected: 422
    ]
    for path, ctype, body in calls:
        httpx.post(url + path, content=body, headers={"content-type": ctype})
    return calls


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A session recorded by ``opcli listen --save-dir rec --journal rec/j.jsonl``: (journal, save dir, calls).

    Recorded once for the module; the tests only read it.
    """
    base = tmp_path_factory.mktemp("recorded")
    rec = base / "rec"
    config = recorder_config(base / "rec.yaml")
    proc = ListenProc(
        "-c", str(config), "listen", "--port", "0", "--save-dir", str(rec), "--journal", str(rec / "j.jsonl")
    )
    try:
        calls = send_recorded_calls(proc.url)
    finally:
        proc.close()
    return rec / "j.jsonl", rec, calls


def call_line(seq: int, kind: str, path: str) -> dict:
    """A journal line written by hand: an urlencoded call for user 42, answered 200 ``{}``."""
    return {
        "event": "call",
        "seq": seq,
        "kind": kind,
        "method": "POST",
        "path": path,
        "content_type": FORM,
        "fields": {"user_id": "42"},
        "attaches": [],
        "files": [],
        "status": 200,
        "reply": {},
    }


def journal_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_replay_sends_the_recorded_bytes_with_only_the_token_changed(cli, tmp_path, recorded, stdlib_server):
    journal, rec, calls = recorded
    assert [line["status"] for line in journal_lines(journal)[1:]] == [200, 200, 200, 422]
    # no token on disk: neither in the saved bodies and files nor in the journal
    grep = subprocess.run(["grep", "-r", "-l", "-a", UNUSUAL, str(rec)], capture_output=True, text=True)
    assert grep.returncode == 1, grep.stdout
    config = replay_config(tmp_path / "dev.yaml", "http://127.0.0.1:9")
    result = cli("-c", config, "replay", journal, "--to", stdlib_server.url)
    assert result.exit_code == 0, result.stderr  # the stdlib server answers 200 to every call
    assert len(stdlib_server.received) == 4
    for (path, ctype, body), got in zip(calls, stdlib_server.received, strict=True):
        assert got.path == path
        assert got.headers["Content-Type"] == ctype  # the same boundary
        assert got.body == body.replace(UNUSUAL.encode(), REPLAY_TOKEN.encode())
    assert [r.headers["X-Opcli-Replay"] for r in stdlib_server.received] == ["1", "2", "3", "4"]
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["#1", "message_sent", "200"] and lines[0].endswith(" ok")
    assert lines[3].split()[:3] == ["#4", "send_message", "200"]  # the stdlib server answers 200 to all


def test_expect_same_passes_on_the_same_config_and_names_the_field_that_changed(cli, tmp_path, recorded):
    journal, _, _ = recorded
    same = load_config(recorder_config(tmp_path / "same.yaml", token=REPLAY_TOKEN), listen=True)
    with ListenerThread(same) as target:
        config = replay_config(tmp_path / "dev.yaml", target.url)
        result = cli("-c", config, "replay", journal, "--expect-same", "--json")
        assert result.exit_code == 0, result.stdout + result.stderr
        *rows, summary = [json.loads(line) for line in result.stdout.splitlines()]
        assert [(r["seq"], r["kind"], r["status"], r["same"], r["ok"]) for r in rows] == [
            (1, "message_sent", 200, True, True),
            (2, "user_info", 200, True, True),
            (3, "user_media", 200, True, True),
            (4, "send_message", 422, True, True),  # a rejection reproduced is the same
        ]
        assert set(rows[0]) == {"seq", "kind", "url", "status", "ms", "ok", "same", "diff", "error"}
        assert rows[0]["url"] == f"{target.url}/operator-api"
        assert summary == {
            "summary": {**summary["summary"], "total": 4, "ok": 4, "failed": 0, "same": 4, "different": 0}
        }
        assert [c.replay_of for c in target.calls] == [1, 2, 3, 4]  # the target journals what it replays
    ivan = OLGA.replace("Olga", "Ivan").replace("green", "blue")
    other = load_config(recorder_config(tmp_path / "other.yaml", token=REPLAY_TOKEN, listen=ivan), listen=True)
    with ListenerThread(other) as target:
        config = replay_config(tmp_path / "dev.yaml", target.url)
        result = cli("-c", config, "replay", journal, "--expect-same")
        assert result.exit_code == 1
        assert "#2     user_info     200" in result.stdout
        assert 'different: name: expected "Olga", got "Ivan"' in result.stdout
        assert "1 of 4 replayed calls failed or differed" in result.stderr
        result = cli("-c", config, "replay", journal, "--expect-same", "--kind", "user_info", "--ignore", "name")
        assert result.exit_code == 1 and 'custom.0.value: expected "green", got "blue"' in result.stdout
        ignored = ("--ignore", "name", "--ignore", "custom.0.value")
        assert cli("-c", config, "replay", journal, "--expect-same", "--kind", "user-info", *ignored).exit_code == 0


def test_seq_kind_and_set(cli, tmp_path, recorded, stdlib_server):
    journal, _, calls = recorded
    config = replay_config(tmp_path / "dev.yaml", stdlib_server.url)
    result = cli("-c", config, "replay", journal, "--seq", "1-2,4", "--kind", "user_info", "--json")
    assert [json.loads(line).get("seq") for line in result.stdout.splitlines()] == [2, None]
    assert [r.path for r in stdlib_server.received] == ["/hooks/user-info"]
    # --set rebuilds: the urlencoded call with its fields, one changed and one added
    stdlib_server.received.clear()
    result = cli("-c", config, "replay", journal, "--seq", "2", "--set", "user_id=43", "--set", "extra=1")
    assert result.exit_code == 0, result.stderr
    assert (
        stdlib_server.received[0].body == f"token={REPLAY_TOKEN}&user_id=43&note=caf%C3%A9+%E2%9C%93&extra=1".encode()
    )
    # ... and the multipart one with its photos (brackets, as it came) and its saved file, filename as sent
    result = cli("-c", config, "replay", journal, "--seq", "1", "--set", "message=changed")
    assert result.exit_code == 0, result.stderr
    got = stdlib_server.received[-1]
    assert got.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    fields = dict(got.fields)
    assert fields["token"] == REPLAY_TOKEN and fields["message"] == "changed" and fields["user_id"] == "42"
    assert fields["attaches[0][file_url]"] == "https://cdn.example.com/a.jpg"
    _, original_files = parse_multipart(MP, calls[0][2])
    assert got.files[0]["filename"] == "pic.png" and got.files[0]["content"] == original_files[0]["content"]


def test_a_journal_without_saved_bodies_is_rebuilt(cli, tmp_path, stdlib_server):
    journal = tmp_path / "j.jsonl"
    writer = JournalFile(journal)
    with ListenerThread(load_config(recorder_config(tmp_path / "rec.yaml"), listen=True)) as listener:
        listener.journal.subscribe(writer)
        photos = json.dumps([{"file_url": "https://x/1.jpg", "big": "https://x/1b.jpg"}])
        text = {"token": UNUSUAL, "action": "message_sent", "user_id": "42", "contact_id": "7", "message": "é"}
        httpx.post(
            f"{listener.url}/operator-api", files=[(k, (None, v)) for k, v in {**text, "attaches": photos}.items()]
        )
        httpx.post(f"{listener.url}/hooks/user-info", content=URLENCODED, headers={"content-type": FORM})
        httpx.post(
            f"{listener.url}/operator-api", files={**{k: (None, v) for k, v in text.items()}, "attach": ("a.txt", b"x")}
        )
    writer.close()
    assert all("body" not in line for line in journal_lines(journal))
    target = replay_config(tmp_path / "dev.yaml", stdlib_server.url)
    result = cli("-c", target, "replay", journal)
    assert result.exit_code == 1  # the third call's file was not saved
    first, second = stdlib_server.received
    assert dict(first.fields) == {**text, "token": REPLAY_TOKEN, "attaches": photos}  # JSON attaches, as they came
    assert second.body == f"token={REPLAY_TOKEN}&user_id=42&note=caf%C3%A9+%E2%9C%93".encode()
    assert "#3" in result.stdout and "its file 'a.txt' was not saved (use --save-dir)" in result.stdout


def test_unreachable_target_is_exit_3_with_nothing_on_stdout(cli, tmp_path, recorded):
    journal, _, _ = recorded
    config = replay_config(tmp_path / "dev.yaml", "http://127.0.0.1:9")
    closed = f"http://127.0.0.1:{free_port()}"
    result = cli("-c", config, "replay", journal, "--to", closed, "--json")
    assert result.exit_code == 3 and result.stdout == ""
    assert f"opcli: error: cannot reach {closed}/operator-api: connection refused" in result.stderr


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"event": "call", "seq": 2, "kind": "user_info"\n', "j.jsonl:3: not a JSON line"),
        (
            '{"event": "call", "seq": 2, "kind": "user_info", "path": "/x"}\n',
            "j.jsonl:3: cannot replay this call: no 'content_type'",
        ),
        (
            '{"event": "call", "seq": "2", "kind": "user_info"}\n',
            "j.jsonl:3: cannot replay this call: 'seq' must be an integer",
        ),
        ("[1, 2]\n", "j.jsonl:3: not a journal line"),
    ],
)
def test_a_bad_journal_line_is_exit_2_naming_it(cli, tmp_path, stdlib_server, text, message):
    good = call_line(1, "user_info", "/hooks/user-info")
    journal = tmp_path / "j.jsonl"
    journal.write_text('{"event": "ready"}\n' + json.dumps(good) + "\n" + text)
    config = replay_config(tmp_path / "dev.yaml", stdlib_server.url)
    result = cli("-c", config, "replay", journal, "--json")
    assert result.exit_code == 2 and result.stdout == ""
    assert message in result.stderr
    assert stdlib_server.received == []  # nothing is sent when the journal is not usable


def test_journal_from_stdin_and_usage_errors(cli, tmp_path, stdlib_server):
    line = call_line(5, "user_media", "/hooks/user-media")
    config = replay_config(tmp_path / "dev.yaml", stdlib_server.url)
    stdlib_server.reply_json(200, {"media": []})
    result = cli("-c", config, "replay", "-", "--expect-same", input=json.dumps(line) + "\n")
    assert result.exit_code == 1 and "different: media: not expected (got [])" in result.stdout
    assert stdlib_server.received[0].body == f"token={REPLAY_TOKEN}&user_id=42".encode()
    for args, message in [
        (["--seq", "3-x"], "--seq 3-x: expected numbers and ranges"),
        (["--kind", "nope"], "--kind nope: unknown kind 'nope' (expected one of message_sent, send_message,"),
        (["--set", "novalue"], "--set novalue: expected FIELD=VALUE"),
        (["--to", "ftp://x"], "--to ftp://x: expected an http:// or https:// base URL"),
        (["--seq", "99"], "no calls to replay in stdin"),
    ]:
        result = cli("-c", config, "replay", "-", *args, input=json.dumps(line) + "\n")
        assert result.exit_code == 2 and message in result.stderr, (args, result.stderr)


def test_replay_entry_is_the_core_the_inspector_uses(tmp_path, recorded):
    journal, _, _ = recorded
    config = load_config(recorder_config(tmp_path / "same.yaml", token=REPLAY_TOKEN), listen=True)
    with ListenerThread(config) as target:
        line = journal_lines(journal)[2]
        result = replay_entry(line, target.site, http=None)
        assert (result.seq, result.kind, result.status, result.ok) == (2, "user_info", 200, True)
        assert result.reply["name"] == "Olga" and result.ms > 0
        assert target.calls[-1].replay_of == 2
        elsewhere = replay_entry(line, config.site, base_url=target.url, sets=[("user_id", "7")])
        assert elsewhere.reply["id"] == 7 and elsewhere.url == f"{target.url}/hooks/user-info"


def test_first_difference():
    assert first_difference({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2}]}) is None
    assert first_difference({"a": [1, {"b": 2}]}, {"a": [1, {"b": 3}]}) == "a.1.b: expected 2, got 3"
    assert first_difference({"a": [1, {"b": 2}]}, {"a": [1, {"b": 3}]}, ["a.1.b"]) is None
    assert first_difference({"a": 1}, {"a": 1.0}) == "a: expected 1, got 1.0"
    assert first_difference([1, 2], [1]) == "reply: expected 2 items, got 1"
    assert first_difference("<html>", {"a": 1}) == 'reply: expected "<html>", got {"a": 1}'


def test_concurrency_replays_every_call(cli, tmp_path, recorded, stdlib_server):
    journal, _, calls = recorded
    config = replay_config(tmp_path / "dev.yaml", stdlib_server.url)
    result = cli("-c", config, "replay", journal, "--concurrency", "3", "--json")
    assert result.exit_code == 0, result.stderr
    *rows, summary = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(r["seq"] for r in rows) == [1, 2, 3, 4] and summary["summary"]["total"] == 4
    assert sorted(r.body for r in stdlib_server.received) == sorted(
        body.replace(UNUSUAL.encode(), REPLAY_TOKEN.encode()) for _, _, body in calls
    )


def test_a_reply_cannot_forge_a_row_of_the_output(cli, tmp_path, stdlib_server):
    """What a site answers is shown with its newlines and escapes escaped: one row per call, always."""
    stdlib_server.reply_json(200, {"status": 0, "message": "nope\n#2     user_info     200       1 ms  ok\x1b[0m"})
    journal = tmp_path / "j.jsonl"
    journal.write_text(json.dumps(call_line(1, "user_info", "/hooks/user-info")) + "\n")
    result = cli("-c", replay_config(tmp_path / "dev.yaml", stdlib_server.url), "replay", journal)
    assert result.exit_code == 1
    [row] = result.stdout.splitlines()
    assert row.startswith("#1") and "\\n#2" in row and "\\x1b" in row


@pytest.mark.parametrize(
    "base, shown",
    [
        ("{url}?x=1", "--to {url}?...: a base URL cannot have a query or a fragment"),
        ("{url}/prefix/?token=" + REPLAY_TOKEN, "--to {url}/prefix/?...: a base URL cannot have a query"),
        ("{url}#{token}", "--to {url}#...: a base URL cannot have a query or a fragment"),
        ("{url}?", "--to {url}?...: a base URL cannot"),
        ("http://me:pw-" + REPLAY_TOKEN + "@127.0.0.1:9/?a", "--to http://me:***@127.0.0.1:9/?...: a base URL"),
    ],
    ids=["query", "token-in-query", "fragment", "empty-query", "password"],
)
def test_a_base_url_with_a_query_or_fragment_is_refused(cli, tmp_path, stdlib_server, base, shown):
    journal = tmp_path / "j.jsonl"
    journal.write_text(json.dumps(call_line(1, "user_info", "/hooks/user-info")) + "\n")
    config = replay_config(tmp_path / "dev.yaml", stdlib_server.url)
    base = base.format(url=stdlib_server.url, token=REPLAY_TOKEN)
    result = cli("-c", config, "replay", journal, "--to", base, "--json")
    assert result.exit_code == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("opcli: error: " + shown.format(url=stdlib_server.url)), line
    assert REPLAY_TOKEN not in result.stderr and REPLAY_TOKEN[-4:] not in result.stderr
    assert stdlib_server.received == []
    with pytest.raises(UsageError, match="cannot have a query or a fragment"):  # the library says the same
        replay_entry(call_line(1, "user_info", "/hooks/user-info"), load_config(config).site, base_url=base)


def test_a_call_that_times_out_reports_the_time_it_took(cli, tmp_path, stdlib_server):
    def respond(received):
        if b"user_id=43" in received.body:
            time.sleep(1.5)  # past --timeout
        return 200, {"Content-Type": "application/json"}, b"{}"

    stdlib_server.respond = respond
    slow = {**call_line(2, "user_info", "/hooks/user-info"), "fields": {"user_id": "43"}}
    journal = tmp_path / "j.jsonl"
    journal.write_text(json.dumps(call_line(1, "user_info", "/hooks/user-info")) + "\n" + json.dumps(slow) + "\n")
    config = replay_config(tmp_path / "dev.yaml", stdlib_server.url)
    result = cli("-c", config, "replay", journal, "--timeout", "0.4", "--json")
    assert result.exit_code == 1, result.stderr
    fast, late, _ = [json.loads(line) for line in result.stdout.splitlines()]
    assert fast["ok"] and not late["ok"] and "no answer within 0.4s (timeout)" in late["error"]
    assert late["ms"] >= 400  # it waited for the whole --timeout: never 0
    human = cli("-c", config, "replay", journal, "--timeout", "0.4")
    [row] = [row for row in human.stdout.splitlines() if row.startswith("#2 ")]
    assert float(row.split(" ms ")[0].split()[-1]) >= 400 and "error: cannot reach" in row


def test_a_call_refused_before_its_body_was_read_is_not_replayed(cli, tmp_path, stdlib_server):
    # what the listener journals for malformed HTTP to an endpoint: its kind, but nothing it read
    broken = {**call_line(1, "user_info", "/hooks/user-info"), "content_type": None, "fields": {}, "status": 400}
    broken["token_ok"] = None
    good = call_line(2, "user_info", "/hooks/user-info")
    config = replay_config(tmp_path / "dev.yaml", stdlib_server.url)
    stdlib_server.reply_json(200, {})
    result = cli("-c", config, "replay", "-", "--json", input=f"{json.dumps(broken)}\n{json.dumps(good)}\n")
    *calls, summary = [json.loads(line) for line in result.stdout.splitlines()]
    assert [c["seq"] for c in calls] == [2] and summary["summary"]["total"] == 1
    assert len(stdlib_server.received) == 1


def test_expect_same_leaves_out_faulted_and_wrong_token_calls(cli, tmp_path, stdlib_server):
    faulted = {**call_line(1, "user_info", "/hooks/user-info"), "status": 500, "fault": "user_info:status=500"}
    wrong = {**call_line(2, "user_info", "/hooks/user-info"), "status": 401, "token_ok": False}
    plain = {**call_line(3, "user_info", "/hooks/user-info"), "status": 401}
    config = replay_config(tmp_path / "dev.yaml", stdlib_server.url)
    stdlib_server.reply_json(200, {})
    journal = "".join(json.dumps(line) + "\n" for line in (faulted, wrong, plain))
    result = cli("-c", config, "replay", "-", "--expect-same", input=journal)
    assert result.exit_code == 1  # the third one differs: it was rejected, now it is not
    rows = result.stdout.splitlines()
    assert "ok (not compared: its recorded reply was a fault's)" in rows[0]
    assert "ok (not compared: it was recorded with a wrong token)" in rows[1]
    assert "different: HTTP status: expected 401, got 200" in rows[2]
    result = cli("-c", config, "replay", "-", "--expect-same", "--json", input=journal)
    *lines, summary = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(line["same"], line["ok"]) for line in lines] == [(None, True), (None, True), (False, False)]
    assert summary["summary"]["same"] == 0 and summary["summary"]["different"] == 1
