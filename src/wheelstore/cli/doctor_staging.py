"""doctor's ``staging`` check: work that killed processes left in the store (a ``kill -9``, a second Ctrl-C, a crash,
a lost node), how much, whose and how old, and the gc that removes it.

An interrupted command removes its own staging; a killed one cannot, and its entries (``trees/.tree-*``,
``staging/download-*``, ...) stay until a gc judges them (:mod:`~wheelstore.store.staging`). A plain gc (its default
grace) removes an entry whose lease was made on this kernel and mount and is free once its last heartbeat is a minute
old (:data:`~wheelstore.store.lease.DEAD_AFTER`): that free flock proves its process gone, so no shorter grace, which
would also sweep every unused tree, is needed. The check lists what such a gc removes now, and apart from it the dead
work it will remove within the minute; work of other nodes' leases it leaves to gc's own rule. Only the entry's
owner's gc or root's may delete it (the sticky ``staging/`` and ``trees/``), so the check says who. Another user's
lease cannot be opened (mode 0600): that its process is gone is read from this kernel's lock table instead, which
lists every holder of a flock here.
"""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Sized

from ..store import staging
from ..store.gc import DEFAULT_GRACE
from ..store.keylock import kernel_holders
from ..store.lease import DEAD_AFTER, PREFIX, LeaseState, node_tag
from ..store.policy import user_name
from ..store.staging import StagingEntry, span
from ..store.stats import usage
from ..store.store import Store
from .doctor_report import Check
from .output import size_text


def check(store: Store) -> Check:
    probes: dict[str, LeaseState] = {}
    try:
        found = staging.entries(store, DEFAULT_GRACE, probes)
        waits = [(e, _removable_in(store, e, probes)) for e in found]
    finally:
        for state in probes.values():
            state.close()
    now = [e for e, wait in waits if wait is not None and wait <= 0]
    later = [(e, wait) for e, wait in waits if wait is not None and wait > 0]
    if not now and not later:
        return Check("staging", "ok", "no work left over by killed processes")
    gc = f"wheelstore --store {shlex.quote(str(store.root))} gc"
    if not now:
        last = math.ceil(max(wait for _e, wait in later))
        what, who = _describe(store, [e for e, _wait in later])
        after = "its process's last heartbeat" if len(later) == 1 else "their processes' last heartbeats"
        return Check("staging", "warn", f"{what}; {who} can remove {_it(later)} with gc in {last}s, a minute after "
                                        f"{after}")
    what, who = _describe(store, now)
    more = ""
    if later:
        last = math.ceil(max(wait for _e, wait in later))
        more = f"; {len(later)} more {_entries(later)} of killed work will be removable in {last}s"
    return Check("staging", "warn", f"{what}; {who} can remove {_it(now)}{more}", gc)


def _it(items: Sized) -> str:
    return "it" if len(items) == 1 else "them"


def _entries(items: Sized) -> str:
    return "entry" if len(items) == 1 else "entries"


def _describe(store: Store, left: list[StagingEntry]) -> tuple[str, str]:
    """What ``left`` is (how much of whose, in how many entries, unchanged for how long), and who may remove it."""
    owners = sorted({e.owner_uid for e in left})
    sizes = []
    unreadable = False
    for uid in owners:
        total = 0
        for entry in (e for e in left if e.owner_uid == uid):
            area, _, name = entry.name.partition("/")
            used = usage(name, dir_fd=store.area_fd(area))
            total += used.bytes
            unreadable = unreadable or used.unreadable > 0
        sizes.append(f"{size_text(total)} of {user_name(uid)}'s")
    newest = min(e.quiet_seconds for e in left)
    oldest = max(e.quiet_seconds for e in left)
    ages = span(newest) if span(newest) == span(oldest) else f"{span(newest)} to {span(oldest)}"
    who = f"{user_name(owners[0])} or root" if len(owners) == 1 else \
        "each of " + ", ".join(user_name(uid) for uid in owners) + " (for their own), or root"
    what = (f"{' and '.join(sizes)}{' (at least: not all readable by you)' if unreadable else ''} in {len(left)} "
            f"staging {_entries(left)} left by killed work, unchanged for {ages}")
    return what, who


def _removable_in(store: Store, entry: StagingEntry, probes: dict[str, LeaseState]) -> float | None:
    """In how many seconds a plain gc run by ``entry``'s owner or root removes it (0 or less: now); None when no such
    gc removes it within :data:`~wheelstore.store.lease.DEAD_AFTER`: work in progress, or of a lease whose free flock
    proves nothing here, or not old enough for gc's grace."""
    if entry.stale:
        return 0.0
    local = entry.lease[:8] == node_tag(store.area_fd("locks"))
    if entry.state == "free" and local:
        return DEAD_AFTER - entry.quiet_seconds
    probed = probes.get(entry.lease)
    if entry.state != "untried" or probed is None or probed.lockless or not local:  # no flock here: only heartbeats
        return None
    try:  # another user's lease, which this user may not lock: the kernel's lock table says whether anyone holds it
        st = os.stat(PREFIX + entry.lease, dir_fd=store.area_fd("locks"), follow_symlinks=False)
    except OSError:
        return None
    return None if kernel_holders(st) else DEAD_AFTER - entry.quiet_seconds
