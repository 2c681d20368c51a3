"""Committing a published unit: staging beside its place, sealing, renaming into place, and linking its manifest.

The steps every kind of unit shares (a wheel's tree in :mod:`.publish`, a pyc unit in :mod:`.bytecode`): each
is built in a private directory, sealed, synced and renamed into place; the manifest, linked last, makes it visible."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from ..base import fsio
from ..base.errors import StoreError
from ..base.fsio import open_dir
from ..base.hooks import checkpoint
from .elf import tree_rpaths
from .manifest import Manifest
from .policy import Role, current_user
from .store import Store, Tree

T = TypeVar("T")


def stage_and_rename(
    store: Store, kind: str, key: str, build: Callable[[int, Path], T], *, tree_key: str | None = None
) -> T:
    """The publish protocol's middle, for every kind of unit: build it in a private hidden directory beside
    ``trees/<key>`` (``build`` gets its fd and path), seal the root, ``syncfs``, and rename it into place.

    Staging beside the target matters: moving a directory to another parent needs write access to it, so a unit
    staged elsewhere could only be sealed after it was already in place. The rename never replaces anything: if
    ``trees/<key>`` appeared meanwhile, the staged copy is removed and FileExistsError raised. On any failure
    nothing is left behind. The staging name carries ``tree_key`` (default ``key``), the wheel's sha256, so that
    :mod:`~wheelstore.store.staging` can tell what it was for, and this process's lease, so that gc can tell it is
    still at work.
    """
    trees_fd = store.area_fd("trees")
    name = "." + store.staging_name(kind, tree_key or key)
    root_fd = store.policy.mkdir(name, Role.STAGING_DIR, dir_fd=trees_fd)
    try:
        try:
            result = build(root_fd, store.root / "trees" / name)
            store.policy.apply(root_fd, Role.PUBLISHED_DIR)
            checkpoint("unpacked")
            fsio.syncfs(root_fd)
            fsio.rename_noreplace(name, key, dir_fd=trees_fd)
        except BaseException as e:
            fsio.remove_tree(name, dir_fd=trees_fd)
            if isinstance(e, OSError) and e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise FileExistsError(e.errno, f"trees/{key} appeared while it was being published") from None
            raise
    finally:
        os.close(root_fd)
    fsio.fsync_dir(trees_fd)
    return result


def link_record(store: Store, kind: str, key: str, suffix: str, name: str, data: bytes) -> bool:
    """Publish a small sealed file as ``manifests/<name>``: written in staging, then ``link()``ed, which never
    replaces. False when one was there first (the caller decides whether theirs stands)."""
    staging_fd = store.area_fd("staging")
    manifests_fd = store.area_fd("manifests")
    tmp = store.staging_name(kind, key, suffix)
    try:
        store.policy.write_new(tmp, data, Role.PUBLISHED_FILE, dir_fd=staging_fd)
        try:
            os.link(tmp, name, src_dir_fd=staging_fd, dst_dir_fd=manifests_fd, follow_symlinks=False)
        except FileExistsError:
            return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=staging_fd)
    fsio.fsync_dir(manifests_fd)
    return True


def manifest_stamp() -> dict[str, Any]:
    """Who publishes, and when: the same for every kind of published unit."""
    return {
        "publisher_uid": os.geteuid(),
        "publisher": current_user(),
        "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def commit(store: Store, manifest: Manifest) -> Tree:
    """Write the manifest: the step that makes the tree visible. An existing manifest is never replaced. The RPATHs
    of the tree's libraries go into it too, read from the tree in place, so folding never has to open them."""
    if manifest.rpaths is None:
        manifest = manifest._replace(rpaths=_rpaths(store, manifest))
    # False: another publisher committed the same tree first, and theirs stands
    link_record(store, "manifest", manifest.key, ".json", f"{manifest.key}.json", manifest.to_json())
    tree = store.lookup(manifest.key)
    if tree is None:  # pragma: no cover - a manifest we just linked cannot vanish unless an admin removed it
        raise StoreError(f"tree {manifest.key} disappeared while it was being published")
    return tree


def _rpaths(store: Store, manifest: Manifest) -> dict[str, list[str]] | None:
    try:
        root_fd = open_dir(manifest.key, dir_fd=store.area_fd("trees"))
    except OSError:  # not there to read: folding reads the libraries itself, as for older manifests
        return None
    try:
        return tree_rpaths(root_fd, {rel: entry.mode for rel, entry in manifest.files.items()})
    finally:
        os.close(root_fd)


def make_movable(name: str, dir_fd: int) -> None:
    """Moving a directory to another parent rewrites its '..', which needs write access to it."""
    try:
        fd = open_dir(name, dir_fd=dir_fd)
    except OSError:  # not a directory (a planted file or symlink): moving it needs no write access to it
        return
    try:
        st = os.fstat(fd)
        if st.st_uid == os.geteuid() or os.geteuid() == 0:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) | stat.S_IWUSR)
    finally:
        os.close(fd)
