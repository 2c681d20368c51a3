"""Site stores and overlays: an admin-populated store read by many users, each with a private store of their own for
what it lacks (Spack's upstreams, conda's ``pkgs_dirs``, Nix's local-overlay store).

An overlay is an ordinary store whose ``config.toml`` names its upstream, the site store, by path and by id
(``wheelstore init --upstream SITE PATH``). Opening the overlay opens the site store too, and refuses a store of
another id at that path in one line: a site store mounted elsewhere, or another store in its place, would be used and
never kept by the right gc. Lookups try the site store first, then the overlay; everything is published into the
overlay; the site store is only read, its trees checked as any store's are (by the site's own policy and owner).

A venv's origin files name the overlay, and its root is written in the overlay: readers may not write the site's
``roots/``. So the site's gc must read the overlays' roots: its owner lists where they live in the site's
``config.toml`` (``overlays``, glob patterns, in the ``[gc]`` table). Each match is input from whoever made it: it is
reached from ``/`` without following a symlink, must be a store whose ``config.toml`` its owner wrote and which names
this site store's id as its upstream, and its roots are read and checked against the venvs as the site's own are
(:mod:`~wheelstore.store.rootcheck`), never written. An overlay can so make the site's gc keep what its venvs link, as
a member's venvs can in any store, and nothing else: the site's gc removes and keeps only site trees, and an overlay's
gc lists and removes only its own.
"""

from __future__ import annotations

import errno
import glob
import os
import stat
from pathlib import Path

from ..base.errors import StoreError
from . import identity
from .policy import Policy
from .sitelink import named
from .store import Store

#: the most overlay patterns and matches a site's gc reads (a config typo must not make gc walk a filesystem)
MAX_OVERLAYS = 4096


# -- the site's gc -----------------------------------------------------------------------------------------------------


def registered_overlays(site: Store, problems: list[str]) -> list[Store]:
    """The overlays of ``site`` its config's ``[gc] overlays`` patterns find, opened for reading their roots; what a
    pattern matches that is not such an overlay is skipped, with a line in ``problems``."""
    table = site.config().get("gc")
    patterns = table.get("overlays", []) if isinstance(table, dict) else []
    if not isinstance(patterns, list) or not all(isinstance(p, str) and os.path.isabs(p) for p in patterns):
        raise StoreError(f"overlays in {site.root}/config.toml must be a list of absolute paths or glob patterns",
                         hint='write it like overlays = ["/home/*/.local/share/wheelstore/store"] in the [gc] table')
    found: list[Store] = []
    seen: set[str] = set()
    for pattern in patterns[:MAX_OVERLAYS]:
        for path in sorted(glob.glob(pattern))[:MAX_OVERLAYS]:
            if path in seen or len(found) >= MAX_OVERLAYS:
                continue
            seen.add(path)
            try:
                overlay = _open_overlay(type(site), Path(path), site)
            except (OSError, StoreError) as e:
                why = e.oneline() if isinstance(e, StoreError) else (e.strerror or str(e))
                problems.append(f"overlay {path} was not read: {why}")
                continue
            if overlay is not None:
                found.append(overlay)
    return found


def _open_overlay(cls: type[Store], path: Path, site: Store) -> Store | None:
    """The store at ``path``, reached without following a symlink, if it is an overlay of ``site``; None if it is
    no overlay of it."""
    fd = _walk(path)
    keep = False
    try:
        data, st = cls._read_config(path, fd)
        ident = identity.from_config(data, st, os.fstat(fd).st_uid)
        upstream = named(data, path)
        if upstream is None or upstream[1] != site.id or ident is None or ident == site.id:
            return None
        store = cls(path, Policy.from_mapping(data), fd, ident)
        keep = True
        return store
    finally:
        if not keep:
            os.close(fd)


def _walk(path: Path) -> int:
    """An fd for the directory ``path``, each component opened from ``/`` by fd without following a symlink: an
    overlay's path runs through its owner's directories, where a symlink could lead root's gc anywhere."""
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in path.parts[1:]:
            if part in (".", ".."):
                raise StoreError(f"{path} is not a plain absolute path")
            try:
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR) and stat.S_ISLNK(
                        os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise StoreError(f"{path} runs through a symlink, which gc does not follow") from None
                raise
            os.close(fd)
            fd = nxt
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            raise StoreError(f"{path} is not a directory")
        return fd
    except BaseException:
        os.close(fd)
        raise


def known_to(site: Store, overlay: Path) -> bool:
    """Whether the site's gc finds the overlay at ``overlay`` (doctor's question), by the patterns it reads."""
    table = site.config().get("gc")
    patterns = table.get("overlays", []) if isinstance(table, dict) else []
    return isinstance(patterns, list) and any(isinstance(p, str) and os.path.isabs(p) and str(overlay) in glob.glob(p)
                                              for p in patterns[:MAX_OVERLAYS])
