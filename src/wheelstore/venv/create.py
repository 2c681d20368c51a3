"""Making new venvs, as ``uv venv`` does: no pip inside, fast."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..base.errors import VenvError
from ..base.interpreter import Interpreter, find_python
from .locate import owned

if TYPE_CHECKING:
    import subprocess


def create(venv: Path, python: str | None = None, *, must_own: bool = False) -> Interpreter:
    """Make a venv without pip (like ``uv venv``): fast, and pip can be added with ``python -m ensurepip``. With
    ``must_own`` (a project's venv, as :func:`create_with_uv` makes it), it must be this user's (:func:`_made_mine`)."""
    import shutil
    import subprocess

    base = python or shutil.which("python3") or sys.executable
    if (venv / "pyvenv.cfg").exists():
        raise VenvError(f"{venv} already is a venv", hint=f"install into it: wheelstore install --venv {venv} ...")
    try:
        subprocess.run(
            [base, "-m", "venv", "--without-pip", os.fspath(venv)], capture_output=True, text=True, check=True
        )
    except FileNotFoundError:
        raise VenvError(f"{base}: no such interpreter") from None
    except subprocess.CalledProcessError as e:
        last = (e.stderr or e.stdout).strip().splitlines()[-1:] or ["failed"]
        raise VenvError(f"cannot create {venv}: {last[0]}") from None
    if must_own:
        _made_mine(venv)
    return Interpreter.inspect(find_python(venv))


def create_with_uv(venv: Path, project: Path) -> Interpreter:
    """Make a uv project's venv with ``uv venv`` run in the project: the Python uv picks there (``requires-python``,
    ``.python-version``, the user's uv settings), so that ``uv run`` keeps the venv instead of making another."""
    return finish_uv_venv(start_uv_venv(venv, project), venv)


def start_uv_venv(venv: Path, project: Path) -> subprocess.Popen[str]:
    """:func:`create_with_uv`'s ``uv venv``, started: the caller does something else meanwhile, then
    :func:`finish_uv_venv` (or kills it)."""
    import subprocess

    from ..fetch.uv import user_uv_environ, uv_binary

    if (venv / "pyvenv.cfg").exists():
        raise VenvError(f"{venv} already is a venv", hint=f"install into it: wheelstore install --venv {venv} ...")
    cmd = [uv_binary(), "venv", "--quiet", "--color", "never", os.fspath(venv)]
    return subprocess.Popen(cmd, cwd=project, env=user_uv_environ(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish_uv_venv(making: subprocess.Popen[str], venv: Path) -> Interpreter:
    """Wait for :func:`start_uv_venv`'s ``uv venv``; the venv's interpreter, or its one-line error."""
    _, stderr = making.communicate()
    if making.returncode != 0:
        last = [line for line in stderr.splitlines() if line.strip()][:1] or ["failed"]
        raise VenvError(f"uv venv could not create {venv}: {last[0].removeprefix('error:').strip()}")
    _made_mine(venv)
    return Interpreter.inspect(find_python(venv))


def _made_mine(venv: Path) -> None:
    """A venv just made where nothing was must be this user's before its interpreter runs: a directory another member
    of a shared project's group put there meanwhile is filled all the same (uv venv and python -m venv take an empty
    one), and its owner may swap its ``bin/`` at any time."""
    owned(venv, hint="it was put there while the venv was being made: ask its owner to remove it, then run the "
                     "command again")


def uv_would_replace(venv: Path, project: Path) -> str | None:
    """The interpreter ``uv run`` in ``project`` would use instead of ``venv``'s (it then makes the venv again), or
    None when uv keeps ``venv`` or finds no interpreter at all (uv itself then says why).

    ``uv python find`` is asked with ``venv`` as the active venv, which it tries first: it knows only ``.venv`` as the
    project's (not ``$UV_PROJECT_ENVIRONMENT``), and would otherwise answer with a venv the user activated elsewhere.
    """
    import subprocess

    from ..fetch.uv import user_uv_environ, uv_binary

    env = user_uv_environ() | {"VIRTUAL_ENV": os.fspath(venv)}
    done = subprocess.run([uv_binary(), "python", "find", "--color", "never"], cwd=project, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)
    found = done.stdout.strip()
    if done.returncode != 0 or not found:
        return None
    try:
        return None if Path(found).parent.parent.samefile(venv) else found
    except OSError:
        return found

