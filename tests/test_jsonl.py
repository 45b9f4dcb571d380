"""``opcli.jsonl``: what orjson cannot write fast is written in the same form another way."""

from __future__ import annotations

import dataclasses
import datetime
import json

from opcli import jsonl


def test_keys_that_are_not_strings_are_written_as_the_standard_json_writes_them():
    # (YAML gives these: `1:`, `2024-05-01:`, `~:`, `yes:` as keys of canned data)
    value = {1: "a", None: "b", False: "c", 1.5: "d", "e": {2: [3]}}
    assert jsonl.compact(value) == json.dumps(value, separators=(",", ":")).encode()
    assert jsonl.line({datetime.date(2024, 5, 1): 1}) == b'{"2024-05-01":1}\n'


def test_what_orjson_refuses_is_written_by_the_standard_json_in_the_same_form():
    assert jsonl.compact({"m": "\ud800", 3: 2**70}) == b'{"m":"\\ud800","3":1180591620717411303424}'
    assert jsonl.line(["\ud800"]) == b'["\\ud800"]\n'


def test_datetimes_and_dataclasses_are_written_as_str_shows_them():
    @dataclasses.dataclass
    class Point:
        x: int

    when = datetime.datetime(2024, 5, 1, 12, 0, 0)
    assert (
        jsonl.compact({"at": when, "p": Point(1)})
        == b'{"at":"2024-05-01 12:00:00","p":"' + str(Point(1)).encode() + b'"}'
    )
    assert jsonl.line({"message": "é ✓"}) == '{"message":"é ✓"}\n'.encode()
