"""Load tests on Locust: users that play the site or the panel, with opcli's own encoders and judgement.

Importing this module imports Locust, which patches the standard library with gevent: import it
only in a locustfile (``opcli load`` runs Locust in a subprocess for that reason). Both user
classes are abstract, so a locustfile runs only its own subclasses::

    from opcli.load import SiteUser

    class Site(SiteUser):
        user_ids = range(1000, 2000)
        content = {"text": 3, "photos": 1}
        photos = [("https://cdn.example.com/1.jpg", "https://cdn.example.com/1_200.jpg")]

Each call is reported to Locust's ``request`` event under its kind (``message_sent``,
``user_info``, ``user_media``, ``send_message``) and fails, as in every opcli command, on a
non-2xx reply (redirects are not followed), an envelope ``"status": 0``, or, for user-info and
user-media, a reply that breaks the contract. The site comes from the config (``config_path``,
else ``$OPCLI_CONFIG`` and the usual discovery; ``site_name``, else ``$OPCLI_SITE``). When the
run ends, the master (or the only process) writes the summary ``opcli load`` prints.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import gevent
from locust import FastHttpUser, events, task
from locust.runners import STATE_MISSING, MasterRunner, WorkerRunner
from locust.stats import StatsError

from opcli.client import Outgoing, message_sent, tls, to_reply, webhook
from opcli.config import Site, load_config
from opcli.load_runner import LoadSettings
from opcli.panel import operator_reply, verdict
from opcli.protocol import KINDS, kind_name, make_photos, mask_token

__all__ = ["OperatorApiUser", "PanelUser", "SiteUser", "summarize"]

_sites: dict[tuple[str | None, str | None], Site] = {}


def _site(config_path: str | None, site_name: str | None) -> Site:
    """The selected site, loaded once per process."""
    key = (config_path, site_name)
    if key not in _sites:
        _sites[key] = load_config(config_path, site_name).site
    return _sites[key]


def _kind(written: str) -> str:
    """A kind of ``mix``, ``user-info`` or ``user_info``; anything else as it is (refused with the others)."""
    try:
        return kind_name(written)
    except ValueError:
        return written


class Failure(Exception):
    """Why a call failed, shown by Locust as the message itself (its repr is the plain text)."""

    def __repr__(self) -> str:
        return str(self)


class OperatorApiUser(FastHttpUser):
    """A Locust user making Operator API calls of the kinds in ``mix``, drawn by weight for each task.

    Class attributes to set in a subclass: ``mix`` (kind -> weight), ``user_ids`` and
    ``bot_ids`` (ranges the ids are drawn from; default the site's ``check`` ids), ``timeout``
    (default the site's), ``config_path`` and ``site_name``.
    """

    abstract = True
    config_path: ClassVar[str | None] = None
    site_name: ClassVar[str | None] = None
    mix: ClassVar[dict[str, float]] = {"message_sent": 1}
    user_ids: ClassVar[range | None] = None
    bot_ids: ClassVar[range | None] = None
    timeout: ClassVar[float | None] = None

    def __init__(self, environment: Any) -> None:
        self.site = _site(self.config_path, self.site_name)
        if self.host is None:  # every URL opcli requests is absolute; Locust insists on a host
            first = urlsplit(self.site.panel_url or next(iter(self.site.webhooks.values())))
            self.host = f"{first.scheme}://{first.netloc}"
        self.network_timeout = self.connection_timeout = self.timeout or self.site.timeout
        self.insecure = self.site.verify is False
        if not self.insecure:
            site = self.site
            self.ssl_context_factory = lambda: tls(site)
        super().__init__(environment)
        mix = {_kind(written): weight for written, weight in self.mix.items()}  # user-info is user_info
        cannot = [kind for kind in mix if kind not in KINDS or not callable(getattr(self, kind, None))]
        if cannot:
            raise ValueError(
                f"{type(self).__name__}.mix: {', '.join(cannot)}: not a call this user makes "
                "(SiteUser: message_sent; PanelUser: user_info, user_media, send_message)"
            )
        self._kinds, self._weights = list(mix), list(mix.values())
        self._users = self.user_ids or self._check_id("user")
        with_bot = {"message_sent", "send_message"} & set(mix)
        self._bots = self.bot_ids or (self._check_id("bot") if with_bot else range(0))

    def _check_id(self, who: str) -> range:
        if who not in self.site.check:
            raise ValueError(f"set {type(self).__name__}.{who}_ids or check.{who} for site '{self.site.name}'")
        return range(self.site.check[who], self.site.check[who] + 1)

    @task
    def one_call(self) -> None:
        """One call of a kind drawn from ``mix``."""
        getattr(self, random.choices(self._kinds, self._weights)[0])()

    def user(self) -> int:
        return random.choice(self._users)

    def bot(self) -> int:
        return random.choice(self._bots)

    def send(self, kind: str, out: Outgoing, user_id: int | None = None) -> None:
        """Send one request encoded by opcli and report it to Locust as ``kind``, judged as opcli does."""
        try:
            headers, body = out.encode()
            payload = body if isinstance(body, bytes) else b"".join(body)
        except OSError as exc:  # the file went away during the run: a failure, not a task crash per call
            failure = Failure(f"cannot read file {out.file}: {exc.strerror or exc}")
            self.environment.events.request.fire(
                request_type="POST", name=kind, response_time=0, response_length=0, exception=failure, context={}
            )
            return
        started = time.perf_counter()
        with self.client.request(
            "POST", out.url, name=kind, data=payload, headers=headers, catch_response=True, allow_redirects=False
        ) as response:
            if not response.status_code:
                reason = f"cannot reach {out.url}: {response.error}"
            else:
                reply = to_reply(out, response.status_code, response.headers.items(), response.content or b"", started)
                reason = verdict(kind, reply, user_id).failure
            if reason is None:
                response.success()
            else:
                token = self.site.token
                response.failure(Failure(reason.replace(token, mask_token(token)) if token else reason))


class SiteUser(OperatorApiUser):
    """Plays the site: ``message_sent`` calls to the panel, with text, photos or a file in ``content`` weights.

    ``content`` weighs ``text`` (the message alone), ``photos`` (with ``photos``, a list of
    ``(file_url, big)`` pairs, ``big`` may be None) and ``file`` (with ``attach``, a path).
    """

    abstract = True
    mix: ClassVar[dict[str, float]] = {"message_sent": 1}
    content: ClassVar[dict[str, float]] = {"text": 1}
    message: ClassVar[str] = "Hello from opcli load"
    photos: ClassVar[list[tuple[str, str | None]]] = []
    attach: ClassVar[str | Path | None] = None

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self._photos = make_photos(self.photos)
        self._file = Path(self.attach) if self.attach else None
        self._contents, self._content_weights = list(self.content), list(self.content.values())

    def message_sent(self) -> None:
        carries = random.choices(self._contents, self._content_weights)[0]
        photos = self._photos if carries == "photos" else ()
        attach = self._file if carries == "file" else None
        self.send("message_sent", message_sent(self.site, self.user(), self.bot(), self.message, photos, attach))


class PanelUser(OperatorApiUser):
    """Plays the panel: user-info, user-media and (weight 0 unless asked) send-message calls to the site."""

    abstract = True
    mix: ClassVar[dict[str, float]] = {"user_info": 1, "user_media": 1}
    reply_text: ClassVar[str] = "Hello from an operator (opcli load)"

    def user_info(self) -> None:
        self._fetch("user_info")

    def user_media(self) -> None:
        self._fetch("user_media")

    def _fetch(self, kind: str) -> None:
        user = self.user()
        self.send(kind, webhook(self.site, kind, [("user_id", str(user))]), user)

    def send_message(self) -> None:
        self.send("send_message", operator_reply(self.site, self.bot(), self.user(), self.reply_text))


# --- the summary ---------------------------------------------------------------------------


def _figures(entry: Any) -> dict[str, Any]:
    some = entry.num_requests > 0
    return {
        "requests": entry.num_requests,
        "failures": entry.num_failures,
        "requests_per_second": round(entry.total_rps, 1),
        "p50_ms": entry.get_response_time_percentile(0.5) if some else None,
        "p95_ms": entry.get_response_time_percentile(0.95) if some else None,
        "p99_ms": entry.get_response_time_percentile(0.99) if some else None,
        "avg_ms": round(entry.avg_response_time, 1) if some else None,
        "max_ms": round(entry.max_response_time, 1) if some else None,
    }


def summarize(stats: Any, workers: int | None = None) -> dict[str, Any]:
    """The figures of a run from Locust's ``RequestStats``: per kind, in total, and the errors."""
    order = {kind: n for n, kind in enumerate(KINDS)}
    entries = sorted(stats.entries.values(), key=lambda e: (order.get(e.name, len(order)), e.name))
    errors = [
        {"kind": e.name, "error": StatsError.parse_error(e.error), "count": e.occurrences}
        for e in sorted(stats.errors.values(), key=lambda e: -e.occurrences)
    ]
    seconds = stats.last_request_timestamp - stats.start_time if stats.last_request_timestamp else 0.0
    return {
        "workers": workers,
        "seconds": round(max(seconds, 0.0), 3),
        "kinds": {e.name: _figures(e) for e in entries if e.num_requests},
        "total": _figures(stats.total),
        "errors": errors,
    }


_run: dict[str, Any] = {"environment": None, "workers": set(), "flushed": set()}
_FLUSH, _FLUSHED = "opcli_flush", "opcli_flushed"


@events.init.add_listener
def _setup(environment: Any, **_: Any) -> None:
    _run["environment"] = environment
    # gevent's timers count from the loop's cached clock, last read before the imports of
    # start-up: without this, --run-time would lose those seconds (most of a short run)
    gevent.get_hub().loop.update_now()
    if isinstance(environment.runner, WorkerRunner):
        environment.runner.register_message(_FLUSH, _flush)
    elif isinstance(environment.runner, MasterRunner):
        environment.runner.register_message(_FLUSHED, lambda msg, **_: _run["flushed"].add(msg.node_id))


@events.worker_report.add_listener
def _count_worker(client_id: str, **_: Any) -> None:
    _run["workers"].add(client_id)


def _flush(environment: Any, **_: Any) -> None:
    """On a worker: stop the users, report their last requests, then say so (in that order, on one socket)."""
    runner = environment.runner
    runner.stop()
    report: dict[str, Any] = {}
    environment.events.report_to_master.fire(client_id=runner.client_id, data=report)
    runner.send_message("stats", report)
    runner.send_message(_FLUSHED)


@events.test_stopping.add_listener
def _collect(environment: Any, **_: Any) -> None:
    """On the master, as the run stops: every worker's last requests, before the summary is written.

    A worker reports every 3 s, and at quit Locust waits only 0.5 s for the last reports, which a
    loaded machine misses: the master would undercount. So it asks each worker to stop and
    report now, and waits (10 s at most) until each has.
    """
    runner = environment.runner
    if not isinstance(runner, MasterRunner):
        return
    expected = {client.id for client in runner.clients.all if client.state != STATE_MISSING}
    _run["flushed"].clear()
    runner.send_message(_FLUSH)
    deadline = time.monotonic() + 10
    while not expected <= _run["flushed"] and time.monotonic() < deadline:
        gevent.sleep(0.05)


@events.quit.add_listener
def _write_summary(**_: Any) -> None:
    """On the master (or the only process), once the workers' last reports are in: the summary file."""
    environment, path = _run["environment"], LoadSettings.from_env().summary
    if environment is None or path is None or isinstance(environment.runner, WorkerRunner):
        return
    workers = len(_run["workers"]) if isinstance(environment.runner, MasterRunner) else None
    Path(path).write_text(json.dumps(summarize(environment.runner.stats, workers)), encoding="utf-8")
