"""``wheelstore serve``: the store's one writer, listening on a Unix socket.

It runs as the store's owner (root given a store of a dedicated account becomes that account first), so everything
it publishes is the owner's, read-only, in areas nobody else may write. Each connection is served by a thread of its
own, at most :data:`MAX_CONNECTIONS` at once (one more is told ``busy`` and closed), each receive bounded by
:data:`RECV_TIMEOUT`. The peer is who the kernel says (``SO_PEERCRED``), never who it says it is, and is served only
if the store's allow list names them or one of their groups. One connection's failure is answered and logged, and
never stops the service; SIGTERM and Ctrl-C stop it, removing its socket.

Under systemd's socket activation (``wheelstore.socket``, docs/systemd/) the listening socket is systemd's, passed as
fd 3 with ``LISTEN_FDS``/``LISTEN_PID`` as ``sd_listen_fds`` reads them: the service takes it only if it is a
listening Unix stream socket bound to the store's configured path, and leaves it in place when it stops.
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
import time
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
#: connections one uid may hold at once: one user (or a script of theirs) cannot take every slot from the others
MAX_PER_USER = MAX_CONNECTIONS // 2
#: seconds a receive may wait for the peer's next bytes
RECV_TIMEOUT = 30.0
#: seconds a request may take to arrive, once its first byte has: a peer trickling a byte at a time is cut off
REQUEST_SECONDS = 20.0
#: seconds a peer off the allow list is waited for, to tell it why it is refused
REFUSAL_SECONDS = 5.0


def serve(store: Store, socket_path: str | None = None) -> None:
    """Serve ``store`` until SIGTERM or Ctrl-C; a one-line :class:`ServiceError` if it cannot start."""
    settings = store.service
    if settings is None:
        raise ServiceError(f"{store.root} is not a service store",
                           hint=f"make one with: wheelstore init --service {store.root} (as the account to run it)")
    _become_owner(store)
    path = socket_path or settings.socket
    service = ops.Service(store, settings)
    slots = _Slots()
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        inherited = _inherited(path)
        with inherited or _listening(path, settings.socket_mode) as listener:
            ops.log_line(f"serving {store.root} on {path} as {user_name(os.geteuid())}"
                         + (" (the socket is systemd's)" if inherited else ""))
            while True:
                _accept(listener, service, slots)
    except KeyboardInterrupt:
        ops.log_line(f"stopped serving {store.root}")
    finally:
        signal.signal(signal.SIGTERM, previous)


def _accept(listener: socket.socket, service: ops.Service, slots: _Slots) -> None:
    """Take the next connection and start its thread; nothing a peer does here stops the service (a peer gone
    before it is looked at, or running out of descriptors, is logged and the next one taken)."""
    try:
        conn, _ = listener.accept()
    except OSError as e:
        ops.log_line(f"warning: cannot accept a connection: {e.strerror}")
        time.sleep(0.1)  # out of descriptors, say: let the connections being served end
        return
    try:
        uid = _peer_uid(conn)
    except OSError:
        conn.close()
        return
    busy = slots.acquire(uid)
    if busy is not None:
        _refuse_busy(conn, busy)
        return
    threading.Thread(target=_serve_one, args=(service, conn, slots, uid), daemon=True,
                     name="wheelstore-conn").start()


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
    # the account's own configuration (pip's, uv's index and certificates), not root's: what sudo -u would give
    for name in [n for n in os.environ if n.startswith("XDG_")] + ["PIP_CONFIG_FILE", "UV_CONFIG_FILE"]:
        os.environ.pop(name, None)
    os.environ.update(HOME=entry.pw_dir, USER=entry.pw_name, LOGNAME=entry.pw_name)


@contextlib.contextmanager
def _listening(path: str, mode: int) -> Iterator[socket.socket]:
    """A listening socket at ``path`` (a stale one of ours replaced, anything else refused), removed on the way out."""
    _check_directory(path)
    _clear_stale(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    umask = os.umask(0o777 & ~mode)  # the socket is made with its mode: no chmod by path after (it could be a link)
    try:
        listener.bind(path)
    except OSError as e:
        listener.close()
        raise ServiceError(f"cannot listen on {path}: {e.strerror}") from None
    finally:
        os.umask(umask)
    try:
        ident = os.stat(path, follow_symlinks=False)
        listener.listen(128)
        yield listener
    finally:
        listener.close()
        with contextlib.suppress(OSError):
            now = os.stat(path, follow_symlinks=False)
            if (now.st_dev, now.st_ino) == (ident.st_dev, ident.st_ino):
                os.unlink(path)


def _check_directory(path: str) -> None:
    """Refuse a socket's directory where another user could replace the socket with theirs (unless it is sticky,
    as /tmp is): clients would talk to them instead."""
    where = os.path.dirname(path) or "."
    try:
        st = os.stat(where)
    except OSError as e:
        raise ServiceError(f"cannot listen on {path}: {where}: {e.strerror}") from None
    others_write = st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX
    if st.st_uid not in (0, os.geteuid()) or others_write:
        raise ServiceError(f"cannot listen on {path}: {where} is {'owned' if not others_write else 'writable'} by "
                           f"{user_name(st.st_uid) if not others_write else 'others'}, who could put a socket of "
                           "theirs in its place", hint="give a socket in a directory of the store's owner or root "
                           "(the store itself, or /run), with --socket")


#: the first fd systemd passes (``SD_LISTEN_FDS_START``)
LISTEN_FDS_START = 3


def _inherited(path: str) -> contextlib.AbstractContextManager[socket.socket] | None:
    """systemd's listening socket for ``path`` (socket activation), or None when none was passed to this process."""
    fds, pid = os.environ.pop("LISTEN_FDS", None), os.environ.pop("LISTEN_PID", None)
    os.environ.pop("LISTEN_FDNAMES", None)  # as sd_listen_fds(1): not for our children
    if fds is None or pid != str(os.getpid()):
        return None
    unit = "check ListenStream= and Accept=no in wheelstore.socket"
    if fds != "1":
        raise ServiceError(f"systemd passed {fds} sockets (LISTEN_FDS); the service takes exactly one", hint=unit)
    try:
        listener = socket.socket(fileno=LISTEN_FDS_START)
    except OSError as e:
        raise ServiceError(f"systemd passed fd {LISTEN_FDS_START}, which is not a socket ({e.strerror})",
                           hint=unit) from None
    os.set_inheritable(listener.fileno(), False)
    bound = listener.getsockname() if listener.family == socket.AF_UNIX else None
    if listener.type != socket.SOCK_STREAM or bound is None:
        listener.detach()
        raise ServiceError("systemd passed a socket that is not a Unix stream socket", hint=unit)
    if bound != path:
        listener.detach()
        raise ServiceError(f"systemd passed a socket bound to {bound or 'no path'}, not to the store's socket {path}",
                           hint=f"make ListenStream={path} in wheelstore.socket, or give --socket")
    if not listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        listener.detach()
        raise ServiceError(f"systemd passed a socket for {path} that is not listening", hint=unit)
    _check_directory(path)
    return contextlib.closing(listener)  # systemd's: left in place when the service stops


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


class _Slots:
    """The connections being served: at most :data:`MAX_CONNECTIONS`, and :data:`MAX_PER_USER` of one uid."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[int, int] = {}

    def acquire(self, uid: int) -> str | None:
        """None if a slot is ``uid``'s now; else why not, for the ``busy`` answer."""
        with self._lock:
            if sum(self._held.values()) >= MAX_CONNECTIONS:
                return f"{MAX_CONNECTIONS} connections are being served"
            if self._held.get(uid, 0) >= MAX_PER_USER:
                return f"{MAX_PER_USER} connections of uid {uid}, the most one user may have, are being served"
            self._held[uid] = self._held.get(uid, 0) + 1
            return None

    def release(self, uid: int) -> None:
        with self._lock:
            self._held[uid] -= 1
            if not self._held[uid]:
                del self._held[uid]


def _peer_uid(conn: socket.socket) -> int:
    """The peer's uid, as the kernel says (what :class:`Peer` reads in full, in the connection's own thread)."""
    return Peer.credentials(conn)[1]


def _refuse_busy(conn: socket.socket, why: str) -> None:
    with contextlib.suppress(OSError):
        conn.settimeout(1)
        send_message(conn, {"ok": False, "busy": True, "error": f"busy: {why}",
                            "hint": "try again in a moment"})
    conn.close()


def _serve_one(service: ops.Service, conn: socket.socket, slots: _Slots, uid: int) -> None:
    """One connection: requests answered in turn until the peer closes; nothing in it stops the service."""
    try:
        conn.settimeout(RECV_TIMEOUT)
        peer = Peer(conn)
        if not peer.allowed(service.settings, service.store.owner_uid):
            with contextlib.suppress(ServiceError, OSError):  # its request first: then it is there to hear why
                conn.settimeout(REFUSAL_SECONDS)
                recv_message(conn, deadline=time.monotonic() + REFUSAL_SECONDS)
            send_message(conn, _refusal(service, peer))
            ops.log_line(f"refused {peer.user} (uid {peer.uid}, pid {peer.pid}): not on the allow list")
            return
        while _answer(service, conn, peer):
            pass
    except Exception:  # noqa: BLE001 - a bug in one connection is logged, the others go on
        ops.log_line("internal error: " + " | ".join(traceback.format_exc().strip().splitlines()[-3:]))
    finally:
        conn.close()
        slots.release(uid)


def _refusal(service: ops.Service, peer: Peer) -> dict[str, Any]:
    return {"ok": False, "error": f"{peer.user} may not use the store service of {service.store.root}",
            "hint": f"ask {user_name(service.store.owner_uid)}, its owner, to add you to [service] allow_users"}


def _answer(service: ops.Service, conn: socket.socket, peer: Peer) -> bool:
    """Read one request and answer it; False when the connection is over (closed, or broken by the peer)."""
    try:
        if not conn.recv(1, socket.MSG_PEEK):  # closed between requests: done
            return False
        request = recv_message(conn, deadline=time.monotonic() + REQUEST_SECONDS)
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

