"""opcli: test and script integrations with the Operator API.

The public API, imported lazily so that ``import opcli`` (and ``opcli --version``) never
imports httpx, starlette or uvicorn:

- config: ``load_config``, ``Config``, ``Site``
- errors: ``OpcliError``, ``ConfigError``, ``UsageError``, ``RemoteError``, ``UnreachableError``
- the contract: ``UserInfo``, ``MediaReply``, ``Photo``, ``check_reply``
- the site's side: ``send_message``, ``send_batch``
- the panel's side: ``fetch`` (a webhook called and judged), ``send_reply``, ``run_checks`` (``fuzz=N`` too)
- the contract as data: ``build_spec`` (OpenAPI 3.1), ``config_schema`` (the config's JSON Schema)
- load tests: ``run_load``, ``LoadPlan``, ``LoadSettings`` (Locust in a subprocess; the user classes
  to subclass are in ``opcli.load``, which imports Locust and so is never imported from here)
- the listener: ``create_app``, ``serve``, ``ListenerThread``, ``Call``, ``Callback``, ``Journal``
- replay: ``replay_entry`` (one journaled call sent again)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

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
    "check_reply": "opcli.protocol",
    "send_message": "opcli.client",
    "send_batch": "opcli.batch",
    "fetch": "opcli.panel",
    "send_reply": "opcli.panel",
    "run_checks": "opcli.conformance",
    "build_spec": "opcli.spec",
    "config_schema": "opcli.config.schema",
    "run_load": "opcli.load_runner",
    "LoadPlan": "opcli.load_runner",
    "LoadSettings": "opcli.load_runner",
    "create_app": "opcli.listener",
    "serve": "opcli.listener",
    "ListenerThread": "opcli.listener",
    "Call": "opcli.listener",
    "Callback": "opcli.listener",
    "Journal": "opcli.listener",
    "replay_entry": "opcli.replay",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'opcli' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access skips this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
