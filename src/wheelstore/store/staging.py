"""Staging entries: a store's unfinished work, each named after the lease of the process doing it, and judged by it.

An entry is hidden in ``trees/`` (``.tree-``/``.pyc-``: a unit being built beside its place; ``.gc-``: a tree gc is
deleting) or lies in ``staging/`` (``download-``, ``manifest-``/``build-`` records being linked, ``quarantine-`` trees
``verify --repair`` moved aside, ``orphan-`` trees a publish moved aside, ``doctor-`` probes). Its name is
``<kind>-<key>-<lease id>-<random>[.suffix]`` (:meth:`Store.staging_name <wheelstore.store.store.Store.staging_name>`),
and it is stale (:func:`entries`) when:

- its lease (:mod:`~wheelstore.store.lease`) vouches for it and is free, and the last heartbeat is older than
  :data:`~wheelstore.store.lease.DEAD_AFTER` (a minute, or the grace period if shorter) where that free flock proves
  its holder gone (made on this kernel and mount), else older than both the grace period and
  :data:`~wheelstore.store.lease.MIN_STALE`; a held lease keeps it, however old;
- no lease vouches for it (gone with its finished process, never made, or planted by someone else), and the entry
  itself is older than the grace period (and :data:`~wheelstore.store.lease.MIN_STALE` unless its lease was made here);
- it is an ``orphan-``, which nobody works on;
- it has the older layout's name (``<kind>-<key>-<host>-<pid>-<random>``), and it is older than a day or the grace
  period, whichever is longer: a host and pid prove nothing, and such an entry may be a process of an older version.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

from . import lease as leases
from .lease import MIN_STALE, LeaseState
from .store import STALE_AFTER, Store

_NAME = re.compile(r"([a-z]+)-([0-9a-f]{64})(?:-.*)?-([0-9a-f]{32})-[0-9a-f]{8}(?:\.[a-z]+)?")
_OLD_NAME = re.compile(r"([a-z]+)-([0-9a-f]{64})-.*-[0-9]+-[0-9a-f]{8}(?:\.[a-z]+)?")


def parse(name: str) -> tuple[str, str, str] | None:
    """``(kind, key, lease id)`` of a staging entry's name (without its leading dot); the lease id is empty for a name
    of the older layout. None for anything else: a name no process of ours makes is never judged, nor removed."""
    m = _NAME.fullmatch(name)
    if m is not None:
        return m.group(1), m.group(2), m.group(3)
    m = _OLD_NAME.fullmatch(name)
    if m is not None:
        return m.group(1), m.group(2), ""
    return None


@dataclass(frozen=True)
class StagingEntry:
    """An entry of unfinished work, and what gc makes of it."""

    name: str  #: path relative to the store root
    kind: str
    key: str
    lease: str  #: the lease id its name carries ("" for the older layout)
    owner_uid: int
    age_seconds: float  #: since the entry itself last changed
    #: held, free, untried (not ours to try, or no flock here), gone (or not a lease of its owner's), mine (this
    #: process's own), old-name, orphan
    state: str
    quiet_seconds: float  #: since its last sign of life: the lease's heartbeat, else the entry's last change
    stale: bool
    why: str  #: for messages: the lease and its record, or the entry's age

    def to_json(self) -> dict[str, object]:
        return {"path": self.name, "kind": self.kind, "key": self.key, "lease": self.state,
                "quiet_seconds": int(self.quiet_seconds), "why": self.why}


def entries(store: Store, grace: float = 0.0, probes: dict[str, LeaseState] | None = None) -> list[StagingEntry]:
    """Every staging entry of ``store`` with its verdict for a gc of this ``grace``. The leases looked at are left in
    ``probes`` (each free one locked by this process until closed), or closed here when none is given."""
    own = probes is None
    found: dict[str, LeaseState] = {} if probes is None else probes
    try:
        return _entries(store, grace, found)
    finally:
        if own:
            for state in found.values():
                state.close()


def _entries(store: Store, grace: float, probes: dict[str, LeaseState]) -> list[StagingEntry]:
    now = time.time()
    locks_fd = store.area_fd("locks")
    here = leases.node_tag(locks_fd)
    mine = store.lease_id(take=False)
    out = []
    for area, hidden in (("trees", True), ("staging", False)):
        fd = store.area_fd(area)
        for name in sorted(os.listdir(fd)):
            if hidden != name.startswith("."):
                continue
            parsed = parse(name.removeprefix("."))
            if parsed is None:
                continue
            kind, key, lease_id = parsed
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            age = now - st.st_mtime
            state = None
            if lease_id and lease_id != mine and kind != "orphan":
                state = probes.get(lease_id)
                if state is None:
                    state = probes[lease_id] = leases.probe(locks_fd, lease_id)
            verdict = _judge(kind, lease_id, mine, state, st.st_uid, store.owner_uid, age, lease_id[:8] == here,
                             grace, now)
            out.append(StagingEntry(f"{area}/{name}", kind, key, lease_id, st.st_uid, age, *verdict))
    return out


def _judge(
    kind: str, lease_id: str, mine: str | None, state: LeaseState | None, uid: int, store_owner: int, age: float,
    local: bool, grace: float, now: float,
) -> tuple[str, float, bool, str]:
    """``(state, quiet seconds, stale, why)`` of one entry: see the module's docstring."""
    if kind == "orphan":
        return "orphan", age, True, "a tree moved aside, which nobody works on"
    if not lease_id:
        bound = max(grace, STALE_AFTER)
        return "old-name", age, age > bound, f"named by an older version; unchanged for {span(age)}"
    if lease_id == mine:
        return "mine", 0.0, False, "this process's own work"
    assert state is not None
    if not leases.vouches(state, uid, store_owner):
        bound = grace if local else max(grace, MIN_STALE)
        gone = "gone" if not state.exists else "not its owner's"
        return "gone", age, age > bound, f"its lease is {gone}; unchanged for {span(age)}"
    quiet = max(0.0, now - state.heartbeat)
    if state.held:
        return "held", quiet, False, f"{state.describe()} is held"
    proven = local and state.held is False  # a free flock on this kernel and mount: nobody holds it anywhere
    bound = leases.dead_after(grace, proven=proven)
    what = "free" if state.held is False else "untried"
    return what, quiet, quiet > bound, f"{state.describe()} is {what}; last heartbeat {span(quiet)} ago"


def span(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"

