"""Which venv a command means when none is named: found as ``uv pip`` finds it, so the two agree.

``$VIRTUAL_ENV`` (an activated venv) first; else the venv the current directory is in, or a ``.venv`` in the current
directory or the nearest parent that has one. One thing more than uv: a venv found by walking up is used only if it
belongs to the user (or root). Any user can create ``/tmp/.venv``, and using it would run their ``bin/python`` as
whoever typed ``wheelstore install`` somewhere under ``/tmp`` (git refuses such repositories for the same reason).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ..base.errors import VenvError

#: where the lookup looks, for the help of every verb that takes --venv
LOOKUP = "default: $VIRTUAL_ENV, else .venv in this directory or the nearest parent, as uv finds it"
#: the fix, in every error of the lookup
_FIX = "create one here with 'wheelstore venv' (it makes .venv), or name one with --venv PATH"


def find_venv(cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> tuple[Path, str]:
    """The venv to use when ``--venv`` is not given, and what chose it (``from VIRTUAL_ENV``,
    ``found from DIR``)."""
    active = (os.environ if environ is None else environ).get("VIRTUAL_ENV")
    start = (cwd or Path.cwd()).absolute()
    if active:  # set by the user's own activation: trusted as --venv is, but it must be a venv
        path = start / active
        if not (path / "pyvenv.cfg").is_file():
            raise VenvError(f"VIRTUAL_ENV={path} is not a venv (it has no pyvenv.cfg)",
                            hint="deactivate it, or name the venv with --venv PATH")
        return path, "from VIRTUAL_ENV"
    for directory in (start, *start.parents):
        if (directory / "pyvenv.cfg").is_file():  # inside a venv, as uv: the venv itself
            return owned(directory), f"found from {start}"
        dot = directory / ".venv"
        if dot.is_dir():
            if not (dot / "pyvenv.cfg").is_file():
                raise VenvError(f"{dot} is not a venv (it has no pyvenv.cfg)",
                                hint="remove it and run 'wheelstore venv', or name the venv with --venv PATH")
            return owned(dot), f"found from {start}"
    raise VenvError(f"no venv found: VIRTUAL_ENV is not set, and neither {start} nor any parent has a .venv",
                    hint=_FIX)


def owned(venv: Path, hint: str | None = None) -> Path:
    """``venv`` if it, the symlink that names it if one does, and its ``pyvenv.cfg`` belong to this user or root:
    nobody else's interpreter is run unasked, and nobody's link sends an install into a venv that is not theirs (a
    symlink to root's venv would have root's own install change it). ``hint``: the error's fix, if not the usual."""
    me = os.geteuid()
    for path, follow in ((venv, False), (venv, True), (venv / "pyvenv.cfg", True)):
        try:
            owner = os.stat(path, follow_symlinks=follow).st_uid
        except (FileNotFoundError, NotADirectoryError):  # not a venv (yet): the caller says what may be there
            continue
        if owner not in (me, 0):
            raise VenvError(f"found {venv}, but it belongs to {_user(owner)}, not you: not using it unasked",
                            hint=hint or f"name it with --venv {venv} if you trust it, or {_FIX}")
    return venv


def _user(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
