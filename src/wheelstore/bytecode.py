"""Bytecode, compiled once per store: into the tree itself when it is published, or as a unit per cache tag.

Two places, for two reasons:

- **In the tree** (:class:`InTree`). A ``fold`` install links whole directories of a tree into the venv, and a
  folded directory is read-only store content, so its ``__pycache__`` must already hold the pycs: they cannot sit in
  a separate unit beside the sources. So an install that realizes a tree for ``fold`` compiles the target
  interpreter's pycs into the staged tree before it is sealed; they are listed in the manifest like every file, and
  ``Manifest.bytecode`` names their cache tag. This is the only moment they can be added: published trees never
  change. (Keying a second, complete copy of the tree per tag instead would cost a full copy of the sources, or a
  store-side symlink per file, in every store.)
- **As a unit** (:func:`ensure_pycs`): ``trees/<key>-<cache tag>``, with the tree's layout
  (``pkg/__pycache__/mod.cpython-311.pyc``) and a manifest like any tree's, for trees published without pycs for
  this interpreter (realized by ``wheelstore realize`` or a non-fold install, or for another Python version). Their
  venvs link the unit's pycs per file beside per-file links of the sources; ``fold`` then folds only directories
  without modules.

Both are timestamp pycs, checked against the source's mtime and size, which every link mode keeps, so they are valid
in every venv, and a user's edit of a private copy (``edit``) changes the mtime, so Python recompiles just that
module into the venv. Unchecked-hash pycs would hide such an edit.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path

from .errors import WheelstoreError
from .manifest import FileEntry, Manifest
from .policy import Role, open_dir
from .realize import _commit, _manifest_stamp, stage_and_rename
from .store import Store, Tree
from .venv import Interpreter

_COMPILE = r"""
import importlib.util, json, os, py_compile, sys
from concurrent.futures import ProcessPoolExecutor
tree, out, tag = sys.argv[1:4]
jobs = json.loads(sys.stdin.read())

def one(rel):
    head, name = os.path.split(rel)
    cfile = os.path.join(out, head, "__pycache__", name[:-3] + "." + tag + ".pyc")
    try:
        py_compile.compile(os.path.join(tree, rel), cfile=cfile, dfile=rel, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
    except Exception:
        return None  # a module that does not compile (py2 leftovers, templates) is compiled, or not, at import
    return rel

if __name__ == "__main__":
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        done = [r for r in pool.map(one, jobs, chunksize=64) if r]
    print(len(done))
"""


class BytecodeError(WheelstoreError):
    """The target interpreter could not compile a tree's modules."""


def compiled_pyc(rel: str, tag: str) -> str:
    """Where the pyc of module ``rel`` goes for cache tag ``tag``."""
    head, _, name = rel.rpartition("/")
    return f"{head}/__pycache__/{name[:-3]}.{tag}.pyc" if head else f"__pycache__/{name[:-3]}.{tag}.pyc"


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


def _run_compiler(interpreter: Interpreter, src: str, out: str, modules: list[str], what: str) -> None:
    done = subprocess.run(
        [interpreter.executable, "-I", "-c", _COMPILE, src, out, str(interpreter.cache_tag)],
        input=json.dumps(modules), capture_output=True, text=True, umask=0o077,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise BytecodeError(f"compiling {what} for {interpreter.cache_tag} failed: {last}")


class InTree:
    """A ``realize`` compiler (see :data:`wheelstore.realize.Compiler`): the target interpreter's pycs, compiled into
    a staged tree before its directories are sealed, then sealed themselves with the store's published modes."""

    def __init__(self, store: Store, interpreter: Interpreter) -> None:
        self.store = store
        self.interpreter = interpreter

    def __call__(self, root_fd: int, path: Path, names: list[str]) -> tuple[dict[str, FileEntry], list[str], str]:
        tag = str(self.interpreter.cache_tag)
        present = set(names)
        modules = [m for m in _importable(names) if compiled_pyc(m, tag) not in present]
        if modules:
            _run_compiler(self.interpreter, os.fspath(path), os.fspath(path), modules, path.name)
        files: dict[str, FileEntry] = {}
        dirs: set[str] = set()
        for mod in modules:
            pyc = compiled_pyc(mod, tag)
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

    None when the interpreter caches no bytecode, or when this user may not publish (readers get no pycs, not an error).
    """
    key = unit_key(tree, interpreter)
    if key is None or tree.manifest.bytecode == interpreter.cache_tag:  # none needed, or in the tree itself
        return None
    found = store.lookup(key)
    if found is not None:
        return found
    try:
        store.require_publish_access()
    except WheelstoreError:
        return None
    with store.key_lock(key):
        found = store.lookup(key)
        if found is not None:
            return found
        return _publish(store, tree, interpreter, key)


def _modules(tree: Tree) -> list[str]:
    """The tree's importable modules: code outside .data, plus .data/purelib and .data/platlib."""
    return _importable(list(tree.manifest.files))


def _publish(store: Store, tree: Tree, interpreter: Interpreter, key: str) -> Tree:
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
        **_manifest_stamp(),
    )
    return _commit(store, manifest)


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
