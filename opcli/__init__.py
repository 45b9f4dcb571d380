"""opcli: test and script integrations with the Operator API.

The public API is imported lazily, so that ``opcli --version`` never imports httpx.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_config": "opcli.config",
    "Config": "opcli.config",
    "Site": "opcli.config",
    "OpcliError": "opcli.errors",
    "ConfigError": "opcli.errors",
    "UsageError": "opcli.errors",
    "RemoteError": "opcli.errors",
    "UnreachableError": "opcli.errors",
    "UserInfo": "opcli.protocol",
    "MediaReply": "opcli.protocol",
    "Photo": "opcli.protocol",
    "create_app": "opcli.listener",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'opcli' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
