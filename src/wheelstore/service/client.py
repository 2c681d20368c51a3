"""The client side of the store service: what ``install``, ``sync``, ``realize`` and ``verify --repair`` ask a service
store's owner to do instead of writing the store themselves (:mod:`.protocol` says how).

A store is a service store when its config.toml has a ``[service]`` table (:func:`service_socket`). Its clients never
create anything in it: every publication, pyc unit, gc root and repair is a request; a service that cannot be reached
is an error naming its socket and how to start it, never a silent private copy.
"""

from __future__ import annotations

import errno
import os
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..base import cancel
from ..base.errors import ServiceDown, ServiceError, ServiceUnreachable
from . import protocol

if TYPE_CHECKING:
    import socket
    from collections.abc import Collection, Mapping, Sequence

    from packaging.utils import NormalizedName

    from ..base.distinfo import Distribution
    from ..base.interpreter import Interpreter
    from ..store.store import Store
    from ..store.verify import VerifyReport

#: seconds a request's answer may take: a publish downloads, unpacks and compiles a wheel (torch: minutes)
TIMEOUT = 1800.0
#: seconds to connect and for a short request (hello, root)
SHORT_TIMEOUT = 60.0
_CHUNK = 1 << 20
#: how long a request is asked again while the service says it is busy
BUSY_SECONDS = 30.0


class _Busy(Exception):
    """The service had no connection to spare: asked again by :meth:`ServiceClient._ask`, else ``error``."""

    def __init__(self, error: ServiceError) -> None:
        super().__init__(error.message)
        self.error = error
_SOCKETS: weakref.WeakKeyDictionary[Store, Path | None] = weakref.WeakKeyDictionary()


def service_socket(store: Store) -> Path | None:
    """The socket of the store's service (``[service] socket`` of its config.toml, default ``<store>/service.sock``);
    None when the store is not a service store. The one place clients learn that a store is one; read once per
    store opened."""
    if store not in _SOCKETS:
        _SOCKETS[store] = _socket_of(store)
    return _SOCKETS[store]


def _socket_of(store: Store) -> Path | None:
    table = store.config().get("service")
    if not isinstance(table, dict):
        return None
    value = table.get("socket")
    if value is None:
        return store.root / "service.sock"
    if not isinstance(value, str) or not value:
        raise ServiceError(f"{store.root}/config.toml: [service] socket must be a path string")
    return store.root / value  # relative: to the store


def target_of(interpreter: Interpreter) -> dict[str, Any] | None:
    """What the service compiles for (never a path to an interpreter); None when it caches no bytecode."""
    if not interpreter.cache_tag:
        return None
    return {"cache_tag": interpreter.cache_tag, "version": [interpreter.version[0], interpreter.version[1]]}


def not_running(store_root: Path, path: Path, why: str | None = None) -> ServiceDown:
    """The error for a service that cannot be reached: its socket, and how to start it (never a private copy)."""
    what = why or f"no socket at {path}"
    return ServiceDown(f"the store service for {store_root} is not running ({what})",
                        hint=f"start it as the store's owner: wheelstore serve --store {store_root}")


class ServiceClient:
    """One connection per request, so that a request the service refuses or times out leaves no state behind."""

    def __init__(self, store_root: Path, path: Path, timeout: float = TIMEOUT, owner: int | None = None) -> None:
        self.store_root = store_root
        self.path = path
        self.timeout = timeout
        #: the store's owner: the only account (with root) a service of the store runs as
        self.owner = owner

    @classmethod
    def of(cls, store: Store) -> ServiceClient:
        path = service_socket(store)
        if path is None:
            raise ServiceError(f"{store.root} is not a service store (its config.toml has no [service] table)")
        return cls(store.root, path, owner=store.owner_uid)

    def hello(self) -> dict[str, Any]:
        return self._ask({"op": "hello", "version": protocol.VERSION}, SHORT_TIMEOUT)

    def publish(self, url: str, filename: str, sha256: str, target: dict[str, Any] | None, size: int | None = None,
                ) -> dict[str, Any]:
        """The service fetches ``url`` (it must hash to ``sha256``) and publishes it -> ``{key, unpacked, ...}``.
        ``size``, the file's size as the index gives it, lets a budget refuse it before it is downloaded."""
        request = {"op": "publish", "url": url, "filename": filename, "sha256": sha256, "target": target}
        return self._ask(request if size is None else {**request, "size": size})

    def upload(self, path: Path, sha256: str | None, target: dict[str, Any] | None) -> dict[str, Any]:
        """Send a wheel of ours (a local file, a build) as bytes; the service hashes and publishes it."""
        try:
            f = open(path, "rb")
        except OSError as e:
            raise ServiceError(f"cannot read {path}: {e.strerror}") from None
        with f:
            size = os.fstat(f.fileno()).st_size
            request = {"op": "upload", "filename": path.name, "size": size, "target": target}
            if sha256 is not None:
                request["sha256"] = sha256

            def body(sock: socket.socket) -> None:
                left = size
                while left:
                    chunk = f.read(min(_CHUNK, left))
                    if not chunk:
                        raise ServiceError(f"{path} shrank while it was sent")
                    sock.sendall(chunk)
                    left -= len(chunk)

            return self._ask(request, body=body)

    def pycs(self, key: str, target: dict[str, Any]) -> str | None:
        """The key of tree ``key``'s pyc unit for ``target``, published by the service; None if it has none."""
        unit = self._ask({"op": "pycs", "key": key, "target": target}).get("unit")
        return unit if isinstance(unit, str) else None

    def root(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Record a venv of ours as a gc root (the payload: :mod:`wheelstore.service.rootdoc`)."""
        return self._ask({"op": "root", **payload}, SHORT_TIMEOUT)

    def register(self, store: Store, venv: Path, interpreter: Interpreter,
                 dists: Mapping[NormalizedName, Distribution] | None = None,
                 linking: Collection[str] = ()) -> dict[str, Any]:
        """The venv's gc root, written by the service (:func:`root_payload`); with ``linking``, the pin of the keys an
        install is about to link."""
        return self.root(root_payload(store, venv, interpreter, dists, linking))

    def repair(self, key: str) -> dict[str, Any]:
        return self._ask({"op": "repair", "key": key})

    def link(self, key: str, dir_fds: Sequence[int], entries: Sequence[tuple[int, str, str]]) -> list[Any]:
        """Have the service (as root) hard-link files of tree ``key`` into our directories ``dir_fds`` (passed as
        descriptors, never paths): ``entries`` are (index in ``dir_fds``, name, path in the tree); one result each,
        None for linked, else ``{error, errno}``."""
        request = {"op": "link", "key": key, "fds": len(dir_fds), "entries": [list(e) for e in entries]}

        def body(sock: socket.socket) -> None:
            import socket

            socket.send_fds(sock, [protocol.FD_MARK], list(dir_fds))

        results = self._ask(request, body=body).get("results")
        if not isinstance(results, list) or len(results) != len(entries):
            raise ServiceError("the store service answered a link request without a result for each file")
        return results

    def _ask(self, request: dict[str, Any], timeout: float | None = None, body: Any = None) -> dict[str, Any]:
        """One request, answered; asked again after a pause while the service says it is busy (its connections
        all taken, or this user's share of them: parallel installs of one user), for up to :data:`BUSY_SECONDS`."""
        deadline = time.monotonic() + BUSY_SECONDS
        pause = 0.05
        while True:
            try:
                return self._ask_once(request, timeout, body)
            except _Busy as busy:
                if time.monotonic() + pause > deadline:
                    raise busy.error from None
                cancel.sleep(pause)
                pause = min(pause * 2, 1.0)

    def _ask_once(self, request: dict[str, Any], timeout: float | None = None, body: Any = None) -> dict[str, Any]:
        what = str(request["op"])
        sock = self._connect()
        try:
            sock.settimeout(timeout or self.timeout)
            try:
                protocol.send_message(sock, request)
                if body is not None:
                    body(sock)
                answer = protocol.recv_message(sock)
            except TimeoutError:
                raise ServiceError(f"the store service at {self.path} did not answer a {what} request within "
                                   f"{timeout or self.timeout:.0f}s") from None
            except (BrokenPipeError, ConnectionResetError):
                # it may have refused (and said why) before reading all we sent
                answer = self._refusal(sock, what)
        finally:
            sock.close()
        if answer.get("ok") is True:
            return answer
        error = answer.get("error")
        hint = answer.get("hint")
        refused = ServiceError(f"the store service refused the {what} request: "
                               f"{error if isinstance(error, str) else 'no reason given'}",
                               hint=hint if isinstance(hint, str) else None)
        if answer.get("busy") is True:
            raise _Busy(refused)
        raise refused

    def _refusal(self, sock: socket.socket, what: str) -> dict[str, Any]:
        try:
            return protocol.recv_message(sock)
        except (OSError, ServiceError):
            raise ServiceError(f"the store service at {self.path} closed the connection during a {what} "
                               "request") from None

    def _connect(self) -> socket.socket:
        import socket  # here: a warm install into a store without a service never connects

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(SHORT_TIMEOUT)
        try:
            sock.connect(os.fspath(self.path))
        except (FileNotFoundError, ConnectionRefusedError) as e:
            sock.close()
            why = f"no socket at {self.path}" if isinstance(e, FileNotFoundError) else \
                f"nothing listens on {self.path}"
            raise not_running(self.store_root, self.path, why) from None
        except PermissionError:
            sock.close()
            raise ServiceUnreachable(f"you may not connect to the store service of {self.store_root} at {self.path}",
                               hint="ask the store's owner to allow you (wheelstore init --service --allow-user)") \
                from None
        except TimeoutError:
            sock.close()
            raise ServiceError(f"the store service at {self.path} did not accept a connection within "
                               f"{SHORT_TIMEOUT:.0f}s (it may be overloaded)") from None
        except OSError as e:
            sock.close()
            if e.errno == errno.ENOTSOCK or e.errno == errno.ECONNREFUSED:
                raise not_running(self.store_root, self.path, f"nothing listens on {self.path}") from None
            raise ServiceError(f"cannot connect to the store service at {self.path}: {e.strerror}") from None
        self._check_server(sock)
        return sock

    def _check_server(self, sock: socket.socket) -> None:
        """Refuse a socket some other user listens on (a configured path under /tmp, say, taken while the service
        was down): it would be sent our wheels, and could answer with any tree's key. The kernel says who accepted
        (``SO_PEERCRED``) before anything is sent."""
        if self.owner is None:
            return
        from .peer import Peer

        uid = Peer.credentials(sock)[1]
        if uid in (self.owner, 0):
            return
        sock.close()
        from ..store.policy import user_name

        raise ServiceError(f"{self.path} is served by {user_name(uid)}, not by {user_name(self.owner)}, the owner of "
                           f"{self.store_root}: it is not the store's service; nothing was sent to it",
                           hint=f"tell {user_name(self.owner)}; the service, started as them, refuses that socket "
                           f"until it is removed: ls -l {self.path}")


def root_payload(store: Store, venv: Path, interpreter: Interpreter,
                 dists: Mapping[NormalizedName, Distribution] | None = None,
                 linking: Collection[str] = ()) -> dict[str, Any]:
    """What a ``root`` request carries (see :mod:`.protocol`): the venv's distributions from this store, read here, as
    :func:`wheelstore.store.roots.register` would write them."""
    from ..store.roots import Place, venv_dists

    real = os.path.realpath(venv)
    place = Place.of(real)
    return {
        "venv": real,
        "node": place.node, "host": _host(), "fs": place.fs, "fs_type": place.fs_type,
        "anchor": [list(a) for a in place.anchor],
        "dists": [d._asdict() for d in venv_dists(store, real, interpreter, dists)],
        **({"linking": sorted(set(linking))} if linking else {}),
    }


def _host() -> str:
    from ..base import node

    return node.host_name()


def repair_via_service(store: Store, *, full: bool = False) -> VerifyReport:
    """``verify --repair`` of a service store: checked here (reading only), each damaged tree repaired by the service,
    which re-derives it from the wheel it fetches itself; a refusal is that tree's reason for staying damaged."""
    from ..store.verify import Repaired, names_of, verify_store

    report = verify_store(store, full=full)
    client = ServiceClient.of(store)
    for key in dict.fromkeys(d.key for d in report.damaged):
        try:
            answer = client.repair(key)
        except ServiceUnreachable:
            raise
        except ServiceError as e:
            name, version = names_of(store, key)
            report.unrepaired.append((name, version, key, e.oneline()))
            continue
        for fixed in answer.get("repaired") or ():
            if isinstance(fixed, str):
                name, version = names_of(store, fixed)
                unit = "bytecode" if "-" in fixed else "tree"
                report.repaired.append(Repaired(name, version, fixed, unit, "its wheel (by the store service)",
                                                ("the store service's quarantine",)))
    return report
