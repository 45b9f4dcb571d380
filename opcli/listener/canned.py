"""Canned answers: the config's users and media, and what a test sets on top of them at run time."""

from __future__ import annotations

from typing import Any

from opcli.config import ListenConfig
from opcli.config.model import fill_template


class Canned:
    """The profiles and media the listener answers with.

    ``users`` and ``media`` hold overrides (the pytest plugin's ``users[42] = {...}``); an
    overridden profile's missing fields come from the template. ``reset()`` drops them.
    """

    CACHED = 10000

    def __init__(self, settings: ListenConfig) -> None:
        self.settings = settings
        self.users: dict[int, dict[str, Any]] = {}
        self.media: dict[int, list[dict[str, Any]]] = {}
        # the config's profiles as answered, made once per user: the config does not change while
        # the listener runs (overrides are read afresh every time, so a test may change them in place)
        self._from_config: dict[int, dict[str, Any] | None] = {}

    def user_info(self, user_id: int) -> dict[str, Any] | None:
        """The profile of a user; None when the config says unknown users get 404.

        A profile from the config is one object shared by every call that got it: do not change it.
        """
        settings = self.settings
        if user_id in self.users:
            return self._answered(user_id, {**fill_template(settings.user_template, user_id), **self.users[user_id]})
        if user_id not in self._from_config:
            if len(self._from_config) >= self.CACHED:
                self._from_config.clear()
            if user_id in settings.users:
                profile = self._answered(user_id, settings.users[user_id])
            elif settings.unknown_user == 404:
                profile = None
            else:
                profile = self._answered(user_id, fill_template(settings.user_template, user_id))
            self._from_config[user_id] = profile
        return self._from_config[user_id]

    @staticmethod
    def _answered(user_id: int, profile: dict[str, Any]) -> dict[str, Any]:
        return {"id": user_id, **{k: v for k, v in profile.items() if k != "id"}}

    def user_media(self, user_id: int) -> list[dict[str, Any]]:
        """The private media of a user (none when not listed)."""
        if user_id in self.media:
            return self.media[user_id]
        return self.settings.media.get(user_id, [])

    def reset(self) -> None:
        self.users.clear()
        self.media.clear()
