"""JSON as opcli writes it: ``line`` for programs (compact), ``dumps`` for people (spaced); UTF-8 kept readable.

``line`` is what the listener writes for every call -- its journal line, its reply -- so it is
encoded by orjson (the standard ``json`` took a tenth of the listener's time). What orjson
refuses is written by the standard ``json`` in the same form: a string holding a lone surrogate
(``"\\ud800"`` sent as a JSON escape), which cannot be encoded as UTF-8, is written as the same
``\\udXXX`` escape instead of making the write fail; an integer past 64 bits is written whole.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# datetimes and dataclasses as str() shows them
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_APPEND_NEWLINE
_COMPACT = _OPTIONS & ~orjson.OPT_APPEND_NEWLINE


def line(obj: Any) -> bytes:
    """One compact JSON document as a UTF-8 line, ``\\n`` included: JSON Lines (the journal, ``--json``), replies."""
    return _encoded(obj, _OPTIONS, b"\n")


def compact(obj: Any) -> bytes:
    """``line`` without its newline: a reply's body."""
    return _encoded(obj, _COMPACT, b"")


def _encoded(obj: Any, option: int, end: bytes) -> bytes:
    try:
        return orjson.dumps(obj, default=str, option=option)
    except orjson.JSONEncodeError:
        pass
    try:  # a key that is not a string (YAML's ``1:`` or a date): orjson's option for it made every line slower by half
        return orjson.dumps(obj, default=str, option=option | orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:  # a lone surrogate, a huge integer
        return _standard(obj, (",", ":"), None) + end


def dumps(obj: Any, indent: int | None = None) -> str:
    """One JSON document for people: one line with ``", "`` and ``": "`` (or indented); safe on any UTF-8 stream.

    What messages and the human views quote, and what a terminal shows indented.
    """
    if indent is None and type(obj) in (str, int):  # nothing to separate: the same text, faster (the listener's view)
        return compact(obj).decode("utf-8")
    return _standard(obj, (", " if indent is None else ",", ": "), indent).decode("utf-8")


def _standard(obj: Any, separators: tuple[str, str], indent: int | None) -> bytes:
    text = json.dumps(obj, ensure_ascii=False, separators=separators, default=str, indent=indent)
    return text.encode("utf-8", "backslashreplace")
