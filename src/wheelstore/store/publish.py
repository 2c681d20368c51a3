"""Realize: turn a wheel into a published, read-only tree, exactly once, crash-safely.

The protocol:

1. validate the wheel completely except for member hashes (:mod:`wheelstore.store.wheel`), before touching the store;
2. take the key's lock; if a manifest appeared meanwhile, use it;
3. unpack into a private hidden directory beside the target (``trees/.tree-<key>-<lease>-<rand>``), checking
   every member against RECORD as it streams;
4. seal every mode, the root's included, ``syncfs``, and rename it to ``trees/<key>`` without ever replacing an
   existing entry. Staging beside the target matters: moving a directory to another parent needs write access to it,
   so a tree staged elsewhere could only be sealed after it was already in place;
5. write the manifest, last, with ``link()`` so an existing one is never replaced.

A crash before step 5 leaves at most a hidden staging directory (whose lease nobody holds any more) or a sealed tree
without a manifest (an orphan). Readers use neither. The next realize of the same key adopts an orphan that is exactly
the wheel's files and belongs to this user, the store's owner or root (:func:`adopters`), or moves it aside and
publishes afresh.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ..base import cancel, fsio, progress
from ..base.errors import NoSpace, StoreError, UnsafeMember, WheelstoreError
from ..base.fsio import CHUNK, open_dir
from ..base.hooks import checkpoint
from ..base.interpreter import Interpreter
from ..base.logs import log
from ..base.progress import Kind
from .bytecode import InTree
from .commit import commit, make_movable, manifest_stamp, stage_and_rename
from .keylock import share_work
from .manifest import FileEntry, Manifest
from .policy import Role, user_name
from .store import Store, Tree
from .wheel import Limit, Member, WheelArchive

T = TypeVar("T")
#: compiles a staged tree's modules into it before its directories are sealed (``bytecode.InTree``): gets the staging
#: root's fd and path and the member names; returns the pyc entries, their ``__pycache__`` dirs and the cache tag, or
#: None for none (a service's budget check, :mod:`wheelstore.service.quota`, that compiles nothing). Raising removes
#: the staged tree: nothing is published.
Compiler = Callable[[int, Path, list[str]], tuple[dict[str, FileEntry], list[str], str] | None]


@dataclass(frozen=True)
class Realized:
    tree: Tree
    #: True when this call unpacked the wheel; False when it reused a tree someone had already published
    unpacked: bool


def realize(store: Store, wheel: Path, sha256: str | None = None, *, compiler: Compiler | None = None) -> Realized:
    done = _realize(store, wheel, sha256, compiler, wait=True)
    assert done is not None  # only a call that does not wait gives way
    return done


def try_realize(
    store: Store, wheel: Path, sha256: str | None = None, *, compiler: Compiler | None = None
) -> Realized | None:
    """:func:`realize`, or None at once when another process is publishing this wheel right now (see
    :func:`wheelstore.store.keylock.share_work`)."""
    return _realize(store, wheel, sha256, compiler, wait=False)


def _realize(
    store: Store, wheel: Path, sha256: str | None, compiler: Compiler | None, *, wait: bool, absent: bool = False
) -> Realized | None:
    with WheelArchive(wheel, sha256, spool_dir=store.root / "staging") as archive:
        key = archive.sha256
        # ``absent``: the caller has just looked ``sha256`` up and found no tree; it is looked up again under the lock
        tree = None if absent and sha256 is not None else store.lookup(key)
        if tree is not None:
            return Realized(tree, unpacked=False)
        store.require_publish_access()
        lock = store.key_lock(key, f"{archive.name} {archive.version}")
        if not lock.take(wait=wait):
            return None
        try:
            tree = store.lookup(key)  # published while we waited for the lock
            if tree is not None:
                return Realized(tree, unpacked=False)
            checkpoint("locked")
            return _publish(store, archive, compiler)
        finally:
            lock.release()


def realize_many(
    store: Store, wheels: list[tuple[Path, str | None]], *, jobs: int | None = None, compiler: Compiler | None = None,
    absent: bool = False,
) -> list[Realized | WheelstoreError]:
    """Realize each wheel, several at a time, the largest first (its unpack and compile take longest); a bad wheel
    yields its error and does not stop the others. Processes realizing the same wheels split them
    (:func:`wheelstore.store.keylock.share_work`). ``absent``: the caller has just found no tree for the hashes
    given (an install's plan), so the first look before the key lock is skipped."""

    order = sorted(range(len(wheels)), key=lambda i: -_size(wheels[i][0]))
    workers = max(1, min(jobs or os.cpu_count() or 1, 8, len(wheels)))
    with progress.phase(Kind.UNPACK, "wheels", len(wheels), progress.UNPACKED) as unpacking, \
            progress.phase(Kind.COMPILE, "bytecode", 0, progress.COMPILED) if compiler else contextlib.nullcontext():

        def one(item: tuple[Path, str | None], wait: bool) -> Realized | WheelstoreError | None:
            try:
                done = _realize(store, *item, compiler, wait=wait, absent=absent)
            except WheelstoreError as e:
                return e
            if done is not None:
                unpacking.advance()
            return done

        done: list[Realized | WheelstoreError] = share_work([wheels[i] for i in order], one, jobs=workers)
    by_index = dict(zip(order, done, strict=True))
    return [by_index[i] for i in range(len(wheels))]


def realize_wheel(
    store: Store, wheel: str | os.PathLike[str], sha256: str | None = None, *, compile_for: Interpreter | None = None
) -> Realized:
    """Publish a local wheel as a tree (once, however many processes ask) and return it; with ``compile_for``,
    that interpreter's pycs are compiled into a tree published now (what ``fold`` needs to fold its modules)."""
    return realize(store, Path(wheel), sha256, compiler=compiler_for(store, compile_for))


def realize_wheels(
    store: Store,
    wheels: Sequence[tuple[str | os.PathLike[str], str | None]],
    *,
    jobs: int | None = None,
    compile_for: Interpreter | None = None,
) -> list[Realized | WheelstoreError]:
    """Realize several ``(wheel, sha256)`` pairs in parallel; each result is a tree or the error for that wheel.
    Decompression and hashing release the GIL, so threads use every core."""
    return realize_many(store, [(Path(w), h) for w, h in wheels], jobs=jobs, compiler=compiler_for(store, compile_for))


def compiler_for(store: Store, interpreter: Interpreter | None) -> Compiler | None:
    """What compiles ``interpreter``'s pycs into a tree as it is published, or None (no interpreter, or one that
    caches no bytecode)."""
    if interpreter is None or interpreter.cache_tag is None:
        return None
    return InTree(store, interpreter)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # realize reports it
        return 0


def store_full(store: Store, e: OSError, doing: str) -> NoSpace | None:
    """``e`` as the store's full filesystem, with the fix, if that is what it is."""
    from ..base.mounts import no_space

    return no_space(e, store.root, "the store", doing,
                    fix=f"free space there, or remove the trees no venv uses: wheelstore --store {store.root} gc")


def _publish(store: Store, archive: WheelArchive, compiler: Compiler | None = None) -> Realized:
    """Unpack, seal, rename and commit ``archive``."""
    from .config import max_unpacked

    archive.set_limit(Limit(*max_unpacked(store.config())))
    key = archive.sha256
    started = time.monotonic()
    trees_fd = store.area_fd("trees")
    if fsio.exists(key, dir_fd=trees_fd):
        tree = _adopt_orphan(store, archive)
        if tree is not None:
            return Realized(tree, unpacked=False)
    try:
        files, compiled = stage_and_rename(
            store, "tree", key, lambda root_fd, path: _unpack(store, archive, root_fd, path, compiler))
    except FileExistsError:
        # Another publisher won without our lock (locks can fail on network filesystems): use theirs. We did
        # unpack, though, and say so: that is the work the lock exists to save.
        log.debug("unpacked %s, but another publisher renamed its tree into place first", archive.filename)
        return Realized(store.lookup(key) or _adopt_or_fail(store, archive), unpacked=True)
    except OSError as e:
        raise store_full(store, e, f"unpacking {archive.filename}") or e from None
    checkpoint("renamed")
    manifest = _manifest(archive, files, owner_uid=os.geteuid(), compiled=compiled)
    tree = commit(store, manifest)
    log.debug("published %s (%d files, %d shipped pycs left out) in %.1fs", archive.filename, len(manifest.files),
              len(archive.dropped), time.monotonic() - started)
    return Realized(tree, unpacked=True)


def _unpack(
    store: Store, archive: WheelArchive, root_fd: int, path: Path | None = None, compiler: Compiler | None = None
) -> tuple[dict[str, FileEntry], tuple[dict[str, FileEntry], list[str], str] | None]:
    """Write every member into the staging tree at ``root_fd`` and seal it, all but the root itself; with a
    ``compiler``, compile the modules into it too, while its directories are still writable."""
    policy = store.policy
    for d in sorted(archive.dirs):  # parents sort before children
        os.close(policy.mkdir(d, Role.STAGING_DIR, dir_fd=root_fd))
    files: dict[str, FileEntry] = {}
    half = len(archive.members) // 2
    for i, member in enumerate(archive.members):
        if i == half:
            checkpoint("mid-unpack")
        cancel.check()  # Ctrl-C: stage_and_rename removes the staged tree
        try:
            fd = policy.create(member.name, dir_fd=root_fd)
        except FileExistsError:  # only possible where the filesystem folds case or normalizes names
            raise UnsafeMember(
                f"{archive.filename}: member {member.name!r} collides with another member on this filesystem"
            ) from None
        try:
            sha256 = archive.extract(member, functools.partial(_write_all, fd))
            st = policy.apply(fd, Role.PUBLISHED_EXEC if member.executable else Role.PUBLISHED_FILE)
        finally:
            os.close(fd)
        files[member.name] = FileEntry(st.st_size, sha256, stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_ctime_ns)
    compiled = compiler(root_fd, path, sorted(files)) if compiler is not None and path is not None else None
    for d in sorted(archive.dirs, reverse=True):
        fd = open_dir(d, dir_fd=root_fd)
        try:
            policy.apply(fd, Role.PUBLISHED_DIR)
        finally:
            os.close(fd)
    return files, compiled


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _manifest(
    archive: WheelArchive,
    files: dict[str, FileEntry],
    owner_uid: int,
    compiled: tuple[dict[str, FileEntry], list[str], str] | None = None,
) -> Manifest:
    pycs, pycache_dirs, tag = compiled or ({}, [], None)
    return Manifest(
        key=archive.sha256,
        wheel=archive.filename,
        name=str(archive.name),
        version=str(archive.version),
        dist_info=archive.dist_info,
        root_is_purelib=archive.root_is_purelib,
        owner_uid=owner_uid,
        files={**files, **pycs},
        dirs=sorted({*archive.dirs, *pycache_dirs}),
        bytecode=tag,
        **manifest_stamp(),
    )


# -- orphans: a tree whose publisher died before writing its manifest -------------------------------------------------


def _adopt_orphan(store: Store, archive: WheelArchive, *, racing: bool = False) -> Tree | None:
    """Commit an orphan tree if it may be adopted (:func:`_check_orphan`); otherwise move it aside and return None.

    ``racing``: the tree appeared while we published, so another publisher is probably committing it right now;
    then one we may not adopt is left alone, and the caller is told to try again. Either way a recent tree we may
    not adopt may be another publish between its rename and its manifest, so its manifest is waited for briefly
    first: holding the key's lock says nothing of a publisher that gave up on it and went ahead without it.
    """
    key = archive.sha256
    trees_fd = store.area_fd("trees")
    try:
        checked = _check_orphan(store, archive, trees_fd)
    except OSError as e:  # not a directory, or vanished, swapped or unreadable while we looked: not adoptable
        checked = f"it cannot be read as a tree: {e.strerror}"
    if not isinstance(checked, str):
        files, owner_uid = checked
        return commit(store, _manifest(archive, files, owner_uid=owner_uid))
    committed = _committed_meanwhile(store, key, trees_fd)
    if committed is not None:
        return committed
    if racing:
        raise StoreError(f"tree {key} ({archive.filename}) changed while it was being published; try again")
    aside = store.staging_name("orphan", key)
    try:
        make_movable(key, trees_fd)
        os.rename(key, aside, src_dir_fd=trees_fd, dst_dir_fd=store.area_fd("staging"))
    except OSError:
        try:
            owner = user_name(os.stat(key, dir_fd=trees_fd, follow_symlinks=False).st_uid)
        except OSError:
            owner = "someone"
        raise StoreError(
            f"trees/{key} ({archive.filename}) was left unfinished by {owner} and is not adopted ({checked}); "
            "only that user or an admin can remove it (gc does, a day after it was left)",
            hint=f"rm -rf {store.root / 'trees' / key}",
        ) from None
    fsio.fsync_dir(trees_fd)
    return None


#: how recently an unadoptable tree without manifest must have been renamed into place to be waited for, and for
#: how long at most: a publisher links the manifest right after the rename
_COMMIT_RECENT, _COMMIT_WAIT = 60.0, 10.0


def _committed_meanwhile(store: Store, key: str, trees_fd: int) -> Tree | None:
    """The tree, if its manifest appears within :data:`_COMMIT_WAIT`: one renamed into place lately may be another
    process's publish, between its rename and its manifest (a waiter whose key lock timed out meets these). Moving
    it aside or failing then would break that publish; only an old one is taken as left unfinished. Whoever holds
    the key's lock meets these too: the publisher may have given up on the lock while another process held it."""
    try:
        st = os.stat(key, dir_fd=trees_fd, follow_symlinks=False)
    except OSError:
        return store.lookup(key)
    if not stat.S_ISDIR(st.st_mode) or time.time() - st.st_ctime > _COMMIT_RECENT:  # a publish renames a directory
        return None
    deadline = time.monotonic() + _COMMIT_WAIT
    told = False
    while (tree := store.lookup(key)) is None and (now := time.monotonic()) < deadline:
        if not told and now > deadline - _COMMIT_WAIT + 0.5:  # short waits, the common case, stay quiet
            told = True
            log.warning("waiting up to %gs for the manifest of trees/%s, which %s renamed into place %ds ago "
                        "(a publish being committed, or one left unfinished)", _COMMIT_WAIT, key,
                        user_name(st.st_uid), int(time.time() - st.st_ctime))
        cancel.sleep(0.05)
    return tree


def adopters(store: Store) -> frozenset[int]:
    """Whose orphans this process adopts: its own, the store owner's and root's.

    An adopted tree stays its owner's, who can rewrite it at any time, so adopting a member's orphan would hand that
    member a tree the adopter published (as a planted "interrupted publish" would); the store's owner and root can
    already replace anything in the store. Root counts as the store owner's peer for the reason
    :func:`wheelstore.store.bytecode.unit_publishers` gives.
    """
    return frozenset({os.geteuid(), store.owner_uid, 0})


def _check_orphan(store: Store, archive: WheelArchive, trees_fd: int) -> tuple[dict[str, FileEntry], int] | str:
    """Return the manifest's entries and owner for the orphan if it may be adopted, else why not: it must belong to
    one of :func:`adopters`, be sealed, and hold exactly the wheel's files and directories, each as RECORD says.

    Never anything else: pycs its publisher compiled into it are not adopted either, since nobody can check bytecode
    against its source (an orphan with them is moved aside and published afresh, compiled again)."""
    policy = store.policy
    walk = _OrphanWalk(store, {m.name: m for m in archive.members})
    root_fd = open_dir(archive.sha256, dir_fd=trees_fd)
    try:
        root_st = os.fstat(root_fd)
        if root_st.st_uid not in adopters(store):
            return (f"it belongs to {user_name(root_st.st_uid)}; only your own, the store owner's and root's "
                    "unfinished trees are adopted")
        if stat.S_IMODE(root_st.st_mode) != policy.mode(Role.PUBLISHED_DIR):
            return "it is not sealed"
        if not walk.walk(root_fd, ""):
            return walk.why
    finally:
        os.close(root_fd)
    if set(walk.files) != set(walk.expected) or walk.dirs != archive.dirs:
        return "it lacks files or directories the wheel has"
    return walk.files, root_st.st_uid


class _OrphanWalk:
    """One pass over an orphan tree by directory fds, comparing each file with the wheel's member; stops at the
    first entry that differs and says why in :attr:`why`."""

    def __init__(self, store: Store, expected: dict[str, Member]) -> None:
        self.store = store
        self.expected = expected
        self.files: dict[str, FileEntry] = {}
        self.dirs: set[str] = set()
        self.why = ""

    def walk(self, dir_fd: int, prefix: str) -> bool:
        policy = self.store.policy
        with os.scandir(dir_fd) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for name, is_dir in entries:
            rel = prefix + name
            if is_dir:
                self.dirs.add(rel)
                fd = open_dir(name, dir_fd=dir_fd)
                try:
                    if stat.S_IMODE(os.fstat(fd).st_mode) != policy.mode(Role.PUBLISHED_DIR):
                        self.why = f"{rel!r} is not sealed"
                        return False
                    if not self.walk(fd, rel + "/"):
                        return False
                finally:
                    os.close(fd)
                continue
            member = self.expected.get(rel)
            if member is None:
                self.why = f"it holds {rel!r}, which the wheel does not"
                return False
            entry = _check_file(name, dir_fd, member)
            if entry is None or entry.mode != policy.mode(
                    Role.PUBLISHED_EXEC if member.executable else Role.PUBLISHED_FILE):
                self.why = f"{rel!r} differs from the wheel's"
                return False
            self.files[rel] = entry
        return True


def _check_file(name: str, dir_fd: int, member: Member) -> FileEntry | None:
    """Hash the file through one descriptor and describe it by that descriptor's stat, if it matches RECORD."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (member.size is not None and st.st_size != member.size):
            return None
        record_hash = hashlib.new(member.algorithm or "sha256")
        sha256 = hashlib.sha256()
        while chunk := f.read(CHUNK):
            record_hash.update(chunk)
            sha256.update(chunk)
        after = os.fstat(fd)
    if (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != (st.st_size, st.st_mtime_ns, st.st_ctime_ns):
        return None  # changed while we read it
    if member.digest is not None and record_hash.digest() != member.digest:
        return None
    return FileEntry(st.st_size, sha256.hexdigest(), stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_ctime_ns)


def _adopt_or_fail(store: Store, archive: WheelArchive) -> Tree:
    tree = _adopt_orphan(store, archive, racing=True)
    assert tree is not None  # racing: what may not be adopted raises
    return tree
