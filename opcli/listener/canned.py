"""Canned answers: the config's users and media, and what a test sets on top of them at run time."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Generic, TypeVar

from opcli.config import ListenConfig
from opcli.config.model import fill_template
from opcli.protocol import id_of

V = TypeVar("V")


class IdMap(dict[int, V], Generic[V]):
    """A dict keyed by user id: ``42`` and ``"42"`` are the same key (stored as the int 42).

    Setting a key that is not an id (``"abc"``, ``-1``, ``4.2``) raises ValueError at once rather
    than leave an override the listener would never look up.
    """

    def __init__(self, name: str, items: Mapping[Any, V] | Iterable[tuple[Any, V]] = ()) -> None:
        super().__init__()
        self.name = name
        self.update(items)

    def _key(self, key: Any) -> int:
        try:
            return id_of(key)
        except ValueError as exc:
            raise ValueError(f"{self.name}[{key!r}]: not a user id: {exc} (use 42 or '42')") from None

    def _found(self, key: Any) -> Any:
        """A key to look up: the id it stands for, or the key itself (not found) when it is none."""
        try:
            return id_of(key)
        except ValueError:
            return key

    def __setitem__(self, key: Any, value: V) -> None:
        super().__setitem__(self._key(key), value)

    def __getitem__(self, key: Any) -> V:
        return super().__getitem__(self._found(key))

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(self._found(key))

    def __contains__(self, key: object) -> bool:
        return super().__contains__(self._found(key))

    def get(self, key: Any, default: Any = None) -> Any:
        return super().get(self._found(key), default)

    def pop(self, key: Any, *default: Any) -> Any:
        return super().pop(self._found(key), *default)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        return super().setdefault(self._key(key), default)

    def update(self, items: Any = (), /, **more: V) -> None:  # type: ignore[override]
        pairs = items.items() if isinstance(items, Mapping) else items
        for key, value in [*pairs, *more.items()]:
            self[key] = value

    def __ior__(self, items: Any) -> IdMap[V]:  # type: ignore[override]
        self.update(items)
        return self


class Canned:
    """The profiles and media the listener answers with.

    ``users`` and ``media`` hold overrides (the pytest plugin's ``users[42] = {...}``, ``42`` or
    ``"42"``); an overridden profile's missing fields come from the template. ``reset()`` drops them.
    """

    CACHED = 10000

    def __init__(self, settings: ListenConfig) -> None:
        self.settings = settings
        self.users: IdMap[dict[str, Any]] = IdMap("users")
        self.media: IdMap[list[dict[str, Any]]] = IdMap("media")
        # the config's profiles as answered, made once per user: the config does not change while
        # the listener runs (overrides are read afresh every time, so a test may change them in place)
        self._from_config: dict[int, dict[str, Any] | None] = {}

    def user_info(self, user_id: int) -> dict[str, Any] | None:
        """The profile of a user; None when the config says unknown users get 404.

        A profile from the config is one object shared by every call that got it: do not change it.
        """
        settings = self.settings
        if self.users and user_id in self.users:  # (most runs override nobody)
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
        if self.media and user_id in self.media:
            return self.media[user_id]
        return self.settings.media.get(user_id, [])

    def reset(self) -> None:
        self.users.clear()
        self.media.clear()
