"""Who is at the other end of a connection to the service: as the kernel says (``SO_PEERCRED``), never as the peer
says, and whether the store's allow list lets them in."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import socket
import struct

from ..store.policy import user_name
from ..store.serviceconf import ServiceSettings

_PEERCRED = struct.Struct("3i")


class Peer:
    """Who is at the other end, as the kernel says (``SO_PEERCRED``)."""

    def __init__(self, conn: socket.socket) -> None:
        self.pid, self.uid, self.gid = self.credentials(conn)
        self.user = user_name(self.uid)

    @staticmethod
    def credentials(conn: socket.socket) -> tuple[int, int, int]:
        """The pid, uid and gid of ``conn``'s other end, as the kernel recorded them when it connected."""
        pid, uid, gid = _PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        return pid, uid, gid

    def groups(self) -> set[str]:
        """The names of the peer's primary and supplementary groups (the user database's, and its primary now)."""
        gids = {self.gid}
        try:
            entry = pwd.getpwuid(self.uid)
            gids |= {entry.pw_gid, *os.getgrouplist(entry.pw_name, entry.pw_gid)}
        except KeyError:
            pass
        names = set()
        for gid in gids:
            with contextlib.suppress(KeyError):
                names.add(grp.getgrgid(gid).gr_name)
        return names

    def allowed(self, settings: ServiceSettings, owner: int) -> bool:
        if settings.open_to_all or self.uid in (0, owner):
            return True
        return self.user in settings.allow_users or bool(self.groups() & set(settings.allow_groups))
