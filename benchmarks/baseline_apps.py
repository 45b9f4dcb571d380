"""The listener benchmark's baselines, served exactly as `opcli listen` serves (same uvicorn settings).

python baseline_apps.py plain PORT JOURNAL   # Starlette, the obvious way, doing the listener's work
python baseline_apps.py bare PORT            # a bare ASGI app returning a fixed body
"""

from __future__ import annotations

import hmac
import itertools
import json
import re
import socket
import sys
from datetime import datetime, timezone

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

TOKEN = b"dev-token"
PROFILE = {
    "name": "Olga",
    "gender": "female",
    "avatar": "https://cdn.example.com/u/42/avatar.jpg",
    "balance": "99.90",
    "location": "Riga",
    "about": "Likes jazz",
    "custom": [{"name": "eyes", "value": "green"}],
}
BRACKET = re.compile(r"^attaches\[(\d+)\]\[(file_url|big)\]$")


def plain_app(journal_path: str) -> Starlette:
    """The same work as the listener, written the obvious way: form, token, reply, a journal line."""
    journal = open(journal_path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    ids = itertools.count(1001)

    def record(request: Request, fields: dict, status: int, reply: dict, attaches: list | None = None) -> None:
        line = {"time": datetime.now(timezone.utc).isoformat(), "path": request.url.path, "fields": fields}
        if attaches is not None:
            line["attaches"] = attaches
        journal.write(json.dumps({**line, "status": status, "reply": reply}) + "\n")
        journal.flush()

    def token_ok(form) -> bool:  # noqa: ANN001
        return hmac.compare_digest(str(form.get("token", "")).encode(), TOKEN)

    async def user_info(request: Request) -> JSONResponse:
        form = await request.form()
        if not token_ok(form):
            status, reply = 401, {"status": 0, "message": "invalid token"}
        else:
            status, reply = 200, {"id": int(form["user_id"]), **PROFILE}
        record(request, {k: v for k, v in form.items() if k != "token"}, status, reply)
        return JSONResponse(reply, status)

    async def message_sent(request: Request) -> JSONResponse:
        form = await request.form()
        photos: dict[int, dict] = {}
        fields = {}
        for key, value in form.multi_items():
            match = BRACKET.match(key)
            if match:
                photos.setdefault(int(match.group(1)), {})[match.group(2)] = value
            elif key != "token":
                fields[key] = value
        if not token_ok(form):
            status, reply = 401, {"status": 0, "message": "invalid token"}
        else:
            int(form["user_id"]), int(form["contact_id"])
            status, reply = 200, {"status": 1, "message": "", "data": {"message_id": next(ids)}}
        record(request, fields, status, reply, [photos[k] for k in sorted(photos)])
        return JSONResponse(reply, status)

    return Starlette(
        routes=[
            Route("/hooks/user-info", user_info, methods=["POST"]),
            Route("/operator-api", message_sent, methods=["POST"]),
        ]
    )


async def bare_app(scope, receive, send) -> None:  # noqa: ANN001
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"id": 42, "name": "Olga"}'})


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    app = plain_app(sys.argv[3]) if kind == "plain" else bare_app
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    # the settings opcli listen uses (opcli/listener/runner.py: uvicorn_config)
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
        server_header=False,
        proxy_headers=False,
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
