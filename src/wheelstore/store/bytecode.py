"""Bytecode, compiled once per store: into the tree itself when it is published, or as a unit per cache tag.

Two places, for two reasons:

- **In the tree** (:class:`InTree`). A ``fold`` install links whole directories of a tree into the venv, and a
  folded directory is read-only store content, so its ``__pycache__`` must already hold the pycs: they cannot sit in
  a separate unit beside the sources. So ``realize`` and an install that realizes a tree for ``fold`` compile the
  target interpreter's pycs into the staged tree before it is sealed; they are listed in the manifest like every
  file, and ``Manifest.bytecode`` names their cache tag. This is the only moment they can be added: published trees
  never change. (Keying a second, complete copy of the tree per tag instead would cost a full copy of the sources, or a
  store-side symlink per file, in every store.)
- **As a unit** (:func:`ensure_pycs`): ``trees/<key>-<cache tag>``, with the tree's layout
  (``pkg/__pycache__/mod.cpython-311.pyc``) and a manifest like any tree's, for trees published without pycs for
  this interpreter (by ``realize --no-compile``, an install in another link mode, or for another Python). Their
  venvs link the unit's pycs per file beside per-file links of the sources; ``fold`` then folds only directories
  without modules.

Both are timestamp pycs, checked against the source's mtime and size, which every link mode keeps, so they are valid
in every venv, and a user's edit of a private copy (``edit``) changes the mtime, so Python recompiles just that
module into the venv. Unchecked-hash pycs would hide such an edit.

**Who a unit is trusted from** (:func:`unit_publishers`). Nobody can check bytecode against its source short of
compiling it again, so a unit is code its publisher chose. A unit is therefore used only when its publisher could
already change what the tree runs: the tree's owner (who can rewrite the tree itself), the store's owner, or root.
Anyone else's unit, a member's planted ``trees/<key>-cpython-311`` for instance, is ignored as if absent (the venv's
Python compiles the modules itself at import), and ``verify`` reports it; for the same reason nobody else publishes
one, which would only take the key from those who may.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import stat
import threading
import time
from pathlib import Path

from ..base import cancel, progress
from ..base.errors import BytecodeError, WheelstoreError
from ..base.fsio import open_dir
from ..base.interpreter import Interpreter
from ..base.logs import log
from ..base.progress import Kind
from .manifest import FileEntry, Manifest
from .policy import Role, user_name
from .store import Store, Tree

#: a compiler process: one JSON job per line on stdin, the number of modules it compiled per line on stdout
_SERVE = r"""
import json, os, stat, sys
from importlib._bootstrap_external import _code_to_timestamp_pyc, _write_atomic
D = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

def source(tree, rel):
    # a module's bytes and stat: every directory from the tree's own opened without following a link, the file
    # without blocking, and only a regular file (the tree's owner may have put a FIFO, or a link to what only the
    # compiling user may read, in its place: its constants would be published in the pyc)
    fds = [os.open(tree, D)]
    try:
        *parents, name = rel.split("/")
        for part in parents:
            fds.append(os.open(part, D, dir_fd=fds[-1]))
        fds.append(os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fds[-1]))
        st = os.fstat(fds[-1])
        if not stat.S_ISREG(st.st_mode):
            raise OSError("not a regular file")
        chunks = [os.read(fds[-1], st.st_size + 1)]
        while chunks[-1]:  # (no walrus: the target interpreter may be older than the one running wheelstore)
            chunks.append(os.read(fds[-1], 1 << 20))
        return b"".join(chunks), st
    finally:
        for fd in fds:
            os.close(fd)

for line in sys.stdin:
    job = json.loads(line)
    done = 0
    for rel in job["modules"]:
        head, name = os.path.split(rel)
        try:
            data, st = source(job["tree"], rel)
            for level in job.get("levels", [0]):  # 1 and 2: the opt-1 and opt-2 pycs python -O and -OO look for
                code = compile(data, rel, "exec", dont_inherit=True, optimize=level)
                opt = ".opt-%d" % level if level else ""
                cfile = os.path.join(job["out"], head, "__pycache__", name[:-3] + "." + job["tag"] + opt + ".pyc")
                os.makedirs(os.path.dirname(cfile), exist_ok=True)
                _write_atomic(cfile, _code_to_timestamp_pyc(code, st.st_mtime, st.st_size), 0o644)
            done += 1
        except Exception:
            pass  # a module that does not compile (py2 leftovers, templates) is compiled, or not, at import
    print(done, flush=True)
"""#: modules per job: a tree with more is split over several compiler processes
PER_WORKER = 64


def compiled_pyc(rel: str, tag: str, level: int = 0) -> str:
    """Where the pyc of module ``rel`` goes for cache tag ``tag`` and optimization ``level`` (0, 1 or 2)."""
    head, _, name = rel.rpartition("/")
    pyc = f"__pycache__/{name[:-3]}.{tag}{f'.opt-{level}' if level else ''}.pyc"
    return f"{head}/{pyc}" if head else pyc


def _importable(names: list[str]) -> list[str]:
    """The modules among a tree's file names: code outside .data, plus .data/purelib and .data/platlib."""
    mods = []
    for rel in names:
        if not rel.endswith(".py"):
            continue
        top, _, rest = rel.partition("/")
        if top.endswith(".data") and rest.split("/", 1)[0] not in ("purelib", "platlib"):
            continue
        mods.append(rel)
    return sorted(mods)


def _run_compiler(
    interpreter: Interpreter, src: str, out: str, modules: list[str], what: str, levels: tuple[int, ...] = (0,)
) -> None:
    """Compile ``modules`` of the tree at ``src`` into ``out`` at each optimization level of ``levels``, split into
    jobs over this process's compilers."""
    if not modules:
        return
    started = time.monotonic()
    pool = _Compilers.of(interpreter)
    jobs = [modules[i : i + PER_WORKER] for i in range(0, len(modules), PER_WORKER)]
    counted = progress.active(Kind.COMPILE)  # the install's count of modules: done of total, per job
    counted.update(more=len(modules))

    def run(job: list[str]) -> None:
        pool.run(src, out, job, what, levels)
        counted.advance(len(job))

    if len(jobs) == 1:
        run(jobs[0])
    else:
        with cancel.threads(min(len(jobs), pool.limit), "compile") as threads:
            list(threads.map(run, jobs))
    log.debug("compiled %d modules of %s in %.1fs", len(modules), what, time.monotonic() - started)


class _Compilers:
    """Long-lived compiler processes of one target interpreter, shared by every thread of this process, at most one
    per core. Starting an interpreter per tree cost more than compiling a small tree: a store of 2,000 small wheels
    spent minutes starting them."""

    _all: dict[str, _Compilers] = {}
    _lock = threading.Lock()

    def __init__(self, interpreter: Interpreter) -> None:
        self.interpreter = interpreter
        self.limit = os.cpu_count() or 1
        self.idle: list[_Compiler] = []
        self.started = 0
        self.ready = threading.Condition()

    @classmethod
    def of(cls, interpreter: Interpreter) -> _Compilers:
        with cls._lock:
            found = cls._all.get(interpreter.executable)
            if found is None:
                found = cls._all[interpreter.executable] = cls(interpreter)
                if len(cls._all) == 1:
                    atexit.register(cls.close_all)
            return found

    def run(self, src: str, out: str, modules: list[str], what: str, levels: tuple[int, ...] = (0,)) -> None:
        cancel.check()  # Ctrl-C: the jobs not started are not
        compiler = self._take()
        try:
            compiler.run(src, out, str(self.interpreter.cache_tag), modules, levels)
        except BaseException as e:  # it failed, or a Ctrl-C killed it: threads waiting for a compiler look again
            compiler.close()
            with self.ready:
                self.started -= 1
                self.ready.notify_all()
            if isinstance(e, BytecodeError):
                raise BytecodeError(f"compiling {what} for {self.interpreter.cache_tag} failed: {e.message}") from None
            raise
        with self.ready:
            self.idle.append(compiler)
            self.ready.notify()

    def _take(self) -> _Compiler:
        with self.ready:
            while True:
                while self.idle and self.idle[-1].proc.poll() is not None:  # died while idle (OOM killer, ...)
                    self.idle.pop().close()
                    self.started -= 1
                if self.idle:
                    return self.idle.pop()
                if self.started < self.limit:
                    break
                self.ready.wait()
                cancel.check()
            self.started += 1
        try:
            return _Compiler(self.interpreter.executable)
        except BaseException:
            with self.ready:
                self.started -= 1
                self.ready.notify()
            raise

    @classmethod
    def close_all(cls) -> None:
        with cls._lock:
            pools, cls._all = list(cls._all.values()), {}
        for pool in pools:
            for compiler in pool.idle:
                compiler.close()


class _Compiler:
    """One compiler process. Its stderr goes to a file, so warnings can never fill a pipe and stall it."""

    def __init__(self, executable: str) -> None:
        import subprocess  # here: installs from a warm store start no compiler
        import tempfile

        self.errors = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen([executable, "-I", "-W", "ignore", "-c", _SERVE], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self.errors, text=True, umask=0o077)
        except OSError as e:
            self.errors.close()
            raise BytecodeError(f"cannot start {executable}: {e.strerror}") from None
        #: Ctrl-C kills it, whatever it is doing: the thread reading its answer then stops (a terminal's Ctrl-C reaches
        #: it too, but not a ``kill -INT`` of wheelstore alone)
        self.forget = cancel.on_cancel(self.proc.kill)

    def run(self, tree: str, out: str, tag: str, modules: list[str], levels: tuple[int, ...] = (0,)) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        job = {"tree": tree, "out": out, "tag": tag, "modules": modules, "levels": list(levels)}
        try:
            self.proc.stdin.write(json.dumps(job) + "\n")
            self.proc.stdin.flush()
            answer = self.proc.stdout.readline()
        except OSError:
            answer = ""
        if not answer.strip().isdigit():
            self.proc.kill()
            self.proc.wait()
            cancel.check()  # killed by a Ctrl-C: not a failure to compile
            self.errors.seek(0)
            last = (self.errors.read().decode("utf-8", "replace").strip().splitlines() or ["it exited"])[-1]
            raise BytecodeError(last)

    def close(self) -> None:
        import subprocess

        self.forget()
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.errors.close()


class InTree:
    """A ``realize`` compiler (see :data:`wheelstore.store.publish.Compiler`): the target interpreter's pycs, compiled
    into a staged tree before its directories are sealed, then sealed themselves with the store's published modes."""

    def __init__(self, store: Store, interpreter: Interpreter, *, optimized: bool = False) -> None:
        self.store = store
        self.interpreter = interpreter
        #: with ``optimized`` (``install --compile-optimized``) also the opt-1 and opt-2 pycs of -O and -OO: a
        #: folded directory is read-only, so Python could not write them there itself
        self.levels = (0, 1, 2) if optimized else (0,)

    def __call__(self, root_fd: int, path: Path, names: list[str]) -> tuple[dict[str, FileEntry], list[str], str]:
        tag = str(self.interpreter.cache_tag)
        present = set(names)
        modules = [m for m in _importable(names) if compiled_pyc(m, tag) not in present]
        if modules:
            _run_compiler(self.interpreter, os.fspath(path), os.fspath(path), modules, path.name, self.levels)
        files: dict[str, FileEntry] = {}
        dirs: set[str] = set()
        for pyc in [compiled_pyc(mod, tag, level) for mod in modules for level in self.levels]:
            cache_dir = pyc.rpartition("/")[0]
            try:
                fd = os.open(pyc, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root_fd)
            except FileNotFoundError:  # it did not compile (py2 leftovers, templates): Python compiles it, or not
                continue
            try:
                digest = hashlib.sha256(os.read(fd, os.fstat(fd).st_size + 1)).hexdigest()
                st = self.store.policy.apply(fd, Role.PUBLISHED_FILE)
            finally:
                os.close(fd)
            files[pyc] = FileEntry(st.st_size, digest, stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_ctime_ns)
            dirs.add(cache_dir)
        shipped = {n.rpartition("/")[0] for n in names}
        new_dirs = sorted(dirs - shipped)  # a __pycache__ the wheel itself has is sealed by the caller
        for d in new_dirs:
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root_fd)
            try:
                if set(os.listdir(fd)) - {n.rpartition("/")[2] for n in files if n.startswith(d + "/")}:
                    raise BytecodeError(f"compiling {path.name} left unexpected files in {d}")
                self.store.policy.apply(fd, Role.PUBLISHED_DIR)
            finally:
                os.close(fd)
        return files, new_dirs, tag


def unit_key(tree: Tree, interpreter: Interpreter) -> str | None:
    return f"{tree.key}-{interpreter.cache_tag}" if interpreter.cache_tag else None


def ensure_pycs(store: Store, tree: Tree, interpreter: Interpreter) -> Tree | None:
    """The tree's pyc unit for this interpreter, compiled and published now if the store lacks it.

    None when the interpreter caches no bytecode, when the unit there is not trusted (see the module's docstring), or
    when this user may not publish it: readers, and members who own neither the tree nor the store, get no pycs from
    the store, not an error, and the venv's Python compiles the modules itself.
    """
    key = unit_key(tree, interpreter)
    if key is None or tree.manifest.bytecode == interpreter.cache_tag:  # none needed, or in the tree itself
        return None
    found = store.lookup(key)
    if found is not None:
        return _trusted(store, tree, found)
    if os.geteuid() not in unit_publishers(store, tree):
        return None
    try:
        store.require_publish_access()
    except WheelstoreError:
        return None
    with store.key_lock(key, f"the bytecode of {tree.manifest.name} {tree.manifest.version}"):
        found = store.lookup(key)
        if found is not None:
            return _trusted(store, tree, found)
        if (taken := _taken_by(store, key)) is not None:
            _squatted(tree, key, taken)
            return None
        try:
            return _publish(store, tree, interpreter, key)
        except FileExistsError:  # made meanwhile, without a manifest (yet): as above
            found = store.lookup(key)
            if found is not None:
                return _trusted(store, tree, found)
            _squatted(tree, key, _taken_by(store, key) or "someone")
            return None


def _taken_by(store: Store, key: str) -> str | None:
    """Whose entry ``trees/<key>`` is, when there is one (without a manifest: a unit being published, an interrupted
    publish, or one a member planted there); None when the name is free."""
    try:
        return user_name(os.stat(key, dir_fd=store.area_fd("trees"), follow_symlinks=False).st_uid)
    except FileNotFoundError:
        return None


def _squatted(tree: Tree, key: str, owner: str) -> None:
    """Warn that the tree gets no unit: any member may create ``trees/<key>-<tag>`` (a wheel's sha256 is public),
    and that must cost at most the store's bytecode, never the install."""
    log.warning("not using store bytecode for %s %s: trees/%s is %s's, without a manifest; Python compiles the "
                "modules at import (its owner's or root's gc removes such an entry once unchanged for a day)",
                tree.manifest.name, tree.manifest.version, key, owner)


def unit_publishers(store: Store, tree: Tree) -> frozenset[int]:
    """The users whose pyc unit for ``tree`` is used: the tree's owner, the store's owner, and root.

    Root is trusted whether or not it owns the store: only root can make a file owned by uid 0, and root can already
    rewrite every file of the store, so refusing its units would protect against nothing and would leave every venv
    without store pycs for a tree whose unit root compiled first (the key is then taken).
    """
    return frozenset({tree.manifest.owner_uid, store.owner_uid, 0})


def distrust(store: Store, unit: Tree, tree: Tree | None = None) -> str | None:
    """Why the pyc ``unit`` (as :meth:`Store.lookup` returned it) must not be used, or None when it may: its tree and
    its manifest file must both belong to one of :func:`unit_publishers`. ``tree`` is the unit's source tree, looked up
    when not given; without one (gone, or itself untrusted) only the store's owner and root are trusted."""
    if tree is None:
        try:
            tree = store.lookup(unit.key[:64])
        except WheelstoreError:
            tree = None
    trusted = unit_publishers(store, tree) if tree is not None else frozenset({store.owner_uid, 0})
    # the manifest file's owner is its publisher: Store.lookup refuses any other (wheelstore.store.provenance)
    untrusted = [uid for uid in (unit.manifest.owner_uid, unit.manifest.publisher_uid) if uid not in trusted]
    if not untrusted:
        return None
    if tree is None:
        owners = f"{user_name(store.owner_uid)}, who owns the store (its tree is not there to trust)"
    elif tree.manifest.owner_uid == store.owner_uid:
        owners = f"{user_name(store.owner_uid)}, who owns the tree and the store"
    else:
        owners = f"{user_name(tree.manifest.owner_uid)}, who owns the tree, nor by {user_name(store.owner_uid)}, " \
                 "who owns the store"
    return f"published by {user_name(untrusted[0])}, not by {owners}"


def _trusted(store: Store, tree: Tree, unit: Tree) -> Tree | None:
    """``unit``, or None (with a warning) when it is not to be trusted."""
    why = distrust(store, unit, tree)
    if why is None:
        return unit
    log.warning("ignoring the bytecode of %s %s in trees/%s (%s); run: wheelstore verify",
                tree.manifest.name, tree.manifest.version, unit.key, why)
    return None


def _modules(tree: Tree) -> list[str]:
    """The tree's importable modules: code outside .data, plus .data/purelib and .data/platlib."""
    return _importable(list(tree.manifest.files))


def _publish(store: Store, tree: Tree, interpreter: Interpreter, key: str) -> Tree:
    from .commit import commit, manifest_stamp, stage_and_rename  # here: a warm install never compiles

    def build(root_fd: int, path: Path) -> tuple[dict[str, FileEntry], list[str]]:
        _run_compiler(interpreter, os.fspath(tree.path), os.fspath(path), _modules(tree), tree.manifest.wheel)
        return _seal(store, root_fd)

    files, dirs = stage_and_rename(store, "pyc", key, build, tree_key=tree.key)
    m = tree.manifest
    manifest = Manifest(
        key=key,
        wheel=f"{m.wheel} ({interpreter.cache_tag} bytecode)",
        name=m.name,
        version=m.version,
        dist_info=m.dist_info,
        root_is_purelib=m.root_is_purelib,
        owner_uid=os.geteuid(),
        files=files,
        dirs=dirs,
        **manifest_stamp(),
    )
    return commit(store, manifest)


def _seal(store: Store, root_fd: int) -> tuple[dict[str, FileEntry], list[str]]:
    """Give every compiled file and directory its published mode, deepest first; describe each file (the root is
    sealed by the caller)."""
    files: dict[str, FileEntry] = {}
    dirs: list[str] = []

    def walk(fd: int, prefix: str) -> None:
        with os.scandir(fd) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for entry, is_dir in entries:
            rel = prefix + entry
            if is_dir:
                sub = open_dir(entry, dir_fd=fd)
                try:
                    walk(sub, rel + "/")
                    store.policy.apply(sub, Role.PUBLISHED_DIR)
                finally:
                    os.close(sub)
                dirs.append(rel)
                continue
            ffd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            try:
                digest = hashlib.sha256(os.read(ffd, os.fstat(ffd).st_size + 1)).hexdigest()
                st = store.policy.apply(ffd, Role.PUBLISHED_FILE)
            finally:
                os.close(ffd)
            files[rel] = FileEntry(st.st_size, digest, stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_ctime_ns)

    walk(root_fd, "")
    return files, sorted(dirs)
