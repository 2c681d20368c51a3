"""The ``root`` op: a client's venv recorded as a gc root, written by the service for the peer's uid.

In a service store nobody but its owner writes ``roots/``, so the service writes each user's roots in
``roots/<peer uid>-<random>/``, a directory it owns, in the format :mod:`wheelstore.store.roots` writes (its ``uid``
and ``user`` the peer's as the kernel says, its time the service's). The request carries what the client's install
knows of the venv, each field checked for shape here; it is a claim, as every root is, which gc checks against the
venv itself.

The request (``op: "root"``)::

    {"venv": "/home/alice/proj/.venv",        # the venv's real path
     "node": "<node id>", "host": "login1",   # base.node.node_id() and host_name() on the client
     "fs": "shared" | "local", "fs_type": "nfs4",
     "anchor": [[dev, ino], ...],             # base.node.anchor(venv)
     "dists": [{"name": "requests", "version": "2.32.3", "dist_info": "lib/python3.12/site-packages/requests-2.32.3
                .dist-info", "key": "<sha256>", "pyc": "<sha256>-cpython-312" | null}, ...],
     "linking": ["<sha256>", "<sha256>-cpython-312", ...]}   # optional: what the install is about to link

``linking`` is the pin an install of a client sends before it links (a client takes no gc lock): the trees and pyc
units it will link, which gc keeps for a while though the venv does not hold them yet
(:data:`wheelstore.store.rootcheck.PIN_EXPIRY`); the install's final root, sent once it has linked, drops it. The
root is written under ``gc.lock`` held shared, so a gc that decided on its victims without the pin has unpublished
them when the answer comes: the client then finds them gone before it links anything.

An empty ``dists`` with no ``linking`` removes the venv's root. Answer: ``{"ok": true, "root": "<user dir>/<name>.json"
| null}``.
"""

from __future__ import annotations

import json
import os
import re
import stat
import threading
import time
from typing import Any

from ..base import node
from ..base.errors import ServiceError
from ..base.fsio import hidden_name
from ..store.policy import Role
from ..store.roots import FORMAT, root_name, write_atomically
from ..store.store import Store

#: the most distributions one root may list (a large ML venv has a few hundred)
MAX_DISTS = 3000
_KEY = re.compile(r"[0-9a-f]{64}")
_PYC = re.compile(r"[0-9a-f]{64}-[a-z]+-[0-9]{2,4}")
_lock = threading.Lock()


def check_root(request: dict[str, Any]) -> dict[str, Any]:
    """The root's fields from a ``root`` request, each checked; ServiceError naming the first bad one."""
    venv = request.get("venv")
    if not isinstance(venv, str) or not venv.startswith("/") or len(venv) > 4096 or not venv.isprintable():
        raise ServiceError("a root's venv must be an absolute path")
    node_id, fs = request.get("node"), request.get("fs")
    if not isinstance(node_id, str) or not node.NODE_ID.fullmatch(node_id):
        raise ServiceError("a root's node must be a node id")
    if fs not in ("shared", "local"):
        raise ServiceError("a root's fs must be 'shared' or 'local'")
    dists, linking = request.get("dists"), request.get("linking", [])
    if not isinstance(dists, list) or len(dists) > MAX_DISTS:
        raise ServiceError(f"a root's dists must be a list of at most {MAX_DISTS}")
    if not isinstance(linking, list) or len(linking) > 2 * MAX_DISTS or not all(
            isinstance(k, str) and (_KEY.fullmatch(k) or _PYC.fullmatch(k)) for k in linking):
        raise ServiceError(f"a root's linking must be a list of at most {2 * MAX_DISTS} keys and pyc units")
    return {"linking": sorted(set(linking)),
            "venv": os.path.normpath(venv), "node": node_id, "host": _short(request.get("host"), "host"),
            "fs": fs, "fs_type": _short(request.get("fs_type"), "fs_type"),
            "anchor": [list(a) for a in node.anchor_from(request.get("anchor"))],
            "dists": [_dist(d) for d in dists]}


def _dist(value: object) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != {"name", "version", "dist_info", "key", "pyc"}:
        raise ServiceError("a root's dist is {name, version, dist_info, key, pyc}")
    key, pyc, dist_info = value["key"], value["pyc"], value["dist_info"]
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ServiceError("a root's dist key must be a sha256")
    if pyc is not None and (not isinstance(pyc, str) or not _PYC.fullmatch(pyc) or not pyc.startswith(key)):
        raise ServiceError("a root's dist pyc must be null or <key>-<cache tag>")
    if (not isinstance(dist_info, str) or len(dist_info) > 1024 or not dist_info.isprintable()
            or any(p in ("", ".", "..") for p in dist_info.split("/"))):
        raise ServiceError("a root's dist_info must be a relative path inside the venv")
    return {"name": _short(value["name"], "name"), "version": _short(value["version"], "version"),
            "dist_info": dist_info, "key": key, "pyc": pyc}


def _short(value: object, what: str) -> str:
    if not isinstance(value, str) or len(value) > 255 or not value.isprintable():
        raise ServiceError(f"a root's {what} must be a short printable string")
    return value


def write_root(store: Store, uid: int, user: str, doc: dict[str, Any]) -> str | None:
    """Write (or, without dists, remove) the root ``doc`` of user ``uid``; its path relative to ``roots/``."""
    name = root_name(doc["venv"], None if doc["fs"] == "shared" else doc["node"])
    with _lock:  # one directory per user, however many of their installs ask at once
        found = _find_dir(store, uid)
        if not doc["dists"] and not doc["linking"]:
            if found is not None:
                try:
                    os.unlink(name, dir_fd=found[0])
                except FileNotFoundError:
                    pass
                finally:
                    os.close(found[0])
            return None
        fd, dirname = found if found is not None else _make_dir(store, uid)
    try:
        now = time.time()
        record = {"format": FORMAT, "uid": uid, "user": user, **doc,
                  "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now))}
        if store.id is not None:
            record["store_id"] = store.id
        write_atomically(store, fd, name, json.dumps(record, indent=1, sort_keys=True).encode() + b"\n")
    finally:
        os.close(fd)
    return f"{dirname}/{name}"


def _find_dir(store: Store, uid: int) -> tuple[int, str] | None:
    """An fd for the service's directory of ``uid``'s roots, and its name; None if it has made none yet."""
    roots_fd = store.area_fd("roots")
    pattern = re.compile(rf"{uid}-[0-9a-f]{{16}}")
    for entry in sorted(os.listdir(roots_fd)):
        if not pattern.fullmatch(entry):
            continue
        fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=roots_fd)
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid():
            return fd, entry
        os.close(fd)
    return None


def _make_dir(store: Store, uid: int) -> tuple[int, str]:
    roots_fd = store.area_fd("roots")
    name = f"{uid}-{os.urandom(8).hex()}"
    tmp = hidden_name(name)
    fd = store.policy.mkdir(tmp, Role.ROOTS_DIR, dir_fd=roots_fd)
    try:
        os.rename(tmp, name, src_dir_fd=roots_fd, dst_dir_fd=roots_fd)
    except BaseException:
        os.close(fd)
        os.rmdir(tmp, dir_fd=roots_fd)
        raise
    return fd, name
