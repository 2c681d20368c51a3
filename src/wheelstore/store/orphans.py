"""Orphans: entries of ``trees/`` that no manifest describes, which ``verify`` names with what removes each.

An orphan is an interrupted publish (its publisher died between the rename and the manifest), a publish being
committed right now, or an entry a member planted: a ``trees/<key>``, which the next realize of its wheel adopts or
moves aside when it may, or a ``trees/<key>-<cache tag>``, which takes the name of a tree's bytecode unit (installs
ignore it with a warning, and Python compiles the modules at import). Nobody uses one, so it is not damage to a
published tree, but it blocks its name, and only its owner, root and gc remove it. Hidden staging names
(``.tree-``, ``.gc-``) are not orphans: gc's staging sweep judges those. A manifest without its tree is not one
either: :meth:`Store.lookup` refuses it, so ``verify`` reports it as damage.
"""

from __future__ import annotations

import os
import re
import stat
import time
from dataclasses import dataclass

from ..base.errors import printable
from .policy import user_name
from .store import STALE_AFTER, Store

#: the names gc sweeps when no manifest describes them: a tree's key, or a pyc unit's ``<key>-<cache tag>``
UNIT_NAME = re.compile(r"^([0-9a-f]{64})(-[A-Za-z0-9_.-]+)?$")


@dataclass(frozen=True)
class Orphan:
    """One entry of ``trees/`` without a manifest."""

    name: str  #: the entry's name in ``trees/``
    kind: str  #: tree (a key), bytecode (a pyc unit's name) or other (a name no publish makes)
    owner: str
    age: float  #: seconds since it last changed
    removal: str  #: who and what removes it

    def to_json(self) -> dict[str, object]:
        return {"path": f"trees/{self.name}", "key": self.name, "kind": self.kind, "owner": self.owner,
                "age_seconds": int(self.age), "removed_by": self.removal}

    def describe(self) -> str:
        """One line for people; the name is any member's choice, so control characters are spelled out."""
        what = {"tree": "a tree", "bytecode": "a bytecode unit"}.get(self.kind, "an entry")
        return printable(f"trees/{self.name}: {what} without a manifest, owned by {self.owner}; {self.removal}")


def find_orphans(store: Store) -> list[Orphan]:
    """Every visible entry of ``trees/`` whose manifest is not in ``manifests/``, in name order."""
    trees_fd, manifests_fd = store.area_fd("trees"), store.area_fd("manifests")
    now = time.time()
    found = []
    for name in sorted(os.listdir(trees_fd)):
        if name.startswith("."):
            continue
        try:
            st = os.stat(name, dir_fd=trees_fd, follow_symlinks=False)
        except FileNotFoundError:  # gone meanwhile (gc, a repair)
            continue
        if _has_manifest(name, manifests_fd):
            continue
        m = UNIT_NAME.match(name)
        kind = "other" if m is None else "bytecode" if m.group(2) else "tree"
        age = now - max(st.st_mtime, st.st_ctime)
        found.append(Orphan(name, kind, user_name(st.st_uid), age, _removal(store, name, kind, st, age)))
    return found


def _has_manifest(name: str, manifests_fd: int) -> bool:
    try:
        os.stat(f"{name}.json", dir_fd=manifests_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    except OSError:  # a name too long for one: then there is none
        return False
    return True


def _removal(store: Store, name: str, kind: str, st: os.stat_result, age: float) -> str:
    """What removes the entry, as gc (:func:`~wheelstore.store.gc.collect_garbage`) and realize really do. The command
    is quoted: the name is the planter's choice, and ``trees/x ~`` unquoted would remove the home of whoever pastes
    it."""
    import shlex  # here: only verify names orphans, and the CLI starts without shlex

    owner = user_name(st.st_uid)
    who = "root" if st.st_uid == 0 else f"{owner} or root"
    rm = f"{who} can remove it: rm -rf {shlex.quote(str(store.root / 'trees' / name))}"
    if kind == "other":
        return f"{rm} (gc leaves names no publish makes)"
    when = f"once it is unchanged for {STALE_AFTER // 3600} hours (or gc's grace, if longer)"
    gc = f"gc run by {who} removes it {when}"
    if store.owner_uid not in (st.st_uid, 0):  # the sticky bit lets the store's owner rename, not delete, its files
        gc += f", and {user_name(store.owner_uid)}'s, as the store's owner, moves it out of the way"
    recent = "; changed within the last minute, it may be a publish being committed now" if age < 60 else ""
    if kind == "tree" and stat.S_ISDIR(st.st_mode):
        return f"{rm}; {gc}; the next realize of its wheel adopts it or moves it aside, when it may{recent}"
    return f"{rm}; {gc}{recent}"
