"""Checks: the quick check an install runs on the store's trees before or while it links them into a venv.

Separate from :mod:`wheelstore.store.verify` (checking a tree, and the whole store for ``wheelstore verify``) and
:mod:`wheelstore.store.repair` because only installs need it, and it is about their timing: a forked child checks
some trees while this process links (so the check costs little wall time), a damaged tree is repaired when its wheel
is at hand or refused before the venv changes, and this user's own hard links are recorded in the marks
(:class:`VerifyMarks`) so that later checks do not re-hash every linked file. On a network filesystem a tree this
user's earlier walk on this node found intact is taken on that record while its manifest and directory are unchanged
(:mod:`.fastcheck`, which says what that does and does not catch), instead of walked.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ..base.distinfo import INSTALLER_FILES
from ..base.errors import TreeDamaged, WheelstoreError
from ..base.interpreter import Interpreter
from ..base.logs import log
from ..store.bytecode import ensure_pycs
from ..store.repair import quarantine, repair_tree, sha256_of, who_can_repair
from ..store.store import Store, Tree
from ..store.verify import Damage, Mark, VerifyMarks, unit_of
from .fastcheck import Records


def intact_trees(
    store: Store,
    trees: Sequence[Tree],
    wheels: Sequence[Path | None],
    notes: list[str],
    hardlinked: frozenset[str] = frozenset(),
    repair: Callable[[Tree], Tree] | None = None,
) -> list[Tree]:
    """The trees to link, each quick-checked first; a damaged one is repaired from its wheel when it is at hand and
    this user may (or by ``repair``: a service store's service), else this raises :class:`TreeDamaged` naming the
    distribution, before any venv is touched.

    The check is mostly system calls and small-object work that one process cannot overlap, so with more than one
    core a forked child checks half of the trees meanwhile (:func:`_check_elsewhere`). Only the trees it found
    intact are taken on its word; the rest, and the ``hardlinked`` ones (whose link counts :func:`linked` needs, so
    they are walked even where a record vouches for them), are checked here.
    """
    checkpoints = VerifyMarks.of(store)  # saved by linked(), after the install, with the records
    records = Records.of(store)
    clean, unvouched = records.split(trees, hardlinked)
    elsewhere = [t for t in unvouched if t.key not in hardlinked]
    share = _about(elsewhere, 0.5) if _worth_a_child(elsewhere) else []
    clean_there = _check_elsewhere(store, share, checkpoints) if share else None
    shared_keys = {t.key for t in share}
    mine = [t for t in unvouched if t.key not in shared_keys]
    clean |= {t.key for t in mine if not records.walk(t, checkpoints)}
    if clean_there is not None:
        clean |= clean_there()
    result = []
    for tree, wheel in zip(trees, wheels):
        if tree.key in clean:
            result.append(tree)
            continue
        damage = records.walk(tree, checkpoints)
        if not damage:
            result.append(tree)
            continue
        result.append(repair(tree) if repair is not None else
                      _repair_for_install(store, tree, wheel, damage, checkpoints))
        notes.append(f"repaired the store's damaged copy of {tree.manifest.name} {tree.manifest.version} "
                     f"({damage[0].describe()}) from {wheel if repair is None else 'its wheel, by the store service'}")
    return result


class CheckWhileLinking:
    """Quick-check trees in a forked child, so that the check costs no time while this process links them.

    :meth:`intact` waits for the child and says whether every tree is intact; when it says no, the caller removes
    what it linked and goes the :func:`intact_trees` way, which names or repairs the damage. A damaged tree is so
    never left linked, though it is linked for a moment, as it could equally be damaged just after any check. Not
    for hard links: :func:`linked` needs their counts from before. Trees the child could not vouch for (it failed)
    are checked in this process when asked. Use :meth:`start`, which declines when a child would not pay.

    Some trees, the biggest that fit in ``here`` of the files, are left for this process to check once it has
    linked, so that both cores finish together. Trees their records vouch for (:mod:`.fastcheck`) are left out.
    """

    def __init__(self, store: Store, trees: Sequence[Tree], here: float = 0.0) -> None:
        self.store = store
        self.records = Records.of(store)
        _vouched, trees = self.records.split(trees)
        self.here = _about(trees, here)
        mine = {t.key for t in self.here}
        self.there = [t for t in trees if t.key not in mine]
        self.checkpoints = VerifyMarks.of(store)
        self._clean_there: Callable[[], set[str]] | None = _check_elsewhere(store, self.there, self.checkpoints)

    @classmethod
    def start(cls, store: Store, trees: Sequence[Tree], here: float = 0.0) -> CheckWhileLinking | None:
        """None when a child would not pay (few trees to walk, one core): check them before linking then."""
        _vouched, walk = Records.of(store).split(trees)
        return cls(store, walk, here) if _worth_a_child(walk) else None

    def intact(self) -> bool:
        if not all(not self.records.walk(t, self.checkpoints) for t in self.here):
            return False
        clean = self._answer()
        return all(not self.records.walk(t, self.checkpoints) for t in self.there if t.key not in clean)

    def close(self) -> None:
        """Wait for the child if nobody asked for its answer (the install failed first)."""
        self._answer()

    def _answer(self) -> set[str]:
        clean_there, self._clean_there = self._clean_there, None
        return clean_there() if clean_there is not None else set()


#: the fewest trees an install splits with a child process
FORK_AT = 8


#: the share of the check :class:`CheckWhileLinking` leaves to a process that folds every tree: linking the
#: benchmark set folded took it about a third of the time the whole check (with reading the manifests' file lists)
#: took the child (in-process timers, 2 cores), so this much more of the check evens them out. Per-file linking is
#: work enough: it leaves the whole check to the child.
HERE_WHEN_FOLDED = 0.29


def _worth_a_child(trees: Sequence[Tree]) -> bool:
    return len(trees) >= FORK_AT and (os.cpu_count() or 1) > 1


def _about(trees: Sequence[Tree], fraction: float) -> list[Tree]:
    """Some of ``trees`` that hold close to (not more than) ``fraction`` of their files: the biggest that fit first."""
    room = fraction * sum(t.manifest.count for t in trees)
    chosen = []
    for tree in sorted(trees, key=lambda t: t.manifest.count, reverse=True):
        if tree.manifest.count <= room:
            chosen.append(tree)
            room -= tree.manifest.count
    return chosen


def _check_elsewhere(store: Store, trees: Sequence[Tree], checkpoints: VerifyMarks) -> Callable[[], set[str]]:
    """Quick-check ``trees`` in a forked child while this process goes on; return a function that waits for it and
    gives the keys it found intact. The child saves the marks its re-hashing moved, and its records. A child that
    fails in any way vouches for nothing, so those trees are simply checked again here."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: walk, report, and leave without running any of the parent's cleanup
        code = 1
        try:
            os.close(read_fd)
            clean = [t.key for t in trees if _intact(store, t, checkpoints)]
            checkpoints.save()
            Records.of(store).save()
            view = memoryview("\n".join(clean).encode())
            while view:
                view = view[os.write(write_fd, view) :]
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)

    def result() -> set[str]:
        chunks = []
        with os.fdopen(read_fd, "rb") as pipe:
            while chunk := pipe.read(1 << 16):
                chunks.append(chunk)
        _, status = os.waitpid(pid, 0)
        if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
            return set()
        return set(b"".join(chunks).decode().split("\n")) & {t.key for t in trees}

    return result


def _intact(store: Store, tree: Tree, checkpoints: VerifyMarks) -> bool:
    return not Records.of(store).walk(tree, checkpoints)


def _repair_for_install(
    store: Store, tree: Tree, wheel: Path | None, damage: list[Damage], checkpoints: VerifyMarks
) -> Tree:
    store = store.home(tree)  # an overlay's site store's tree is repaired there, by who may
    m = tree.manifest
    more = f", and {len(damage) - 1} more" if len(damage) > 1 else ""
    what = f"the store's copy of {m.name} {m.version} is damaged ({damage[0].describe()}{more}); it was not linked"
    who = who_can_repair(store, tree.key)
    if who is not None:
        raise TreeDamaged(what, hint=f"ask {who} or an admin to run: wheelstore --store {store.root} verify "
                                     f"--repair -f DIR (a directory holding {m.wheel})")
    if wheel is None or not wheel.is_file():
        raise TreeDamaged(what, hint=f"wheelstore --store {store.root} verify --repair -f DIR "
                                     f"(a directory holding {m.wheel})")
    try:
        repair_tree(store, tree.key, lambda _name, sha: wheel if sha256_of(wheel) == sha else None, checkpoints)
    except WheelstoreError as e:
        raise TreeDamaged(f"{what}, and repairing it failed: {e.message}", hint=e.hint) from None
    fresh = store.lookup(tree.key)
    if fresh is None or Records.of(store).walk(fresh, checkpoints):
        raise TreeDamaged(f"{what}, and it is still damaged after a repair", hint="run: wheelstore verify --full")
    return fresh


def intact_pycs(store: Store, tree: Tree, interpreter: Interpreter, *, hardlinked: bool = False) -> Tree | None:
    """The tree's pyc unit for ``interpreter`` (see :func:`ensure_pycs`), quick-checked first (walked when it is to
    be ``hardlinked``). A damaged unit is quarantined and compiled again if this user may; else the venv gets no pycs
    from the store (never damaged ones)."""
    checkpoints = VerifyMarks.of(store)
    records = Records.of(store)
    unit = ensure_pycs(store, tree, interpreter)
    if unit is None:
        return None
    vouched, _walk = records.split([unit], (unit.key,) if hardlinked else ())
    if vouched or not records.walk(unit, checkpoints):
        return unit
    if who_can_repair(store, unit.key) is not None:
        return None
    try:
        store.require_publish_access()
        quarantine(store, unit.key)
    except (OSError, WheelstoreError):
        return None
    checkpoints.forget(unit.key)
    unit = ensure_pycs(store, tree, interpreter)
    return unit if unit is not None and not records.walk(unit, checkpoints) else None


def linked(store: Store, units: Iterable[Tree], cache_tag: str | None = None) -> None:
    """Note that this process just hard-linked ``units``, which :func:`intact_trees` or :func:`intact_pycs` had
    found intact before the linking began, into a venv whose interpreter has ``cache_tag``, and save this process's
    checkpoints and records (call it after every install).

    Each link moved the ctimes. The new mark (now) takes those changes as this install's own, and records each
    file's link count as one more than the check saw, so that deleting the venv later (which moves the ctimes again,
    and the link counts back) is recognised as an unlink, not re-hashed. Taken on trust: that nothing else wrote the
    files, restoring their mtimes, between the check and now. ``verify --full`` relies on neither.
    """
    checkpoints = VerifyMarks.of(store)
    now = time.time_ns()
    for unit in units:
        seen = checkpoints.observed.get(unit.key)
        m = unit.manifest
        if seen is None or len(seen) != len(m.files):
            continue
        plus = _hardlinked(unit, cache_tag)
        checkpoints.set(unit.key, Mark(now, [(seen[r][0], seen[r][1] + (r in plus)) for r in m.files],
                                       listed=checkpoints.get(unit.key).listed))
    checkpoints.save()
    if (records := Records.opened(store)) is not None:
        records.save()
        if (said := records.summary()) is not None:
            log.debug("%s", said)


def _hardlinked(unit: Tree, cache_tag: str | None) -> set[str]:
    """The files of ``unit`` an install links: not scripts and installer metadata (it writes those itself), nor pycs
    compiled into the tree for another Python. Counting one too few only costs a re-hash later; one too many would
    let a rewrite pass for an unlink, so when in doubt a file is left out."""
    m = unit.manifest
    if unit_of(unit.key) == "bytecode":
        return set(m.files)
    scripts = m.dist_info.removesuffix(".dist-info") + ".data/scripts/"
    own = {f"{m.dist_info}/{name}" for name in INSTALLER_FILES}
    in_tree_pyc = f".{m.bytecode}.pyc" if m.bytecode and m.bytecode != cache_tag else None

    def links(rel: str) -> bool:
        if rel.startswith(scripts) or rel in own:
            return False
        return not (in_tree_pyc and rel.endswith(in_tree_pyc) and "/__pycache__/" in "/" + rel)

    return {r for r in m.files if links(r)}
