"""``wheelstore serve``: the store's one writer, listening on a Unix socket.

It runs as the store's owner (root given a store of a dedicated account becomes that account first), so everything
it publishes is the owner's, read-only, in areas nobody else may write. Each connection is served by a thread of its
own, at most :data:`MAX_CONNECTIONS` at once (one more is told ``busy`` and closed), each receive bounded by
:data:`RECV_TIMEOUT`. The peer is who the kernel says (``SO_PEERCRED``), never who it says it is, and is served only
if the store's allow list names them or one of their groups. One connection's failure is answered and logged, and
never stops the service; SIGTERM and Ctrl-C stop it, removing its socket.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import signal
import socket
import stat
import threading
import traceback
from collections.abc import Iterator
from typing import Any

from ..base.errors import PeerGone, ServiceError, WheelstoreError, printable
from ..store.policy import user_name
from ..store.store import Store
from . import ops
from .peer import Peer
from .protocol import recv_message, send_message

#: connections served at once; more are answered ``busy`` and closed
MAX_CONNECTIONS = 32
#: seconds a receive may wait for the peer's next bytes
RECV_TIMEOUT = 30.0


def serve(store: Store, socket_path: str | None = None) -> None:
    """Serve ``store`` until SIGTERM or Ctrl-C; a one-line :class:`ServiceError` if it cannot start."""
    settings = store.service
    if settings is None:
        raise ServiceError(f"{store.root} is not a service store",
                           hint=f"make one with: wheelstore init --service {store.root} (as the account to run it)")
    _become_owner(store)
    path = socket_path or settings.socket
    service = ops.Service(store, settings)
    slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        with _listening(path, settings.socket_mode) as listener:
            ops.log_line(f"serving {store.root} on {path} as {user_name(os.geteuid())}")
            while True:
                conn, _ = listener.accept()
                if not slots.acquire(blocking=False):
                    _refuse_busy(conn)
                    continue
                threading.Thread(target=_serve_one, args=(service, conn, slots), daemon=True,
                                 name="wheelstore-conn").start()
    except KeyboardInterrupt:
        ops.log_line(f"stopped serving {store.root}")
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _become_owner(store: Store) -> None:
    """Run as the store's owner: root becomes the owner of a store it does not own (with the owner's groups); anyone
    else is refused."""
    euid = os.geteuid()
    if euid == store.owner_uid:
        return
    owner = user_name(store.owner_uid)
    if euid != 0:
        raise ServiceError(f"the service of {store.root} must run as its owner, {owner}, or root; you are "
                           f"{user_name(euid)}", hint=f"run it as {owner}: sudo -u {owner} wheelstore serve "
                           f"--store {store.root}")
    try:
        entry = pwd.getpwuid(store.owner_uid)
    except KeyError:
        raise ServiceError(f"the owner of {store.root} (uid {store.owner_uid}) has no account to run as") from None
    os.initgroups(entry.pw_name, entry.pw_gid)
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


@contextlib.contextmanager
def _listening(path: str, mode: int) -> Iterator[socket.socket]:
    """A listening socket at ``path`` (a stale one of ours replaced, anything else refused), removed on the way out."""
    _clear_stale(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
    except OSError as e:
        listener.close()
        raise ServiceError(f"cannot listen on {path}: {e.strerror}") from None
    try:
        ident = os.stat(path, follow_symlinks=False)
        os.chmod(path, mode)
        listener.listen(128)
        yield listener
    finally:
        listener.close()
        with contextlib.suppress(OSError):
            now = os.stat(path, follow_symlinks=False)
            if (now.st_dev, now.st_ino) == (ident.st_dev, ident.st_ino):
                os.unlink(path)


def _clear_stale(path: str) -> None:
    """Remove a socket left by a service of ours that died; refuse one that answers, or anything that is not ours."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.geteuid():
        raise ServiceError(f"{path} exists and is not a socket of {user_name(os.geteuid())}'s",
                           hint=f"remove it if it is not needed, or give another --socket: ls -l {path}")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(5)
        probe.connect(path)
    except OSError as e:
        if e.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise ServiceError(f"{path} exists and cannot be checked: {e.strerror}") from None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    finally:
        probe.close()
    raise ServiceError(f"a service already listens on {path}", hint="stop it first, or give another --socket")


def _refuse_busy(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.settimeout(1)
        send_message(conn, {"ok": False, "error": f"busy: {MAX_CONNECTIONS} connections are being served",
                            "hint": "try again in a moment"})
    conn.close()


def _serve_one(service: ops.Service, conn: socket.socket, slots: threading.BoundedSemaphore) -> None:
    """One connection: requests answered in turn until the peer closes; nothing in it stops the service."""
    try:
        conn.settimeout(RECV_TIMEOUT)
        peer = Peer(conn)
        if not peer.allowed(service.settings, service.store.owner_uid):
            with contextlib.suppress(ServiceError, OSError):  # its request first: then it is there to hear why
                recv_message(conn)
            send_message(conn, _refusal(service, peer))
            ops.log_line(f"refused {peer.user} (uid {peer.uid}, pid {peer.pid}): not on the allow list")
            return
        while _answer(service, conn, peer):
            pass
    except Exception:  # noqa: BLE001 - a bug in one connection is logged, the others go on
        ops.log_line("internal error: " + " | ".join(traceback.format_exc().strip().splitlines()[-3:]))
    finally:
        conn.close()
        slots.release()


def _refusal(service: ops.Service, peer: Peer) -> dict[str, Any]:
    return {"ok": False, "error": f"{peer.user} may not use the store service of {service.store.root}",
            "hint": f"ask {user_name(service.store.owner_uid)}, its owner, to add you to [service] allow_users"}


def _answer(service: ops.Service, conn: socket.socket, peer: Peer) -> bool:
    """Read one request and answer it; False when the connection is over (closed, or broken by the peer)."""
    try:
        if not conn.recv(1, socket.MSG_PEEK):  # closed between requests: done
            return False
        request = recv_message(conn)
    except ServiceError as e:
        _send(conn, {"ok": False, "error": e.message,
                     "hint": "the request broke the protocol; the connection is closed"})
        return False
    except (TimeoutError, OSError):
        return False
    try:
        answer = service.handle(request, conn, peer)
    except PeerGone as e:  # the peer broke the connection mid-request: nothing to answer on
        ops.log_line(f"{peer.user} (uid {peer.uid}, pid {peer.pid}): {e}")
        return False
    except WheelstoreError as e:
        answer = {"ok": False, "error": printable(" ".join(e.message.split())), "hint": e.hint}
    except Exception as e:  # noqa: BLE001 - answered and logged; the service goes on
        ops.log_line("internal error: " + " | ".join(traceback.format_exc().strip().splitlines()[-3:]))
        answer = {"ok": False, "error": f"the service failed: {type(e).__name__}: {e}",
                  "hint": "see the service's log"}
    # after a refused upload or link, its bytes or descriptors may be unread: the connection is over
    return _send(conn, answer) and (request.get("op") not in ("upload", "link") or answer.get("ok") is True)


def _send(conn: socket.socket, answer: dict[str, Any]) -> bool:
    try:
        send_message(conn, answer)
        return True
    except (OSError, ServiceError):
        return False

