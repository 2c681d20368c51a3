"""``locks/gc.lock``: the file of the store-wide lock (:class:`~wheelstore.store.storelock.StoreLock`), the owner's.

Installs hold it shared and gc exclusive. Its owner may chmod it, or remove it from the sticky ``locks/``, and so make
it unusable to everyone else, whose installs then go ahead without it (with a warning) while root's gc, which ignores
modes, still takes it: installs could then link a tree gc is removing. In a group store the ``locks/`` directory is
locked too and closes that; in an ``all`` store (whose ``locks/`` anyone may read, and so flock) ``gc.lock`` is the
only lock. So ``init`` makes it, owned by the store's owner with the lock role's mode; the lock code creates a missing
one only as the store's owner or root and never removes it; and ``doctor`` flags one that anybody else owns.
"""

from __future__ import annotations

import os

from ..base.errors import StoreError
from ..base.fsio import hidden_name
from .policy import Policy, Role

#: in the store's ``locks/``: held shared by installs, exclusive by gc
LOCK_NAME = "gc.lock"


def may_create(store_owner: int) -> bool:
    """Whether this process may create a missing ``gc.lock``: the store's owner or root, whose file nobody else may
    chmod or remove. A member's would be theirs to make unusable."""
    return os.geteuid() in (0, store_owner)


def make(locks_fd: int, policy: Policy) -> None:
    """``init``: put the store owner's ``gc.lock`` in place with the lock role's mode, built under a private name and
    renamed over whatever a member may have put there before ``config.toml`` existed (the owner of ``locks/`` may)."""
    tmp = hidden_name(LOCK_NAME)
    fd = policy.create(tmp, dir_fd=locks_fd)
    try:
        policy.apply(fd, Role.LOCK)
        os.rename(tmp, LOCK_NAME, src_dir_fd=locks_fd, dst_dir_fd=locks_fd)
    except BaseException as e:
        os.unlink(tmp, dir_fd=locks_fd)
        if isinstance(e, IsADirectoryError):
            raise StoreError(f"locks/{LOCK_NAME} is a directory someone put in the new store",
                             hint="remove the store directory and run init again") from None
        raise
    finally:
        os.close(fd)


