"""JSON as opcli writes it: one document on one line, UTF-8 kept readable.

A string holding a lone surrogate (``"\\ud800"`` sent as a JSON escape) cannot be encoded as
UTF-8; it is written as the same ``\\udXXX`` escape instead of making the write fail.
"""

from __future__ import annotations

import json
from typing import Any


def dumps(obj: Any, indent: int | None = None) -> str:
    """One JSON document on one line (or indented), safe to write to any UTF-8 stream."""
    return line(obj, indent)[:-1].decode("utf-8")


def line(obj: Any, indent: int | None = None) -> bytes:
    """One JSON document as a UTF-8 line, ``\\n`` included: what the journal and ``--json`` write."""
    separators = (", " if indent is None else ",", ": ")
    text = json.dumps(obj, ensure_ascii=False, separators=separators, default=str, indent=indent)
    return (text + "\n").encode("utf-8", "backslashreplace")
