"""doctor's ``staging`` check: work that killed processes left in the store (a ``kill -9``, a second Ctrl-C, a crash,
a lost node), how much, whose and how old, and the gc that removes it.

An interrupted command removes its own staging; a killed one cannot, and its entries (``trees/.tree-*``,
``staging/download-*``, ...) stay until a gc judges them (:mod:`~wheelstore.store.staging`). gc removes an entry whose
lease proves its process gone once its last sign of life is older than gc's grace period, a day by default: so the
fix names a grace just under the newest entry's age. Only the entry's owner's gc or root's may delete it (the sticky
``staging/`` and ``trees/``), so the check says who. Another user's lease cannot be opened (mode 0600): that its
process is gone is read from this kernel's lock table instead, which lists every holder of a flock here.
"""

from __future__ import annotations

import os
import shlex

from ..store import staging
from ..store.gc import DEFAULT_GRACE
from ..store.keylock import kernel_holders
from ..store.lease import PREFIX, LeaseState, node_tag
from ..store.policy import user_name
from ..store.staging import StagingEntry, span
from ..store.stats import usage
from ..store.store import Store
from .doctor_report import Check
from .output import size_text


def check(store: Store) -> Check:
    probes: dict[str, LeaseState] = {}
    try:
        left = [e for e in staging.entries(store, 0.0, probes) if _left_over(store, e, probes)]
    finally:
        for state in probes.values():
            state.close()
    if not left:
        return Check("staging", "ok", "no work left over by killed processes")
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
    who = " or ".join(user_name(uid) for uid in owners) if len(owners) == 1 else \
        "each of " + ", ".join(user_name(uid) for uid in owners) + " (for their own), or root"
    grace = "" if newest > DEFAULT_GRACE else f" --grace {span(newest)}"
    return Check(
        "staging", "warn",
        f"{' and '.join(sizes)}{' (at least: not all readable by you)' if unreadable else ''} in {len(left)} "
        f"staging {'entry' if len(left) == 1 else 'entries'} left by killed work, unchanged for {ages}; "
        f"{who}{'' if len(owners) > 1 else ' or root'} can remove {'it' if len(left) == 1 else 'them'}",
        f"wheelstore --store {shlex.quote(str(store.root))} gc{grace}",
    )


def _left_over(store: Store, entry: StagingEntry, probes: dict[str, LeaseState]) -> bool:
    """Whether ``entry`` is work no process does any more: stale for a gc without grace, or (another user's lease,
    which this user may not lock) a lease made on this kernel and mount that no process holds."""
    if entry.stale:
        return True
    probed = probes.get(entry.lease)
    if entry.state != "untried" or probed is None or probed.lockless:  # no flock here: only heartbeats tell
        return False
    locks_fd = store.area_fd("locks")
    if entry.lease[:8] != node_tag(locks_fd):
        return False
    try:
        st = os.stat(PREFIX + entry.lease, dir_fd=locks_fd, follow_symlinks=False)
    except OSError:
        return False
    return not kernel_holders(st)
