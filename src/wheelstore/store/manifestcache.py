"""Manifests read before: what a user's cache keeps of each manifest they parsed, so that the next command takes the
small fields from it and parses the file list only when asked (:meth:`~wheelstore.store.store.Store.lookup`)."""

from __future__ import annotations

import functools
import hashlib
import marshal
import os
from collections.abc import Callable
from pathlib import Path

from .manifest import Manifest

#: bumped whenever what is kept changes (2: only manifests that passed :mod:`manifest_check`)
_KNOWN_FORMAT = 2


def _known_name(root: Path, key: str) -> str:
    return f"manifests/{cache_id(root)}/{key}"


@functools.lru_cache(maxsize=8)
def cache_id(root: Path) -> str:
    """What names a store in the user's cache: a hash of its path."""
    return hashlib.sha256(os.fsencode(root)).hexdigest()[:16]


def known_manifest(root: Path, key: str, stamp: tuple[int, ...], read: Callable[[], bytes]) -> Manifest | None:
    """The manifest in the file with this ``stamp`` as parsed before, its file list left for later (``read``)."""
    from ..base import usercache

    kept = usercache.read_bytes(_known_name(root, key))
    if kept is None:
        return None
    try:
        fmt, kept_stamp, small, count, first = marshal.loads(kept)
    except (EOFError, ValueError, TypeError):
        return None
    if fmt != _KNOWN_FORMAT or kept_stamp != stamp or small[0] != key or len(small) != len(Manifest.SMALL):
        return None
    return Manifest.deferred(small, count, first, read)


def remember_manifest(root: Path, key: str, stamp: tuple[int, ...], manifest: Manifest) -> None:
    from ..base import usercache

    usercache.write_bytes(_known_name(root, key), marshal.dumps((_KNOWN_FORMAT, stamp, manifest.small(),
                                                                 manifest.count, manifest.first)))
