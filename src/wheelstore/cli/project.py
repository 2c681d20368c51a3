"""``wheelstore sync`` given nothing: the project's lock, in the project's venv, as ``uv sync`` would take them."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..base.distinfo import origin, read_regular
from ..base.errors import InputError, VenvError
from ..base.interpreter import Interpreter
from ..resolve.pylock import is_pylock, read_pylock
from ..resolve.uvproject import Project, Selection, UvSync, export, find_project, project_environment
from ..venv.create import create, create_with_uv, finish_uv_venv, start_uv_venv, uv_would_replace
from ..venv.environment import Environment
from ..venv.locate import owned
from .options import sources_from
from .output import err

if TYPE_CHECKING:
    from packaging.utils import NormalizedName

#: the options that only select from a uv.lock, as they are spelled
_SELECTING = ("--project", "--extra", "--all-extras", "--group", "--only-group", "--no-dev", "--all-groups",
              "--no-default-groups", "--package", "--all-packages")


def others(env: Environment) -> set[NormalizedName]:
    """What another tool installed into the project's venv from an index (``uv add``, ``uv run`` taking groups this
    sync left out): linked from the store again when the lock still holds it, which is what syncing is for."""
    return {name for name, dist in env.distributions().items()
            if origin(dist) is None and read_regular(dist.dist_info / "direct_url.json") is None}


def selection(args: argparse.Namespace) -> Selection:
    return Selection(extras=args.extras, all_extras=args.all_extras, groups=args.groups,
                     only_groups=args.only_groups, no_dev=args.no_dev, all_groups=args.all_groups,
                     no_default_groups=args.no_default_groups, packages=args.packages, all_packages=args.all_packages)


def given_selection(args: argparse.Namespace) -> Selection | None:
    """The selection options given with explicit inputs: for pylock files only (PEP 751 selects extras and groups),
    with or without ``-e``; with anything else they would be silently ignored, so that is refused."""
    if args.verb != "sync":
        return None
    chosen = selection(args)
    if args.project or (chosen and (args.requirements or not args.items or not all(map(is_pylock, args.items)))):
        raise InputError("--project and the selection options (" + ", ".join(_SELECTING[1:]) + ") apply to a "
                         "project's lock or to pylock.toml files, not to the packages, files and -r given here",
                         hint="drop them, or drop the inputs to sync the project's lock")
    return chosen or None


@contextlib.contextmanager
def project_inputs(args: argparse.Namespace) -> Iterator[tuple[Path, Path, UvSync | None, Selection | None]]:
    """The venv to sync, the PEP 751 lock to sync it to, for a uv.lock how uv installs the project's own packages, and
    for a pylock.toml what to select from it, for the project around ``--project`` or the current directory; a
    uv.lock's export lives until the sync is done."""
    from tempfile import TemporaryDirectory

    start = Path(args.project or ".").absolute()
    if not start.is_dir():
        raise InputError(f"--project {args.project}: not a directory")
    project = find_project(start, named=args.project is not None)
    if project is None:
        raise InputError(f"nothing to sync: no PACKAGE, -r or -e given, and neither {start} nor any parent has a "
                         "uv.lock or a pylock.toml",
                         hint="give what the venv is to hold (wheelstore sync -r requirements.txt), or run it in a "
                              "uv project (uv lock makes its uv.lock)")
    chosen = selection(args)
    venv = _project_venv(args, project)
    with TemporaryDirectory(prefix="wheelstore-export-") as tmp:
        made: list[Interpreter] = []
        if project.is_uv:
            with _venv_meanwhile(venv, project, made):
                lock = export(project, start, chosen, sources_from(args), Path(tmp))
        else:
            lock = project.lock
            if chosen:  # checked now, so that a refusal is the only line
                pylock = read_pylock(project.lock)
                chosen.for_pylock(project.lock, pylock.extras or [], pylock.dependency_groups or [], [])
        if not made:
            _check_venv(args, project, venv)  # a refusal is the only line: the "using" line comes after
        if not args.quiet:
            err(f"using {project.lock} and the venv at {venv}")
        if not made and not (venv / "pyvenv.cfg").is_file():
            made.append(create_with_uv(venv, project.root) if project.is_uv else create(venv, must_own=True))
        if made and not args.quiet:
            err(f"created venv at {venv} (Python {'.'.join(map(str, made[0].version))})")
        if project.is_uv:
            yield venv, lock, UvSync(start, chosen), None
        else:
            yield venv, lock, None, chosen or None
    if chosen and not args.quiet:  # uv run would add the default groups back, from its own cache
        options = " ".join(chosen.uv_args())
        err(f"note: uv run and uv sync take the project's default selection unless given the same options: "
            f"'uv run {options} ...' keeps this venv as it is, as does 'uv run --no-sync ...'")


def _project_venv(args: argparse.Namespace, project: Project) -> Path:
    """The venv to sync: ``--venv``, else the project's (:func:`project_environment`). One found in the project, not
    named in full, must be the user's or root's, as any venv found is, even before it is one: a directory or symlink
    planted there by another member of a shared project's group would be theirs to swap or to point anywhere. What is
    there must be a venv or an empty directory, never a directory of data that ``uv venv`` would fill."""
    if args.venv:
        venv = Path(args.venv).absolute()
    else:
        venv = project_environment(project)
        if os.path.lexists(venv) and not os.path.isabs(os.environ.get("UV_PROJECT_ENVIRONMENT", "")):
            owned(venv, hint=f"name it with --venv {venv} if you trust it, or ask its owner to remove it, or set "
                             "UV_PROJECT_ENVIRONMENT to a venv of yours (uv run takes it too)")
    if os.path.lexists(venv) and not (venv / "pyvenv.cfg").is_file() and not _empty_directory(venv):
        raise VenvError(f"{venv} is not a venv (it has no pyvenv.cfg)",
                        hint="remove it, or sync another venv: --venv DIR, or UV_PROJECT_ENVIRONMENT=DIR as uv does")
    return venv


def _empty_directory(path: Path) -> bool:
    try:
        return path.is_dir() and next(path.iterdir(), None) is None
    except OSError:
        return False


@contextlib.contextmanager
def _venv_meanwhile(venv: Path, project: Project, made: list[Interpreter]) -> Iterator[None]:
    """A missing project venv made by ``uv venv`` while the body (the lock's export) runs, the two short uv runs of a
    warm sync side by side; its interpreter appended to ``made``. Removed again if the body fails: a refused lock
    still changes nothing. Only a path where nothing is, in a directory that exists, is made meanwhile."""
    if os.path.lexists(venv) or not venv.parent.is_dir():
        yield
        return
    making = start_uv_venv(venv, project.root)
    try:
        yield
    except BaseException:
        making.kill()
        making.wait()
        with contextlib.suppress(OSError):  # (rmtree refuses a symlink put there meanwhile: left as it is)
            shutil.rmtree(venv)
        raise
    made.append(finish_uv_venv(making, venv))


def _check_venv(args: argparse.Namespace, project: Project, venv: Path) -> None:
    """Refuse a project venv that ``uv run`` would replace (its Python is not the one uv picks for the project)."""
    if (venv / "pyvenv.cfg").is_file() and project.is_uv and not args.venv and (
            other := uv_would_replace(venv, project.root)) is not None:
        raise VenvError(f"uv picks {other} for the project at {project.root}, not {venv}'s Python, so 'uv run' "
                        f"would make {venv} again and its links to the store would be gone",
                        hint=f"remove {venv} and run wheelstore sync again: it makes the venv with uv's choice")
