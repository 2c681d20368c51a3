"""Repair: re-derive a damaged tree from its wheel, and move damaged trees aside.

Kept apart from :mod:`verify`, which only reads: this is the part of ``wheelstore verify --repair`` (and of an
install that meets a damaged tree) that changes the store, so it needs publish access, the key locks and the wheel.

Under the key's lock the manifest moves out first, so readers stop trusting the tree before anything else changes;
then the tree moves (both into ``staging/quarantine-<key>-...``, where gc recognises them by name), and the wheel is
published again with :func:`~wheelstore.store.publish.realize_wheel`. Bytecode units of the tree are quarantined
too: their pycs were checked against the old files' mtimes, and the next install compiles fresh ones.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ..base import fsio
from ..base.errors import RepairError, WheelstoreError
from ..base.interpreter import Interpreter
from .manifest import Manifest
from .orphans import find_orphans
from .policy import user_name
from .store import Store
from .verify import (
    Repaired,
    VerifyMarks,
    VerifyReport,
    check_store,
    manifest_bytes,
    names_of,
    unit_of,
)

#: the staging kind of quarantined trees and manifests (``staging/quarantine-<key>-<lease>-<rand>[.json]``)
QUARANTINE = "quarantine"
#: finds the wheel a tree was unpacked from: (wheel file name if known, sha256) -> a local file with that sha256
WheelFinder = Callable[[str | None, str], Path | None]


def _raw_manifest(store: Store, key: str) -> Manifest | None:
    """The manifest, read without the trust checks (to name a damaged tree and find its wheel), or None."""
    data = manifest_bytes(store, key)
    try:
        return Manifest.from_json(data) if data is not None else None
    except ValueError:
        return None


def local_wheels(find_links: Sequence[str | os.PathLike[str]]) -> WheelFinder:
    """A finder over local directories: the wheel's own file name first, then any wheel with that sha256."""
    dirs = [Path(d) for d in find_links]

    def find(filename: str | None, sha256: str) -> Path | None:
        named = [d / filename for d in dirs] if filename else []
        others = [p for d in dirs if d.is_dir() for p in sorted(d.glob("*.whl")) if p not in named]
        for path in [*named, *others]:
            if path.is_file() and sha256_of(path) == sha256:
                return path
        return None

    return find


def sha256_of(path: Path) -> str | None:
    """The file's sha256, or None when it cannot be read (a wheel to repair from that is not there after all)."""
    try:
        return fsio.sha256_file(path)
    except OSError:
        return None


def who_can_repair(store: Store, key: str) -> str | None:
    """None if this user may move the tree and its manifest aside; else who may (besides root).

    Areas are sticky: only an entry's owner (or the area's) may rename it, and moving a directory to another parent
    rewrites its '..', which needs write access to the directory itself, so only the tree's owner or root.
    """
    euid = os.geteuid()
    if euid == 0:
        return None
    trees, manifests = store.area_fd("trees"), store.area_fd("manifests")
    blockers = []
    for name, dir_fd, is_tree in ((key, trees, True), (f"{key}.json", manifests, False)):
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        allowed = {st.st_uid} if is_tree and stat.S_ISDIR(st.st_mode) else {st.st_uid, os.fstat(dir_fd).st_uid}
        if euid not in allowed:
            blockers.append(user_name(st.st_uid))
    return " or ".join(dict.fromkeys(blockers)) or None


def repair_tree(
    store: Store, key: str, find: WheelFinder, checkpoints: VerifyMarks | None = None
) -> list[Repaired]:
    """Quarantine the tree ``key`` and publish it again from its wheel; return what was repaired.

    A source tree's bytecode units go to quarantine with it (they are compiled again on the next install). A pyc unit
    alone is only quarantined. Nothing is moved unless the wheel was found and this user may move everything.
    """
    manifest = _raw_manifest(store, key)
    name, version = (manifest.name, manifest.version) if manifest else ("?", "?")
    label = f"{name} {version}" if manifest else f"tree {key}"
    who = who_can_repair(store, key)
    if who is not None:
        raise RepairError(f"the store's copy of {label} can only be repaired by {who} or root",
                          hint=f"ask them to run: wheelstore --store {store.root} verify --repair -f DIR")
    store.require_publish_access()
    wheel = None
    if unit_of(key) == "tree":
        wheel = find(manifest.wheel if manifest else None, key)
        if wheel is None:
            wheel_name = manifest.wheel if manifest else "its wheel"
            raise RepairError(f"cannot repair {label}: no wheel with sha256 {key} ({wheel_name}) was found",
                              hint=f"pass -f DIR with a directory holding {wheel_name}")
    marks = checkpoints or VerifyMarks.of(store)
    units = [] if unit_of(key) == "bytecode" else _units_of(store, key)
    done = [Repaired(name, version, key, unit_of(key), wheel.name if wheel else None, quarantine(store, key))]
    marks.forget(key)
    for unit in units:  # stale now: their pycs match the old files' mtimes
        if who_can_repair(store, unit) is None:
            done.append(Repaired(name, version, unit, "bytecode", None, quarantine(store, unit)))
            marks.forget(unit)
    if wheel is not None:
        # the tree comes back as it was: with its pycs inside when it had them (folding needs them), compiled by the
        # Python running this when its version matches theirs (else its units are compiled on the next install)
        tag = manifest.bytecode if manifest else None
        compile_for = Interpreter.inspect(sys.executable) if tag and tag == sys.implementation.cache_tag else None
        from .publish import realize_wheel

        realize_wheel(store, wheel, key, compile_for=compile_for)
    if checkpoints is None:
        marks.save()
    return done


def _units_of(store: Store, key: str) -> list[str]:
    return sorted(k for k in store.keys() if k.startswith(key + "-"))


def quarantine(store: Store, key: str) -> tuple[str, ...]:
    """Move ``key``'s manifest, then its tree, into ``staging/`` under one quarantine name; return their paths.

    The manifest goes first: from that moment readers no longer trust the tree, so nobody links it while it moves.
    A crash between the two leaves a tree without a manifest, which readers ignore and the next realize replaces.
    """
    staging, manifests, trees = store.area_fd("staging"), store.area_fd("manifests"), store.area_fd("trees")
    aside = store.staging_name(QUARANTINE, key[:64])
    moved = []
    with store.key_lock(key):
        if fsio.exists(f"{key}.json", dir_fd=manifests):
            os.rename(f"{key}.json", f"{aside}.json", src_dir_fd=manifests, dst_dir_fd=staging)
            fsio.fsync_dir(manifests)
            moved.append(f"staging/{aside}.json")
        if fsio.exists(key, dir_fd=trees):
            from .commit import make_movable  # here: only a repair needs the publish steps

            make_movable(key, trees)
            os.rename(key, aside, src_dir_fd=trees, dst_dir_fd=staging)
            fsio.fsync_dir(trees)
            moved.append(f"staging/{aside}")
        fsio.fsync_dir(staging)
    return tuple(moved)


def verify_and_repair(
    store: Store,
    *,
    full: bool = False,
    find_links: Sequence[str | os.PathLike[str]] = (),
    finder: WheelFinder | None = None,
) -> VerifyReport:
    """``wheelstore verify --repair``: check every committed tree and pyc unit (as :func:`verify.verify_store`), then
    re-derive the damaged ones from their wheels.

    Wheels are looked for with ``finder`` (default: by file name, then by sha256, in the ``find_links`` directories).
    This is the seam for the index client: a finder that downloads the wheel by name and checks its sha256 fits here.
    """
    checkpoints = VerifyMarks.of(store)
    report = check_store(store, full, checkpoints)
    checkpoints.save()
    find = finder or local_wheels(find_links)
    done: set[str] = set()
    for key in dict.fromkeys(d.key for d in report.damaged):
        if key in done:
            continue
        try:
            fixed = repair_tree(store, key, find, checkpoints)
        except (WheelstoreError, OSError) as e:
            name, version = names_of(store, key)
            why = e.oneline() if isinstance(e, WheelstoreError) else f"{e.strerror or e}: {e.filename or ''}"
            report.unrepaired.append((name, version, key, why))
            continue
        report.repaired += fixed
        done.update(r.key for r in fixed)
    checkpoints.save()
    report.orphans = find_orphans(store)
    return report
