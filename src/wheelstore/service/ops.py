"""What the service does for each request (:mod:`.protocol`), as the store's owner.

Every store path comes from a digest the service computed or checked itself: a URL's bytes are hashed as they are
downloaded and refused unless they hash to the claim; an upload's bytes are hashed as they arrive; ``realize`` checks
every member against RECORD and every member name against escaping the tree. A failed request leaves nothing behind:
its staging is removed before it is answered.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from .. import __version__
from ..base import fsio
from ..base.errors import PeerGone, ServiceError, StoreError, WheelstoreError, printable
from ..base.interpreter import Interpreter
from ..fetch.download import fetch_tree
from ..fetch.http import Http
from ..fetch.index import RemoteFile
from ..store.bytecode import InTree, ensure_pycs
from ..store.policy import Role
from ..store.publish import realize
from ..store.serviceconf import ServiceSettings
from ..store.store import Store, Tree
from ..store.storelock import StoreLock
from . import links, rootdoc
from .protocol import VERSION, check_filename, check_sha256, check_target, check_url
from .quota import Quota

if TYPE_CHECKING:
    from .peer import Peer

#: an upload may take this long, plus a second per MiB: a stalled or trickling sender cannot hold a slot for ever
UPLOAD_BASE_SECONDS = 60.0
UPLOAD_MIN_RATE = 1 << 20
_log_lock = threading.Lock()


def log_line(text: str) -> None:
    """One line of the service's log on stderr (journald, under systemd), with the time; every character a terminal
    or a log reader could act on spelled out (a newline in anything a peer sent cannot forge a line of its own)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with _log_lock:
        sys.stderr.write(f"{stamp} wheelstore serve: {printable(text)}\n")
        sys.stderr.flush()


class Service:
    """The store, its ``[service]`` settings and its trusted interpreters: what each request is served with."""

    def __init__(self, store: Store, settings: ServiceSettings) -> None:
        self.store = store
        self.settings = settings
        self._interpreters: list[Interpreter] | None = None
        self.quota = Quota(store, settings)
        self._lock = threading.Lock()
        self._ops: dict[str, Callable[[dict[str, Any], socket.socket, Peer], dict[str, Any]]] = {
            "hello": self.hello, "publish": self.publish, "upload": self.upload, "pycs": self.pycs,
            "repair": self.repair, "root": self.root, "link": self.link,
        }

    def handle(self, request: dict[str, Any], conn: socket.socket, peer: Peer) -> dict[str, Any]:
        op = request.get("op")
        do = self._ops.get(op) if isinstance(op, str) else None
        if do is None:
            raise ServiceError(f"unknown op {str(op)[:40]!r}", hint=f"the ops are: {', '.join(self._ops)}")
        if op == "hello":
            return do(request, conn, peer)
        what = f"{peer.user} (uid {peer.uid}, pid {peer.pid}) {op}"
        try:
            answer = do(request, conn, peer)
        except WheelstoreError as e:
            log_line(f"{what} {_named(request)}: refused: {e.oneline()}")
            raise
        log_line(f"{what} {_named(request)}: {answer.get('outcome', 'done')}")
        return answer

    # -- the ops ---------------------------------------------------------------------------------------------------

    def hello(self, request: dict[str, Any], conn: socket.socket, peer: Peer) -> dict[str, Any]:
        return {"ok": True, "version": VERSION, "wheelstore": __version__, "store": str(self.store.root),
                "id": self.store.id, "uid": peer.uid, "user": peer.user, "max_upload": self.settings.max_upload,
                "bytecode": sorted({str(i.cache_tag) for i in self.interpreters() if i.cache_tag}),
                "link": links.available()}

    def publish(self, request: dict[str, Any], conn: socket.socket, peer: Peer) -> dict[str, Any]:
        url, filename = self.allowed_url(request.get("url")), _wheel_name(request.get("filename"))
        sha, target = check_sha256(request.get("sha256")), check_target(request.get("target"))
        if unquote(urlsplit(url).path).rpartition("/")[2] != filename:
            raise ServiceError(f"{url} does not name the file {filename}")
        compiler = self.compiler(target)
        tree = self.store.lookup(sha)
        unpacked = tree is None
        if tree is None:
            with self.quota.admitting(peer, filename, _size(request), compiler) as checked:
                http = Http()
                try:
                    tree = fetch_tree(self.store, RemoteFile(filename, url, {"sha256": sha}), http, checked)
                finally:
                    http.close()
                self.quota.published(peer, tree.key)
        return self._published(tree, unpacked, target)

    def upload(self, request: dict[str, Any], conn: socket.socket, peer: Peer) -> dict[str, Any]:
        filename, target = _wheel_name(request.get("filename")), check_target(request.get("target"))
        claim = request.get("sha256")
        claim = None if claim is None else check_sha256(claim)
        size = request.get("size")
        if type(size) is not int or size <= 0:
            raise ServiceError("an upload's size must be a positive number of bytes")
        if size > self.settings.max_upload:
            raise ServiceError(f"an upload of {size} bytes is over the service's limit of {self.settings.max_upload}",
                               hint="ask the store's owner to raise [service] max_upload")
        store = self.store
        staging_fd = store.area_fd("staging")
        name = store.staging_name("upload", claim or "0" * 64)
        dir_fd = store.policy.mkdir(name, Role.STAGING_DIR, dir_fd=staging_fd)
        try:
            try:
                sha = _receive(conn, store.policy.create(filename, dir_fd=dir_fd), size)
            finally:
                os.close(dir_fd)
            if claim is not None and sha != claim:
                raise ServiceError(f"{filename} has sha256 {sha}, not the claimed {claim}; nothing was published")
            known = store.lookup(sha) is not None  # a tree already there is linked, never charged
            with self.quota.admitting(peer, filename, None if known else size, self.compiler(target)) as compiler:
                done = realize(store, store.root / "staging" / name / filename, sha, compiler=compiler)
                if done.unpacked:
                    self.quota.published(peer, done.tree.key)
        finally:
            fsio.remove_tree(name, dir_fd=staging_fd)
        return self._published(done.tree, done.unpacked, target)

    def pycs(self, request: dict[str, Any], conn: socket.socket, peer: Peer) -> dict[str, Any]:
        key, target = check_sha256(request.get("key")), check_target(request.get("target"))
        tree = self.store.lookup(key)
        if tree is None:
            raise ServiceError(f"the store has no tree {key}", hint="publish its wheel first")
        interpreter = self.interpreter(target)
        if interpreter is None:
            return {"ok": True, "unit": None, "outcome": f"no python for {target['cache_tag']}",
                    "note": f"the service has no python for {target['cache_tag']}: no pycs"}
        unit = ensure_pycs(self.store, tree, interpreter)
        return {"ok": True, "unit": None if unit is None else unit.key,
                "outcome": "no unit" if unit is None else f"unit {unit.key}"}

    def repair(self, request: dict[str, Any], conn: socket.socket, peer: Peer) -> dict[str, Any]:
        from . import repairs

        key = check_sha256(request.get("key"))
        url = request.get("url")
        return repairs.repair(self.store, key, None if url is None else self.allowed_url(url))

    def root(self, request: dict[str, Any], conn: socket.socket, peer: Peer) -> dict[str, Any]:
        doc = rootdoc.check_root(request)
        # under gc.lock shared: a gc deciding without this root has unpublished its victims before the answer
        lock = StoreLock(self.store, exclusive=False)
        lock.acquire()
        try:
            written = rootdoc.write_root(self.store, peer.uid, peer.user, doc)
        finally:
            lock.release()
        return {"ok": True, "root": written, "outcome": f"root {written or 'removed'} of {doc['venv']}"}

    def link(self, request: dict[str, Any], conn: socket.socket, peer: Peer) -> dict[str, Any]:
        return links.link(self.store, request, conn, peer)

    # -- helpers ---------------------------------------------------------------------------------------------------

    def _published(self, tree: Tree, unpacked: bool, target: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = {"ok": True, "key": tree.key, "unpacked": unpacked,
                                  "bytecode": tree.manifest.bytecode,
                                  "outcome": f"{'published' if unpacked else 'already there'} {tree.manifest.wheel}"}
        if tree.manifest.bytecode != target["cache_tag"] and self.interpreter(target) is None:
            answer["note"] = f"the service has no python for {target['cache_tag']}: published without its pycs"
        return answer

    def allowed_url(self, value: object) -> str:
        url = check_url(value)
        for prefix in self.settings.indexes:
            base = prefix if prefix.endswith("/") else prefix + "/"
            if url.startswith(base):
                return url
        raise ServiceError(f"{url} is not on an index this service fetches from",
                           hint="upload the wheel instead, or ask the store's owner to add its index to "
                           "[service] indexes")

    def interpreters(self) -> list[Interpreter]:
        """The service's own interpreters: the one running it and ``[service] pythons``, asked once."""
        with self._lock:
            if self._interpreters is None:
                found = []
                for python in dict.fromkeys([sys.executable, *self.settings.pythons]):
                    try:
                        found.append(Interpreter.inspect(python))
                    except (WheelstoreError, OSError) as e:
                        log_line(f"warning: {python} is not used to compile: {e}")
                self._interpreters = found
            return self._interpreters

    def interpreter(self, target: dict[str, Any]) -> Interpreter | None:
        for interpreter in self.interpreters():
            if interpreter.cache_tag == target["cache_tag"] and list(interpreter.version[:2]) == target["version"]:
                return interpreter
        return None

    def compiler(self, target: dict[str, Any]) -> InTree | None:
        interpreter = self.interpreter(target)
        return None if interpreter is None else InTree(self.store, interpreter)


def _wheel_name(value: object) -> str:
    filename = check_filename(value)
    if not filename.endswith(".whl"):
        raise ServiceError(f"{filename} is not a wheel; the service publishes wheels only",
                           hint="build it yourself (uv build) and upload the wheel")
    return filename


def _size(request: dict[str, Any]) -> int | None:
    """The wheel's size as the client read it from its index (optional): only a first estimate for the budget."""
    size = request.get("size")
    return size if type(size) is int and 0 < size < 1 << 50 else None


def _named(request: dict[str, Any]) -> str:
    """What a request names, for the log line: its file and digest (each shortened, printable)."""
    parts = []
    for field in ("filename", "sha256", "key", "url", "venv"):
        value = request.get(field)
        if isinstance(value, str):
            parts.append(f"{field}={value[:200]!r}")
    return " ".join(parts) or "-"


def _receive(conn: socket.socket, fd: int, size: int) -> str:
    """Exactly ``size`` bytes from ``conn`` into ``fd`` (closed on return); their sha256. :class:`PeerGone` if the
    peer closes, stalls past the socket's timeout or overruns the upload's time."""
    deadline = time.monotonic() + UPLOAD_BASE_SECONDS + size / UPLOAD_MIN_RATE
    digest = hashlib.sha256()
    left = size
    with os.fdopen(fd, "wb") as out:
        while left:
            if time.monotonic() > deadline:
                raise PeerGone("an upload took longer than its size allows; dropped")
            try:
                chunk = conn.recv(min(left, 1 << 20))
            except (TimeoutError, OSError) as e:
                raise PeerGone(f"an upload stopped with {left} bytes to come ({e})") from None
            if not chunk:
                raise PeerGone(f"the peer closed an upload with {left} bytes to come")
            digest.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


__all__ = ["Service", "StoreError", "log_line"]
