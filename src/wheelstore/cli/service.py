"""The store service's commands: ``init --service``'s settings and ``wheelstore serve``."""

from __future__ import annotations

import argparse
from pathlib import Path
from urllib.parse import urlsplit

from ..base.errors import WheelstoreError
from ..fetch.sources import PYPI, Sources
from ..store.config import select_store
from ..store.serviceconf import ServiceSettings, default_socket
from ..store.store import Store

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


def cmd_serve(args: argparse.Namespace) -> int:
    from ..service.server import serve

    store = Store.open(select_store(args.store).path)
    try:
        serve(store, args.socket)
    finally:
        store.close()
    return 0
