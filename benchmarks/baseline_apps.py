"""The listener benchmark's baselines, served exactly as `opcli listen` serves (same uvicorn settings).

python baseline_apps.py plain PORT JOURNAL   # Starlette, the obvious way
python baseline_apps.py bare PORT            # a bare ASGI app returning a fixed body
"""

from __future__ import annotations

import hmac
import json
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


def plain_app(journal_path: str) -> Starlette:
    journal = open(journal_path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the process

    async def user_info(request: Request) -> JSONResponse:
        form = await request.form()
        token = str(form.get("token", "")).encode()
        if not hmac.compare_digest(token, TOKEN):
            status, reply = 401, {"status": 0, "message": "invalid token"}
        else:
            status, reply = 200, {"id": int(form["user_id"]), **PROFILE}
        fields = {k: v for k, v in form.items() if k != "token"}
        journal.write(
            json.dumps(
                {
                    "time": datetime.now(timezone.utc).isoformat(),
                    "path": request.url.path,
                    "fields": fields,
                    "status": status,
                    "reply": reply,
                }
            )
            + "\n"
        )
        journal.flush()
        return JSONResponse(reply, status)

    return Starlette(routes=[Route("/hooks/user-info", user_info, methods=["POST"])])


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
    # the settings opcli listen uses (opcli/listener.py: serve)
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=5, server_header=False
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
