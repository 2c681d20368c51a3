"""Why writing into a venv failed, said of the venv: an install links store files into it, so the ``OSError`` of a
refused link names the store file it was linking (``Permission denied: <store>/trees/...``), not the venv directory
that refused, and a full disk names nothing at all."""

from __future__ import annotations

import os
from pathlib import Path

from ..base.errors import VenvError, WheelstoreError
from ..base.mounts import no_space
from ..store.policy import current_user, user_name


def explained(e: OSError, venv: Path, site: str, store_root: Path | None) -> WheelstoreError | None:
    """``e``, met while changing ``venv`` (``site``: its site-packages), as a one-line error naming the directory
    that refused and why, with the fix; None when it is neither a refusal of the venv nor a full filesystem."""
    names = [os.fspath(n) for n in (e.filename, e.filename2) if n is not None]
    store = os.fspath(store_root) + "/" if store_root is not None else None
    in_store = store is not None and bool(names) and all(n.startswith(store) for n in names)
    if in_store and store_root is not None:
        full = no_space(e, store_root, "the store", f"writing into it for {venv}",
                        fix=f"free space there, or remove the trees no venv uses: wheelstore --store {store_root} gc")
    else:
        full = no_space(e, venv, "the venv", f"installing into {venv}",
                        fix="free space on that filesystem, or create the venv on one with room")
    if full is not None:
        return full
    if not isinstance(e, PermissionError):
        return None
    for directory in (site, os.path.join(venv, "bin"), os.fspath(venv)):
        refusal = _refusal(Path(directory), venv)
        if refusal is not None:
            return refusal
    return None


def _refusal(directory: Path, venv: Path) -> VenvError | None:
    """Why this user cannot write ``directory`` of ``venv``, or None if they can."""
    if not directory.is_dir() or os.access(directory, os.W_OK | os.X_OK):
        return None
    try:
        owner = user_name(directory.stat().st_uid)
        readonly = bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return None
    if readonly:
        return VenvError(f"cannot write {directory}: the venv {venv} is on a read-only filesystem",
                         hint="install into a venv on a writable filesystem")
    me = current_user()
    if owner != me:
        return VenvError(f"cannot write {directory}: the venv {venv} belongs to {owner}, and you ({me}) may not "
                         "change it", hint=f"create a venv of your own (wheelstore venv DIR), or ask {owner} to run "
                         "this command")
    return VenvError(f"cannot write {directory} of the venv {venv}: its permissions forbid it (mode "
                     f"{directory.stat().st_mode & 0o7777:o})", hint=f"chmod u+w {directory}")
