"""The locustfile ``opcli load`` runs: one user class doing every kind of ``--mix``, as the flags say.

The settings come from ``$OPCLI_LOAD`` (JSON written by ``opcli load``), the site from
``$OPCLI_CONFIG`` and ``$OPCLI_SITE``. To write your own, subclass ``opcli.load.SiteUser`` or
``PanelUser`` (see that module).
"""

from __future__ import annotations

from opcli.load import PanelUser, SiteUser
from opcli.load_runner import LoadSettings

_given = LoadSettings.from_env()


class OpcliLoad(SiteUser, PanelUser):
    """Each task one call, its kind drawn from ``--mix``; a message's photos or file from ``--content``."""

    mix = _given.mix
    content = _given.content
    user_ids = range(_given.user_ids[0], _given.user_ids[1] + 1)
    bot_ids = range(_given.bot_ids[0], _given.bot_ids[1] + 1)
    message = _given.message
    photos = _given.photos
    attach = _given.attach
    timeout = _given.timeout
