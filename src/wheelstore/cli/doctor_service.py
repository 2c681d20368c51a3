"""doctor's ``service`` check, for a store made with ``init --service``: whether its service answers this user, and
what to run when it does not.

It asks the service the way an install does (:class:`~wheelstore.service.client.ServiceClient`, a ``hello``), so
that doctor's verdict is the install's: no socket, nothing listening, a socket this user may not connect to, or a
service that refuses them (its allow list) each fail with the service's own words. When the service is down, the fix
is the systemd socket unit that listens on its socket, if this machine has one, else ``wheelstore serve`` as the
store's owner.
"""

from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path

from ..base.errors import ServiceDown, ServiceError
from ..base.interpreter import Interpreter
from ..service.client import SHORT_TIMEOUT, ServiceClient
from ..store.policy import user_name
from ..store.store import Store
from .doctor_report import Check

#: where an admin's and a package's socket units are (systemd's system unit path, in its order)
UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system", "/usr/lib/systemd/system",
             "/lib/systemd/system")


def check(store: Store, interpreter: Interpreter | None) -> Check | None:
    """The ``service`` check; None for a store that is not a service store."""
    settings = store.service
    if settings is None:
        return None
    path = settings.socket
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Check("service", "fail", f"the store service is not running: no socket at {path}", start(store, path))
    except PermissionError:
        return Check("service", "fail", f"you may not reach the store service's socket {path}: a directory above it "
                     "is closed to you", None)
    if not stat.S_ISSOCK(st.st_mode):
        return Check("service", "fail", f"{path}, the store service's socket, is not a socket; ask "
                     f"{user_name(store.owner_uid)}, the store's owner, to remove it and start the service", None)
    try:
        hello = ServiceClient(store.root, Path(path), SHORT_TIMEOUT).hello()
    except ServiceDown as e:
        return Check("service", "fail", e.message, start(store, path))
    except ServiceError as e:  # this user may not connect, or the service refused them
        return Check("service", "fail", e.message + (f"; {e.hint}" if e.hint else ""), None)
    return _answered(store, path, hello, interpreter)


def _answered(store: Store, path: str, hello: dict[str, object], interpreter: Interpreter | None) -> Check:
    if hello.get("id") != store.id:
        return Check("service", "fail", f"the service answering on {path} serves another store "
                     f"({hello.get('store')}, id {hello.get('id')}), not {store.root}", None)
    bytecode = hello.get("bytecode")
    tags = [t for t in bytecode if isinstance(t, str)] if isinstance(bytecode, list) else []
    compiles = f"it compiles bytecode for {', '.join(tags)}" if tags else \
        "it has no interpreter to compile bytecode with, so venvs get no .pyc files from the store"
    detail = (f"the store service answers on {path} (wheelstore {hello.get('wheelstore', '?')}, protocol "
              f"{hello.get('version')}) and serves you ({hello.get('user')}); {compiles}")
    tag = interpreter.cache_tag if interpreter is not None else None
    if tag and tag not in tags:
        return Check("service", "warn", f"{detail}; not for the venv's {tag}, whose imports compile their own "
                     f"(ask {user_name(store.owner_uid)}, the store's owner, to add a Python of that version to "
                     "[service] pythons)", None)
    return Check("service", "ok", detail)


def start(store: Store, path: str) -> str:
    """The command that starts the service: its systemd socket unit's, else ``serve`` as the store's owner."""
    unit = socket_unit(path)
    if unit is not None:
        return f"systemctl start {unit}"
    serve = f"wheelstore serve --store {shlex.quote(str(store.root))}"
    if os.geteuid() == store.owner_uid:
        return serve
    return f"sudo -u {user_name(store.owner_uid)} {serve}"


def socket_unit(path: str) -> str | None:
    """The name of a systemd socket unit of this machine that listens on ``path`` (``ListenStream=``), if any."""
    for directory in UNIT_DIRS:
        try:
            names = sorted(n for n in os.listdir(directory) if n.endswith(".socket"))
        except OSError:
            continue
        for name in names:
            try:
                text = Path(directory, name).read_text(errors="replace")
            except OSError:
                continue
            for line in text.splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "ListenStream" and value.strip() == path:
                    return name
    return None
