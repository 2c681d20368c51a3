"""Editable installs (``-e DIR``): the user's own project, installed by its build backend (PEP 660) through uv, as
``uv pip install -e`` does. Its files are the user's, writable, in the venv (a ``.pth`` file or an import hook, as the
backend gives); nothing of it is in the store. uv writes its RECORD, so ``uninstall`` and ``sync`` treat it as any
distribution installed by another tool.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from ..base.distinfo import installed, origin
from ..base.errors import BuildError
from ..base.names import canonical
from ..fetch.sources import Sources
from ..fetch.uv import run_uv, uv_command, uv_failure
from ..resolve.requirements import Pin
from ..resolve.uvproject import UvSync
from ..base.interpreter import Interpreter
from .uninstall import Stash, uninstall


class Done(NamedTuple):
    """What an editable install did, as uv says it: (name, version, "editable") installed, (name, version) removed and
    unchanged."""

    installed: list[tuple[str, str, str]]
    removed: list[tuple[str, str]]
    unchanged: list[tuple[str, str]]


def install_editables(interpreter: Interpreter, pins: Sequence[Pin], sources: Sources | None,
                      project: UvSync | None = None, linked: Sequence[str] = ()) -> Done:
    """Install each project of ``pins`` editable into the venv of ``interpreter`` (without its dependencies): by
    ``uv pip install -e``, or for a uv project's lock by ``uv sync`` of the project's own packages only (``linked``,
    the rest of the lock, left out).

    A version of it that wheelstore linked from the store is moved aside first, by wheelstore (uv would remove it by
    its RECORD, through links that lead into the store), and put back if uv fails: a failed build changes nothing,
    as with pip and uv.
    """
    report = Done([], [], [])
    if not pins:
        return report
    sources = sources or Sources()
    present = installed(interpreter)
    stash: Stash | None = None  # made only when something is moved aside
    for pin in pins:
        old = present.get(pin.name)
        if old is not None and origin(old) is not None:
            stash = stash or Stash(interpreter.prefix)
            uninstall(old, interpreter, stash)
            report.removed.append((old.display_name, old.version))
    projects = [str(p.project) for p in pins if p.project is not None]
    if project is None:
        cmd = [*uv_command(["pip", "install", "--no-deps"], interpreter, sources),
               *(arg for directory in projects for arg in ("-e", directory))]
        env, cwd = None, None
    else:
        cmd, env, cwd = project.command(linked, sources.offline), project.environ(interpreter.prefix), project.start
    try:  # what uv did is reported as wheelstore reports an install
        status, lines = run_uv(cmd, sources, relay=False, env=env, cwd=cwd)
    except BaseException:
        if stash is not None:
            stash.restore()
        raise
    if status != 0:
        if stash is not None:
            stash.restore()
        what = (f"installing {', '.join(projects)} editable failed" if project is None else
                f"uv sync of {', '.join(projects)} failed, before anything was linked")
        raise uv_failure(lines, what, sources, cls=BuildError)
    changed = False
    editable = {p.name: p.editable for p in pins}
    for line in lines:  # uv's own account: " + name==version (from file:///DIR)", " - ...", " ~ ..." (reinstalled)
        sign, _, what = line.strip().partition(" ")
        name, _, version = what.split(" ")[0].partition("==")
        if sign in ("+", "-", "~") and version:
            changed = True
            if sign == "-":
                report.removed.append((name, version))
            else:
                report.installed.append((name, version, "editable" if editable.get(canonical(name), True) else "uv"))
    if stash is not None:
        stash.discard()
    if not changed:
        report.unchanged.extend((p.name, "editable") for p in pins)
    return report
