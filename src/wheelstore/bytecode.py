"""Bytecode, compiled once per store: a published unit of ``.pyc`` files per (tree, interpreter cache tag).

Published trees never change, so the pycs for a Python version that arrives later cannot go into the tree. They form
a unit of their own, ``trees/<key>-<cache tag>``, with the tree's layout (``pkg/__pycache__/mod.cpython-311.pyc``)
and a manifest like any tree's, published with the same protocol. The pycs are timestamp-checked against the store
file's mtime and size, which every link mode keeps, so they are valid in every venv; a user's edit of a private copy
changes the mtime, and Python recompiles that one module into the venv.
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


def unit_key(tree: Tree, interpreter: Interpreter) -> str | None:
    return f"{tree.key}-{interpreter.cache_tag}" if interpreter.cache_tag else None


def ensure_pycs(store: Store, tree: Tree, interpreter: Interpreter) -> Tree | None:
    """The tree's pyc unit for this interpreter, compiled and published now if the store lacks it.

    None when the interpreter caches no bytecode, or when this user may not publish (readers get no pycs, not an error).
    """
    key = unit_key(tree, interpreter)
    if key is None:
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
    data = tree.manifest.dist_info.removesuffix(".dist-info") + ".data/"
    mods = []
    for rel in tree.manifest.files:
        if not rel.endswith(".py"):
            continue
        if rel.startswith(data) and rel[len(data) :].split("/", 1)[0] not in ("purelib", "platlib"):
            continue
        mods.append(rel)
    return sorted(mods)


def _publish(store: Store, tree: Tree, interpreter: Interpreter, key: str) -> Tree:
    def build(root_fd: int, path: Path) -> tuple[dict[str, FileEntry], list[str]]:
        done = subprocess.run(
            [interpreter.executable, "-I", "-c", _COMPILE, os.fspath(tree.path), os.fspath(path),
             str(interpreter.cache_tag)],
            input=json.dumps(_modules(tree)), capture_output=True, text=True,
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["failed"])[-1]
            raise BytecodeError(f"compiling {tree.manifest.wheel} for {interpreter.cache_tag} failed: {last}")
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
