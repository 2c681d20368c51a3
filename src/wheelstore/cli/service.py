"""The store service's commands: ``init --service``'s settings and ``wheelstore serve``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..base.errors import WheelstoreError
from ..base.sizes import binary
from ..fetch.sources import PYPI, Sources
from ..store.config import select_store
from ..store.store import Store

if TYPE_CHECKING:
    from ..store.serviceconf import ServiceSettings

#: where PyPI's files are, which its pages link to from another host
PYPI_FILES = "https://files.pythonhosted.org/"


def service_settings(args: argparse.Namespace, target: Path) -> ServiceSettings | None:
    """The ``[service]`` table ``init`` writes, or None without ``--service`` (and then no service option)."""
    if not args.service:
        given = [o for o, v in (("--socket", args.socket), ("--allow-user", args.allow_user),
                                ("--allow-group", args.allow_group), ("--allow-index", args.allow_index)) if v]
        if given:
            raise WheelstoreError(f"{given[0]} applies to a service store", hint="add --service")
        return None
    from ..store.serviceconf import ServiceSettings, default_socket  # here: only init --service needs it

    return ServiceSettings(
        socket=args.socket or default_socket(target.absolute()),
        allow_users=tuple(dict.fromkeys(args.allow_user)),
        allow_groups=tuple(dict.fromkeys(args.allow_group)),
        indexes=tuple(dict.fromkeys(args.allow_index)) or default_indexes(Sources.from_environment()),
    )


def default_indexes(sources: Sources) -> tuple[str, ...]:
    """What the service may fetch from when ``init`` is told nothing: the hosts of the indexes configured for its
    account (files are not always under the index's path), and PyPI's file host with PyPI."""
    found: list[str] = []
    for url in sources.index_urls:
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") and parts.netloc:
            found.append(f"{parts.scheme}://{parts.netloc}/")
        if url.rstrip("/") == PYPI.rstrip("/"):
            found.append(PYPI_FILES)
    return tuple(dict.fromkeys(found))


def service_info(settings: ServiceSettings) -> dict[str, object]:
    """The ``[service]`` table for ``info --json``."""
    return {"socket": settings.socket, "socket_mode": f"{settings.socket_mode:04o}",
            "allow_users": list(settings.allow_users), "allow_groups": list(settings.allow_groups),
            "indexes": list(settings.indexes), "max_upload": settings.max_upload, "pythons": list(settings.pythons)}


def service_lines(settings: ServiceSettings) -> list[str]:
    """The ``[service]`` table for ``info``: where the service listens, whom it serves, what it fetches."""
    who = [f"users {', '.join(settings.allow_users)}"] if settings.allow_users else []
    who += [f"groups {', '.join(settings.allow_groups)}"] if settings.allow_groups else []
    pythons = ", ".join(["its own interpreter", *settings.pythons])
    return [
        f"{'service':12} {settings.socket} (mode {settings.socket_mode:04o}): only its service writes the store",
        f"{'allow':12} {'; '.join(who) if who else 'anyone who may connect to the socket'}",
        f"{'indexes':12} {', '.join(settings.indexes) or '-'}",
        f"{'max_upload':12} {binary(settings.max_upload)}",
        f"{'pythons':12} {pythons}",
    ]


def cmd_serve(args: argparse.Namespace) -> int:
    from ..service.server import serve

    store = Store.open(select_store(args.store).path)
    try:
        serve(store, args.socket)
    finally:
        store.close()
    return 0
