"""``locks/gc.lock``, the file of the store-wide lock (:class:`~wheelstore.locks.StoreLock`): the store owner's.

Installs hold it shared and gc exclusive. Its owner may chmod it, or remove it from the sticky ``locks/``, and so make
it unusable to everyone else, whose installs then go ahead without it (with a warning) while root's gc, which ignores
modes, still takes it: installs could then link a tree gc is removing. In a group store the ``locks/`` directory is
locked too and closes that; in an ``all`` store (whose ``locks/`` anyone may read, and so flock) ``gc.lock`` is the
only lock. So ``init`` makes it, owned by the store's owner with the lock role's mode; the lock code creates a missing
one only as the store's owner or root and never removes it; and ``doctor`` flags one that anybody else owns.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING, Literal

from .errors import StoreError
from .policy import Policy, Role, group_name, user_name

if TYPE_CHECKING:
    from .store import Store

#: in the store's ``locks/``: held shared by installs, exclusive by gc
LOCK_NAME = "gc.lock"


def may_create(store_owner: int) -> bool:
    """Whether this process may create a missing ``gc.lock``: the store's owner or root, whose file nobody else may
    chmod or remove. A member's would be theirs to make unusable."""
    return os.geteuid() in (0, store_owner)


def make(locks_fd: int, policy: Policy) -> None:
    """``init``: put the store owner's ``gc.lock`` in place with the lock role's mode, built under a private name and
    renamed over whatever a member may have put there before ``config.toml`` existed (the owner of ``locks/`` may)."""
    tmp = f".{LOCK_NAME}.{os.getpid()}.{os.urandom(4).hex()}"
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


def judge(store: Store) -> tuple[Literal["ok", "warn", "fail"], str, str | None]:
    """doctor: whether ``gc.lock`` is the store owner's (or root's) regular file with the lock role's mode and group;
    the fix replaces it, run by the store's owner or root (who may replace any entry of ``locks/``)."""
    import shlex  # here: every install imports this module, and only doctor quotes

    policy, owner = store.policy, user_name(store.owner_uid)
    path = shlex.quote(str(store.root / "locks" / LOCK_NAME))
    chgrp = f' && chgrp {shlex.quote(policy.group)} "$t"' if policy.group else ""
    fix = (f"t=$(mktemp {shlex.quote(str(store.root / 'locks'))}/.gc.lock.XXXXXX){chgrp} && chmod "
           f'{policy.mode(Role.LOCK):04o} "$t" && mv -f "$t" {path}')
    who = f"run the fix as {owner} (the store's owner) or root"
    try:
        st = os.stat(LOCK_NAME, dir_fd=store.area_fd("locks"), follow_symlinks=False)
    except FileNotFoundError:
        return ("warn", f"locks/{LOCK_NAME} is missing (the store predates init making it): the next install or gc "
                f"by {owner} or root makes it; until then others' installs may go ahead without the store lock; {who}",
                fix)
    if not stat.S_ISREG(st.st_mode):
        return "fail", f"locks/{LOCK_NAME} is not a regular file, so no install can take the store lock; {who}", fix
    if st.st_uid not in (0, store.owner_uid):
        return ("fail" if policy.shared == "all" else "warn",
                f"locks/{LOCK_NAME} belongs to {user_name(st.st_uid)}, who may make it unusable to others (chmod) or "
                f"remove it, so that their installs go ahead without the store lock while gc holds it; {who}", fix)
    have, want = stat.S_IMODE(st.st_mode), policy.mode(Role.LOCK)
    if have != want or (policy.gid is not None and st.st_gid != policy.gid):
        return ("warn", f"locks/{LOCK_NAME} is {have:04o} with group {group_name(st.st_gid)}, the policy wants "
                f"{want:04o}{f' with group {policy.group}' if policy.group else ''}: publishers may not all open "
                f"it; {who}", fix)
    return "ok", f"locks/{LOCK_NAME} is {user_name(st.st_uid)}'s, as it must be (the store's owner or root)", None
