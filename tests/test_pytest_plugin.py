"""The pytest plugin: user-style test files run by pytest inside pytest (``pytester``), with real servers."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import httpx
import pytest

from opcli.pytest_plugin import SECTION

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent


def test_a_user_test_sends_with_httpx_and_urllib_and_waits(pytester):
    pytester.makepyfile(
        """
        import json, urllib.parse, urllib.request

        import httpx
        import opcli


        def test_my_site_reports_a_message(opcli_listener):
            reply = httpx.post(
                opcli_listener.endpoints["message_sent"],
                data={"token": opcli_listener.token, "action": "message_sent", "user_id": "42",
                      "contact_id": "7", "message": "hi", "attaches[0][file_url]": "https://x/1.jpg"},
                files={"file": ("a.txt", b"abc")},
            )
            assert reply.status_code == 200
            [call] = opcli_listener.wait_for("message_sent")
            assert call.fields["message"] == "hi" and call.token_ok and call.status == 200
            assert (call.kind, call.method, call.path) == ("message_sent", "POST", "/operator-api")
            assert call.content_type == "multipart/form-data"
            assert call.attaches == [{"file_url": "https://x/1.jpg"}]
            assert [(f["field"], f["filename"], f["size"]) for f in call.files] == [("file", "a.txt", 3)]
            assert call.reply == reply.json() and call.fault is None
            assert call.seq >= 1 and call.time.endswith("Z")
            assert opcli_listener.calls == [call] and opcli_listener.callbacks == []


        def test_urllib_reads_a_canned_profile(opcli_listener):
            body = urllib.parse.urlencode({"token": opcli_listener.token, "user_id": 43}).encode()
            with urllib.request.urlopen(opcli_listener.endpoints["user_info"], body) as answer:
                assert json.load(answer)["name"] == "Marta"
            [call] = opcli_listener.wait_for("user_info")
            assert call.fields == {"user_id": "43"} and call.content_type == "application/x-www-form-urlencoded"


        def test_opcli_own_client_through_site(opcli_listener):
            assert opcli.send_message(opcli_listener.site, 42, 7, "from opcli").ok
            calls = opcli_listener.wait_for(count=1)
            assert calls[0].field("message") == "from opcli"
            assert opcli_listener.token == "dev-token"
            assert opcli_listener.url.startswith("http://127.0.0.1:")
            assert sorted(opcli_listener.endpoints) == ["message_sent", "send_message", "user_info", "user_media"]
            assert all(url.startswith(opcli_listener.url) for url in opcli_listener.endpoints.values())
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=3)
    assert SECTION not in result.stdout.str()  # only failed tests get the section


def test_users_and_media_are_per_test_and_the_next_test_starts_fresh(pytester):
    pytester.makepyfile(
        """
        import httpx


        def ask(listener, kind, user):
            return httpx.post(listener.endpoints[kind], data={"token": listener.token, "user_id": user}).json()


        def test_first(opcli_listener):
            opcli_listener.users[42] = {"name": "Anna", "balance": "1.00"}
            opcli_listener.media[42] = [{"url": "https://x/a.jpg", "big": "https://x/a_b.jpg"}]
            profile = ask(opcli_listener, "user_info", 42)
            assert profile["id"] == 42 and profile["name"] == "Anna" and profile["balance"] == "1.00"
            assert profile["gender"] == "female" and profile["custom"] == []  # from the template
            assert ask(opcli_listener, "user_media", 42) == {"media": opcli_listener.media[42]}
            opcli_listener.wait_for(count=2)


        def test_second(opcli_listener):
            assert opcli_listener.calls == []
            assert ask(opcli_listener, "user_info", 42)["name"] == "Olga"
            assert len(ask(opcli_listener, "user_media", 42)["media"]) == 2
            assert [c.kind for c in opcli_listener.calls] == ["user_info", "user_media"]
            assert opcli_listener.calls[0].seq > 2  # the journal goes on; this test sees only its part
        """
    )
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=2)


def test_users_and_media_take_an_id_as_a_digit_string_and_refuse_a_key_that_is_none(pytester):
    pytester.makepyfile(
        """
        import httpx
        import pytest


        def ask(listener, kind, user):
            return httpx.post(listener.endpoints[kind], data={"token": listener.token, "user_id": user}).json()


        def test_a_digit_string_is_the_id(opcli_listener):
            assert ask(opcli_listener, "user_info", 43)["name"] == "Marta"  # the built-in profile
            [call] = opcli_listener.wait_for("user-info")  # a kind with - or _
            assert call.kind == "user_info"
            opcli_listener.users["43"] = {"name": "Str"}
            opcli_listener.media["43"] = [{"url": "https://x/s.jpg", "big": "https://x/s_b.jpg"}]
            assert ask(opcli_listener, "user_info", 43)["name"] == "Str"
            assert ask(opcli_listener, "user_media", 43) == {"media": [{"url": "https://x/s.jpg", "big": "https://x/s_b.jpg"}]}
            assert list(opcli_listener.users) == [43] and opcli_listener.users[43] == {"name": "Str"}
            assert "43" in opcli_listener.media and opcli_listener.media.get("43") == opcli_listener.media[43]
            opcli_listener.users.update({"44": {"name": "Upd"}})
            assert ask(opcli_listener, "user_info", 44)["name"] == "Upd"
            assert [c.kind for c in opcli_listener.wait_for("user-media")] == ["user_media"]
            assert len(opcli_listener.wait_for("user_info", count=3)) == 3


        @pytest.mark.parametrize("key", ["abc", "", -1, 4.2, True, None, " 42"])
        def test_a_key_that_is_not_an_id_raises_at_once(opcli_listener, key):
            with pytest.raises(ValueError, match=r"users\\[.*\\]: not a user id"):
                opcli_listener.users[key] = {"name": "Nobody"}
            with pytest.raises(ValueError, match=r"media\\[.*\\]: not a user id"):
                opcli_listener.media.update({key: []})
            assert opcli_listener.users == {} and opcli_listener.media == {}
        """
    )
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=8)


def test_a_wait_that_times_out_says_what_came_and_the_report_lists_the_calls(pytester):
    pytester.makepyfile(
        """
        import httpx


        def test_waits_for_a_message_that_never_comes(opcli_listener):
            httpx.post(opcli_listener.endpoints["user_info"], data={"token": "wrong", "user_id": "42"})
            httpx.post(opcli_listener.endpoints["send_message"],
                       data={"token": opcli_listener.token, "user_id": "7", "contact_id": "42", "message": "hey"})
            opcli_listener.wait_for("message_sent", timeout=0.2)


        def test_fails_after_a_call(opcli_listener):
            httpx.post(opcli_listener.endpoints["message_sent"],
                       data={"token": opcli_listener.token, "action": "message_sent", "user_id": "42",
                             "contact_id": "7", "message": "hi"})
            assert opcli_listener.calls == []


        def test_fails_without_the_listener():
            assert False


        def test_a_bad_kind_fails_at_once(opcli_listener):
            opcli_listener.wait_for("message-sant", timeout=60)
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=4)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: waited 0.2s for 1 message_sent call at http://127.0.0.1:*; 0 came. Calls received:",
            "*  #1 user_info POST /hooks/user-info -> 401 user_id='42'",
            "*  #2 send_message POST /hooks/send-message -> 200 user_id='7' contact_id='42' message='hey'",
        ]
    )
    result.stdout.fnmatch_lines(
        ["*ValueError: unknown kind 'message-sant' (expected one of message_sent, send_message, *, unknown)"]
    )
    sections = {
        report.nodeid.split("::")[1]: dict(report.sections)
        for report in result.reprec.getreports("pytest_runtest_logreport")
        if report.failed
    }
    assert SECTION not in sections["test_fails_without_the_listener"]
    timed_out = sections["test_waits_for_a_message_that_never_comes"][SECTION].splitlines()
    assert timed_out[0].startswith("listener at http://127.0.0.1:")
    assert timed_out[0].endswith(": 2 calls during this test")
    assert timed_out[1:] == [
        "#1 user_info POST /hooks/user-info -> 401 user_id='42'",
        "#2 send_message POST /hooks/send-message -> 200 user_id='7' contact_id='42' message='hey'",
    ]
    assert sections["test_fails_after_a_call"][SECTION].splitlines()[1:] == [
        "#3 message_sent POST /operator-api -> 200 user_id='42' contact_id='7' message='hi'"
    ]
    assert sections["test_a_bad_kind_fails_at_once"][SECTION].endswith(": 0 calls during this test")
    # shown as pytest shows captured output: a titled rule, then the lines
    result.stdout.fnmatch_lines(["*- opcli listener -*", "listener at http://127.0.0.1:*: 1 call during this test"])


def test_async_user_tests_and_a_token_from_the_environment(pytester, monkeypatch):
    monkeypatch.setenv("OPCLI_TOKEN", "team-token-for-tests")
    pytester.makepyfile(
        """
        import asyncio

        import anyio
        import httpx
        import pytest


        async def send(listener, text):
            async with httpx.AsyncClient() as client:
                reply = await client.post(listener.endpoints["message_sent"],
                    data={"token": listener.token, "action": "message_sent", "user_id": "42",
                          "contact_id": "7", "message": text})
            return reply.json()


        def test_own_event_loop(opcli_listener):
            assert opcli_listener.token == "team-token-for-tests"
            assert asyncio.run(send(opcli_listener, "from asyncio.run"))["status"] == 1
            [call] = opcli_listener.wait_for("message_sent")
            assert call.fields["message"] == "from asyncio.run" and call.token_ok


        @pytest.fixture
        def anyio_backend():
            return "asyncio"  # (trio may be installed too: one backend is enough here)


        @pytest.mark.anyio
        async def test_async_test(opcli_listener):
            assert (await send(opcli_listener, "from an async test"))["status"] == 1
            [call] = await anyio.to_thread.run_sync(opcli_listener.wait_for, "message_sent")
            assert call.fields["message"] == "from an async test"
        """
    )
    result = pytester.runpytest_subprocess("-p", "anyio", timeout=120)
    result.assert_outcomes(passed=2)


def test_xdist_workers_each_get_their_own_listener(pytester, tmp_path):
    seen = tmp_path / "seen"
    seen.mkdir()
    pytester.makepyfile(
        f"""
        import os

        import httpx
        import pytest


        @pytest.mark.parametrize("n", range(6))
        def test_send(opcli_listener, n):
            worker = os.environ["PYTEST_XDIST_WORKER"]
            with open(os.path.join({str(seen)!r}, f"{{worker}}-{{n}}"), "w") as f:
                f.write(opcli_listener.url)
            httpx.post(opcli_listener.endpoints["message_sent"],
                       data={{"token": opcli_listener.token, "action": "message_sent", "user_id": "42",
                              "contact_id": "7", "message": f"m{{n}}"}})
            [call] = opcli_listener.wait_for("message_sent")
            assert [c.fields["message"] for c in opcli_listener.calls] == [f"m{{n}}"]
            assert n != 5, "the report section survives the trip from the worker"
        """
    )
    result = pytester.runpytest_subprocess("-n", "2", timeout=180)
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(["*- opcli listener -*", "#* message_sent POST /operator-api -> 200 * message='m5'"])
    urls = {path.name.split("-")[0]: path.read_text() for path in seen.iterdir()}
    assert len(list(seen.iterdir())) == 6
    assert set(urls) == {"gw0", "gw1"} and len(set(urls.values())) == 2


def test_importing_the_plugin_stays_light():
    code = "import sys, opcli.pytest_plugin; print([m for m in ('httpx', 'uvicorn', 'starlette') if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_fault_lasts_one_test_and_the_operator_loop_fills_callbacks(pytester):
    pytester.makepyfile(
        """
        import httpx
        import pytest


        def test_the_site_meets_a_refusing_panel(opcli_listener):
            opcli_listener.fault("message_sent:status0,times=1")
            form = {"token": opcli_listener.token, "action": "message_sent", "user_id": "42",
                    "contact_id": "7", "message": "hi"}
            first = httpx.post(opcli_listener.endpoints["message_sent"], data=form)
            assert first.json() == {"status": 0, "message": "Invalid API token"}
            assert httpx.post(opcli_listener.endpoints["message_sent"], data=form).json()["status"] == 1
            faulted, ok = opcli_listener.wait_for("message_sent", count=2)
            assert faulted.fault == "message_sent:status0,times=1" and ok.fault is None
            with pytest.raises(ValueError, match="unknown action 'nap'"):
                opcli_listener.fault("user_info:nap")


        def test_a_fault_of_the_previous_test_is_gone(opcli_listener):
            reply = httpx.post(opcli_listener.endpoints["user_info"],
                               data={"token": opcli_listener.token, "user_id": "42"})
            assert reply.status_code == 200 and reply.json()["name"] == "Olga"


        def test_the_operator_loop_answers_a_message(opcli_listener):
            opcli_listener.operator(fetch=["user_info"], reply="Hello {name}")
            form = {"token": opcli_listener.token, "action": "message_sent", "user_id": "42",
                    "contact_id": "7", "message": "hi"}
            assert httpx.post(opcli_listener.endpoints["message_sent"], data=form).status_code == 200
            [answer] = opcli_listener.wait_for("send_message")
            assert answer.fields == {"user_id": "7", "contact_id": "42", "message": "Hello Olga"}
            import time

            deadline = time.monotonic() + 5
            while len(opcli_listener.callbacks) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert [(c.kind, c.ok) for c in opcli_listener.callbacks] == [("user_info", True), ("send_message", True)]


        def test_the_operator_of_the_previous_test_is_off(opcli_listener):
            form = {"token": opcli_listener.token, "action": "message_sent", "user_id": "42",
                    "contact_id": "7", "message": "hi"}
            assert httpx.post(opcli_listener.endpoints["message_sent"], data=form).status_code == 200
            [call] = opcli_listener.wait_for("message_sent")
            assert opcli_listener.callbacks == []
            assert opcli_listener.calls == [call]
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=4)


def test_call_as_json_equals_the_journal_line_of_opcli_listen(opcli_listener, listen_proc, isolated):
    journal = isolated / "journal.jsonl"
    proc = listen_proc("listen", "--port", "0", "--count", "1", "--journal", str(journal))
    for url, token in ((f"{proc.url}/hooks/user-info", "dev-token"), (opcli_listener.endpoints["user_info"], None)):
        form = {"token": token or opcli_listener.token, "user_id": "42", "extra": ["a", "b"]}
        assert httpx.post(url, data=form).status_code == 200
    assert proc.wait() == 0
    [line] = [json.loads(text) for text in journal.read_text().splitlines()[1:]]
    [call] = opcli_listener.wait_for("user_info")
    mine = call.as_json()
    assert list(mine) == list(line)
    varying = ("seq", "time", "ms")
    assert {k: v for k, v in mine.items() if k not in varying} == {k: v for k, v in line.items() if k not in varying}
    assert mine["fields"] == {"user_id": "42", "extra": ["a", "b"]} and mine["reply"]["name"] == "Olga"


# --- installed from a wheel, as a user's project has it ----------------------------------


@pytest.fixture(scope="module")
def installed_python(tmp_path_factory):
    """A venv with opcli installed from a freshly built wheel (not editable); its dependencies borrowed.

    The dependencies are this venv's site-packages, linked in without opcli's own (editable)
    files, so the only opcli the venv can see is the one from the wheel.
    """
    work = tmp_path_factory.mktemp("installed")
    source = work / "src"
    shutil.copytree(ROOT / "opcli", source / "opcli", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    # a PYTHONPATH naming a source tree would show pip and the venv another opcli
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    run = {"check": True, "capture_output": True, "timeout": 300, "env": env}
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", work, source], **run)
    [wheel] = work.glob("opcli-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], **run)
    python = venv / "bin" / "python"
    subprocess.run([*pip, "--python", python, "install", "--no-deps", "--no-index", wheel], **run)
    borrowed = work / "deps"
    borrowed.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(("opcli", "__editable__")):
            (borrowed / entry.name).symlink_to(entry)
    target = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True, **run
    ).stdout.strip()
    (Path(target) / "borrowed.pth").write_text(f"{borrowed}\n")
    yield python
    shutil.rmtree(work)


def test_the_plugin_is_found_through_its_entry_point_from_a_wheel(installed_python, pytester, monkeypatch):
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the venv's opcli must be the wheel's
    pytester.makepyfile(
        """
        import importlib.metadata
        import sys

        import httpx
        import opcli.pytest_plugin


        def test_installed(opcli_listener, request):
            assert opcli.pytest_plugin.__file__.startswith(sys.prefix), opcli.pytest_plugin.__file__
            [(plugin, dist)] = [
                (plugin, dist)
                for plugin, dist in request.config.pluginmanager.list_plugin_distinfo()
                if dist.metadata["Name"] == "opcli"
            ]
            assert plugin is opcli.pytest_plugin
            assert str(dist.locate_file("opcli")).startswith(sys.prefix)
            assert [d.metadata["Name"] for d in importlib.metadata.distributions()].count("opcli") == 1
            httpx.post(opcli_listener.endpoints["message_sent"],
                       data={"token": opcli_listener.token, "action": "message_sent", "user_id": "42",
                             "contact_id": "7", "message": "hi"})
            [call] = opcli_listener.wait_for("message_sent")
            assert call.fields["message"] == "hi"
        """
    )
    result = pytester.run(installed_python, "-m", "pytest", "-p", "no:cacheprovider", "-q", timeout=120)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["1 passed*"])


def test_the_readme_example_passes_as_written(pytester):
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"## Testing your integration with pytest.*?```python\n(.*?)```", readme, re.S).group(1)
    assert '[call] = opcli_listener.wait_for("message_sent")' in example
    pytester.makepyfile(test_panel_notifications=example)
    pytester.runpytest().assert_outcomes(passed=2)
