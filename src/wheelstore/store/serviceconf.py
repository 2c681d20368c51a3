"""The ``[service]`` table of a service store's ``config.toml``: where its socket is, who may connect, where it may
fetch from, how large an upload may be, which interpreters of its own it compiles with, and how much each user may
have it publish (a budget, checked against what the user alone pins: :mod:`wheelstore.service.quota`):

    [service]
    budget_user = "2G"          # every user's, unless named below ("none": no budget)
    [service.budgets]
    wsalice = "5G"              # a user's own, before any group's
    "@physics" = "1G"           # each member's (the largest of a user's groups), before budget_user
    wsci = "none"

A service store's config is written by its owner alone (members cannot write anything in it), but it is parsed as
strictly as any file a member could have made: every key known, every value of its type and shape, so that a hand
edit gone wrong is a one-line error naming the setting, never a service running with a setting it misread.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

from ..base.errors import StoreError
from .config import parse_size

#: the default largest upload: a user's own build of a large wheel fits, a disk-filling stream does not
DEFAULT_MAX_UPLOAD = 1 << 30
#: the default socket's name, in the store's directory
SOCKET_NAME = "service.sock"
#: ``sun_path`` holds 108 bytes, the last a NUL
MAX_SOCKET_PATH = 107
_KEYS = {"socket", "socket_mode", "allow_users", "allow_groups", "indexes", "max_upload", "pythons", "budget_user",
         "budgets"}
#: at most this many ``[service.budgets]`` entries: a table, not a user database
_MAX_BUDGETS = 10000
#: a user or group name as useradd and directory services make them
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}\$?")
_URL = re.compile(r"https?://[\x21-\x7e]{1,2040}")


@dataclass(frozen=True)
class ServiceSettings:
    """A store's ``[service]`` table, checked."""

    socket: str
    allow_users: tuple[str, ...] = ()
    allow_groups: tuple[str, ...] = ()
    indexes: tuple[str, ...] = ()
    max_upload: int = DEFAULT_MAX_UPLOAD
    pythons: tuple[str, ...] = ()
    socket_mode: int = 0o666
    #: every user's budget, in bytes, unless ``budgets`` names them or a group of theirs; None: no budget
    budget_user: int | None = None
    #: ``(user or @group, bytes or None)`` from ``[service.budgets]``
    budgets: tuple[tuple[str, int | None], ...] = ()

    def budget(self, user: str, groups: set[str]) -> Budget | None:
        """The budget that applies to ``user`` (a member of ``groups``): their own entry, else the largest of their
        groups', else ``budget_user``; None where that says none."""
        named = dict(self.budgets)
        if user in named:
            return _budget(named[user], user, f"[service.budgets] {user}")
        found = [(size, group) for group in sorted(groups) if (size := named.get(f"@{group}", 0)) != 0]
        if found:
            size, group = max(found, key=lambda f: (f[0] is None, f[0] or 0))
            return _budget(size, f"{user} (as a member of @{group})", f'[service.budgets] "@{group}"')
        return _budget(self.budget_user, user, "[service] budget_user")

    @property
    def open_to_all(self) -> bool:
        """No allow list: whoever may connect to the socket may ask."""
        return not self.allow_users and not self.allow_groups

    def to_toml(self) -> str:
        """The table as ``init --service`` writes it (every value checked by :func:`checked` first)."""

        def strings(values: tuple[str, ...]) -> str:
            return "[" + ", ".join(json.dumps(v) for v in values) + "]"

        return "\n".join([
            "[service]",
            f"socket = {json.dumps(self.socket)}",
            f"socket_mode = 0o{self.socket_mode:o}",
            f"allow_users = {strings(self.allow_users)}",
            f"allow_groups = {strings(self.allow_groups)}",
            f"indexes = {strings(self.indexes)}",
            f"max_upload = {self.max_upload}",
            f"pythons = {strings(self.pythons)}",
            *([] if self.budget_user is None else [f"budget_user = {self.budget_user}"]),
            *(["", "[service.budgets]"] if self.budgets else []),
            *(f"{json.dumps(who)} = {json.dumps('none') if size is None else size}" for who, size in self.budgets),
            "",
        ])


@dataclass(frozen=True)
class Budget:
    """How many bytes a user may pin alone, whose budget that is (for the refusal) and the setting that says it."""

    bytes: int
    whose: str
    setting: str


def _budget(size: int | None, whose: str, setting: str) -> Budget | None:
    return None if size is None else Budget(size, whose, setting)


def default_socket(root: str | os.PathLike[str]) -> str:
    return os.path.join(os.fspath(root), SOCKET_NAME)


def checked(settings: ServiceSettings) -> ServiceSettings:
    """``settings`` if every value is one :func:`from_config` would read back the same; else a one-line error."""
    _socket_path(settings.socket, "--socket")
    for value in settings.allow_users:
        _name(value, "--allow-user")
    for value in settings.allow_groups:
        _name(value, "--allow-group")
    for value in settings.indexes:
        _url(value, "an index URL")
    for value in settings.pythons:
        _absolute(value, "a python")
    if not 0 < settings.max_upload < 1 << 50:
        raise StoreError(f"max_upload must be a positive size, not {settings.max_upload}")
    _size(settings.budget_user if settings.budget_user is not None else "none", "budget_user")
    _budgets(dict(settings.budgets), "the budgets")
    if settings.socket_mode & ~0o777:
        raise StoreError(f"socket_mode must be permission bits, not {settings.socket_mode:o}")
    return settings


def from_config(data: dict[str, object], where: str) -> ServiceSettings | None:
    """The ``[service]`` table of a store's parsed config, or None for a store without one."""
    table = data.get("service")
    if table is None:
        return None
    if not isinstance(table, dict):
        raise StoreError(f"{where}: [service] must be a table")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise StoreError(f"{where}: [service] has unknown setting {unknown[0]!r}",
                         hint=f"the settings are: {', '.join(sorted(_KEYS))}")
    if "socket" not in table:
        raise StoreError(f"{where}: [service] names no socket")
    max_upload = table.get("max_upload", DEFAULT_MAX_UPLOAD)
    mode = table.get("socket_mode", 0o666)
    if type(max_upload) is not int or not 0 < max_upload < 1 << 50:
        raise StoreError(f"{where}: [service] max_upload must be a positive number of bytes")
    if type(mode) is not int or mode & ~0o777:
        raise StoreError(f"{where}: [service] socket_mode must be permission bits, as in 0o660")
    return ServiceSettings(
        socket=_socket_path(table["socket"], f"{where}: [service] socket"),
        allow_users=tuple(_name(v, f"{where}: [service] allow_users") for v in _list(table, "allow_users", where)),
        allow_groups=tuple(_name(v, f"{where}: [service] allow_groups") for v in _list(table, "allow_groups", where)),
        indexes=tuple(_url(v, f"{where}: [service] indexes") for v in _list(table, "indexes", where)),
        max_upload=max_upload,
        pythons=tuple(_absolute(v, f"{where}: [service] pythons") for v in _list(table, "pythons", where)),
        socket_mode=mode,
        budget_user=_size(table.get("budget_user", "none"), f"{where}: [service] budget_user"),
        budgets=_budgets(table.get("budgets", {}), where),
    )


def _budgets(value: object, where: str) -> tuple[tuple[str, int | None], ...]:
    if not isinstance(value, dict) or len(value) > _MAX_BUDGETS:
        raise StoreError(f"{where}: [service.budgets] must be a table of users and @groups")
    found = []
    for who, size in value.items():
        if not isinstance(who, str) or not _NAME.fullmatch(who.removeprefix("@")):
            raise StoreError(f"{where}: [service.budgets]: {who!r} is not a user or @group name")
        found.append((who, _size("none" if size is None else size, f"{where}: [service.budgets] {who}")))
    return tuple(found)


def _size(value: object, what: str) -> int | None:
    """Bytes from a budget: a number of bytes, a size such as ``"2G"``, or ``"none"`` (no budget: None)."""
    if value == "none":
        return None
    size = value if type(value) is int else parse_size(value) if isinstance(value, str) and value else None
    if size is None or not 0 <= size < 1 << 60:
        raise StoreError(f"{what} is {value!r}, not a budget",
                         hint='give bytes, a size with K, M, G or T as in "2G", or "none"')
    return size


def _list(table: dict[str, object], key: str, where: str) -> list[object]:
    value = table.get(key, [])
    if not isinstance(value, list) or len(value) > 1000:
        raise StoreError(f"{where}: [service] {key} must be a list")
    return value


def _socket_path(value: object, what: str) -> str:
    path = _absolute(value, what)
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise StoreError(f"{what} {path} is {len(os.fsencode(path))} bytes long; a Unix socket's path may have at "
                         f"most {MAX_SOCKET_PATH}", hint="give a shorter one with --socket, e.g. /run/wheelstore.sock")
    return path


def _absolute(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or not value.isprintable() or not value.isascii():
        raise StoreError(f"{what} must be an absolute path of printable ASCII characters, not {value!r}")
    return os.path.normpath(value)


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise StoreError(f"{what}: {value!r} is not a user or group name")
    return value


def _url(value: object, what: str) -> str:
    if not isinstance(value, str) or not _URL.fullmatch(value) or any(c in value for c in "#\\\"'"):
        raise StoreError(f"{what}: {value!r} is not an http(s) URL")
    if "@" in value.split("/", 3)[2]:
        raise StoreError(f"{what}: {value!r} has credentials; the service fetches without them")
    return value
