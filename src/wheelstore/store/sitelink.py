"""An overlay's link to its site store (:mod:`~wheelstore.store.upstream`): the ``[upstream]`` table of its
``config.toml``, and opening the store it names. Apart from :mod:`.upstream` because :class:`~.store.Store` uses it
when it opens a store, and so this module may not import it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol, TypeVar

from ..base.errors import StoreError
from . import identity

#: the table of an overlay's ``config.toml`` that names its site store
TABLE = "upstream"


class Opened(Protocol):
    """What is needed here of an opened :class:`~.store.Store`."""

    @property
    def root(self) -> Path: ...

    @property
    def id(self) -> str | None: ...

    @property
    def upstream(self) -> Opened | None: ...

    def close(self) -> None: ...


S = TypeVar("S", bound=Opened)


def to_toml(site: Opened) -> str:
    """The ``[upstream]`` table ``init`` writes into an overlay's ``config.toml``."""
    if site.id is None:
        raise StoreError(f"{site.root} has no store id yet, so no overlay can name it",
                         hint=f"its owner or root records one by running: wheelstore --store {site.root} info")
    if site.upstream is not None:
        raise StoreError(f"{site.root} is itself an overlay (of {site.upstream.root}); an overlay's upstream must be "
                         "a site store", hint=f"use --upstream {site.upstream.root}")
    # a JSON string is a TOML basic string (the same escapes)
    return f"\n[{TABLE}]\npath = {json.dumps(str(site.root))}\nid = \"{site.id}\"\n"


def named(data: Mapping[str, object], where: Path) -> tuple[Path, str] | None:
    """The site store an overlay's config (``data``, read from ``where``) names: its path and id; None for a store
    that is no overlay."""
    table = data.get(TABLE)
    if table is None:
        return None
    path = table.get("path") if isinstance(table, dict) else None
    ident = table.get("id") if isinstance(table, dict) else None
    if not isinstance(path, str) or not os.path.isabs(path) or not identity.is_id(ident):
        raise StoreError(f"{where / 'config.toml'}: [{TABLE}] needs an absolute path and the site store's id",
                         hint=f"make the overlay again: wheelstore init --upstream SITE_STORE {where}")
    return Path(path), ident


def open_site(opener: Callable[[Path], S], overlay: Path, data: Mapping[str, object]) -> S | None:
    """The site store the overlay at ``overlay`` (whose config is ``data``) reads first, opened with ``opener``, or
    None when it is no overlay; a one-line error when the store at that path is missing or another store."""
    found = named(data, overlay)
    if found is None:
        return None
    path, ident = found
    try:
        site = opener(path)
    except StoreError as e:
        raise StoreError(f"the site store of the overlay {overlay} cannot be used: {e.message}",
                         hint=e.hint or f"check that {path} is mounted") from None
    if site.id != ident:
        site.close()
        raise StoreError(f"{path} holds another store (id {site.id}) than the site store the overlay {overlay} was "
                         f"made for (id {ident})", hint=f"mount that site store at {path}, or make a new overlay: "
                         f"wheelstore init --upstream SITE_STORE NEW_PATH")
    if site.upstream is not None:
        site.close()
        raise StoreError(f"the site store {path} of the overlay {overlay} is itself an overlay",
                         hint="an overlay's upstream must be a site store: make the overlay again")
    return site
