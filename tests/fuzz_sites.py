"""Two small sites that are not opcli, for ``check --fuzz``: a careful one and a fragile one."""

from __future__ import annotations

import re
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

TOKEN = "fuzz-site-token-0123456789"
KNOWN = 42
PROFILE = {
    "id": KNOWN,
    "name": "Olga",
    "gender": "female",
    "avatar": "https://cdn.example.com/42.jpg",
    "balance": "1.00",
    "location": "Riga",
    "about": "",
    "custom": [],
}
IDS = {"user-info": ("user_id",), "user-media": ("user_id",), "send-message": ("user_id", "contact_id")}
PHP_FATAL = (
    "<br />\n<b>Fatal error</b>:  Uncaught ValueError: mb_strtolower(): Argument #1 must be a valid string in "
    "/var/www/site/api/hooks.php:31\nStack trace:\n#0 {main}\n  thrown in <b>/var/www/site/api/hooks.php</b> "
    "on line <b>31</b><br />\n"
)


def site(fragile: bool = False, lax: bool = False, any_integer: bool = False) -> Starlette:
    """The three webhooks under ``/hooks/``; the fragile one breaks on ids above 2^31 and non-ASCII names.

    The lax one checks nothing: any token, any user_id (read as PHP's ``(int)`` does) gets a profile.
    With ``any_integer``, every integer is a user (negative and huge ones too), with its own profile.

    ``app.state.calls`` lists what came: ``(kind, content type, [(name, value), ...])``.
    """
    calls: list[tuple[str, str, list[tuple[str, Any]]]] = []

    async def hook(request: Request) -> Response:
        kind = request.path_params["kind"]
        try:
            async with request.form() as form:
                fields: list[tuple[str, Any]] = [
                    (k, v if isinstance(v, str) else "(a file)") for k, v in form.multi_items()
                ]
        except Exception:
            return JSONResponse({"status": 0, "message": "the form cannot be read"}, 400)
        calls.append((kind, request.headers.get("content-type", "").split(";")[0], fields))
        last = dict(fields)  # the last value of each field, as PHP reads it
        if fragile and any(not name.isascii() for name, _ in fields):
            return HTMLResponse(PHP_FATAL)
        if lax:
            digits = re.match(r"\s*([0-9]*)", str(last.get("user_id", "")))
            return JSONResponse({**PROFILE, "id": int(digits.group(1) or 0)})
        if last.get("token") != TOKEN:
            return JSONResponse({"status": 0, "message": "Invalid API token"}, 401)
        ids = {}
        for name in IDS[kind]:
            value = last.get(name)
            pattern = "-?[0-9]+" if any_integer else "[0-9]+"
            if (
                not isinstance(value, str)
                or not re.fullmatch(pattern, value)
                or len(value) > 4000  # (past int()'s 4,300 digits: as careful sites do, no number at all)
                or (not any_integer and int(value) >= 2**63)
            ):
                # as deployed PHP sites do: HTTP 200 with "status": 0
                return JSONResponse({"status": 0, "message": f"{name} must be an integer"})
            ids[name] = int(value)
        if fragile and any(i > 2**31 for i in ids.values()):
            return PlainTextResponse("Internal Server Error", 500)
        if kind == "send-message":
            return JSONResponse({"status": 1, "message": "", "data": {"message_id": 1}})
        if any_integer and kind == "user-info":
            return JSONResponse({**PROFILE, "id": ids["user_id"]})
        if ids["user_id"] != KNOWN:
            return JSONResponse({"status": 0, "message": "no such user"}, 404)
        if kind == "user-info":
            return JSONResponse(PROFILE)
        return JSONResponse(
            {"media": [{"url": "https://cdn.example.com/1.jpg", "big": "https://cdn.example.com/1b.jpg"}]}
        )

    app = Starlette(routes=[Route("/hooks/{kind}", hook, methods=["POST"])])
    app.state.calls = calls
    return app
