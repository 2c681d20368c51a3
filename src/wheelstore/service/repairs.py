"""The service's ``repair``: ``verify --repair`` of one tree, when (and only when) it is damaged."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..base.errors import ServiceError, StoreError
from ..fetch.download import find_wheel
from ..fetch.http import Http
from ..fetch.sources import Sources
from ..store.repair import repair_tree
from ..store.verify import check_tree

if TYPE_CHECKING:
    from .ops import Service


def repair(service: Service, key: str, url: str | None) -> dict[str, Any]:
    """Publish tree ``key`` again from its wheel (``url``, checked against ``key``; else the service's own index) if
    it is damaged; an intact tree is left alone, so no client can make the service churn a good one."""
    store = service.store
    try:
        tree = store.lookup(key)
    except StoreError:
        tree = None  # its manifest or tree is not trustworthy: damaged
    else:
        if tree is None:
            raise ServiceError(f"the store has no tree {key}")
        if not check_tree(store, tree, full=True):
            return {"ok": True, "repaired": [], "outcome": "intact"}
    fetched: list[Path] = []
    http = Http()

    def find(filename: str | None, sha256: str) -> Path | None:
        if sha256 != key or filename is None:
            return None
        if url is not None:
            fetched.append(service.fetch_for_repair(url, filename, key, http))
        else:
            found = find_wheel(store, filename, sha256, Sources.from_environment(), http)
            if found is None:
                return None
            fetched.append(found)
        return fetched[-1]

    try:
        done = repair_tree(store, key, find)
    finally:
        for path in fetched:
            service.remove_download(path)
        http.close()
    return {"ok": True, "repaired": [r.key for r in done], "outcome": f"repaired {len(done)}"}
